"""Generate the Python code for ``protos/`` into ``clearpath/`` (never edit it by hand).

Usage: ``python scripts/gen_protos.py`` regenerates; ``--check`` regenerates into a
temporary folder and exits 1 when the committed code differs (stale).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("clearpath/realtime/v1")
HEADER = "# Generated from protos/ by scripts/gen_protos.py. Do not edit.\n"
# The descriptors with their comments (source info), which the generated _pb2
# modules leave out; the CLI reads its help text from it.
SOURCE_INFO = PACKAGE / "source_info.binpb"


def generate(out: Path) -> None:
    """Write the generated modules, stubs and package markers under ``out``."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    bindir = Path(sys.executable).parent
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / SOURCE_INFO}",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for part in (Path("clearpath"), Path("clearpath/realtime"), PACKAGE):
        (out / part / "__init__.py").write_text(HEADER)
    (out / "clearpath" / "py.typed").write_text("")


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths of files that differ between two trees, or exist in one only."""
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    names |= {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    names = {n for n in names if "__pycache__" not in n.parts}
    return sorted(
        str(n)
        for n in names
        if not ((left / n).exists() and (right / n).exists() and filecmp.cmp(left / n, right / n))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = differences(Path(tmp) / "clearpath", ROOT / "clearpath")
        if check:
            if stale:
                print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
                return 1
            print("generated code is up to date")
            return 0
        shutil.rmtree(ROOT / "clearpath", ignore_errors=True)
        shutil.copytree(Path(tmp) / "clearpath", ROOT / "clearpath")
    print("generated", PACKAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
