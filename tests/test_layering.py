"""The layering you can see: what the bridge and the clients may import of the core,
and that the hand-written gRPC registration covers every method of the service."""

from __future__ import annotations

import ast
from pathlib import Path

from clearpath.realtime.v1 import service_pb2 as spb
from core.config import CoreSettings
from core.hub import Hub
from core.service import RealtimeService, method_handlers

ROOT = Path(__file__).resolve().parent.parent

#: The shared kernel: pure modules both the server and its clients use.
KERNEL = {
    "core.auth",
    "core.backoff",
    "core.catalog",
    "core.codec",
    "core.credentials",
    "core.delivery",
    "core.errors",
    "core.exposure",
    "core.hub",
    "core.limits",
    "core.logs",
    "core.metrics",
    "core.positions",
    "core.rate",
    "core.targets",
    "core.topics",
    "core.validation",
    "core.viewport",
    "core.wire",
}
#: The one composition root allowed to start a core: ``clearpath serve``.
COMPOSITION_ROOT = Path("clients/cli/serve.py")


def core_imports(path: Path) -> set[str]:
    """The ``core.x`` modules a Python file imports, at any depth in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [f"core.{a.name}" for a in node.names] if node.module == "core" else [node.module]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "core" and len(parts) > 1:
                found.add(".".join(parts[:2]))
    return found


def test_the_bridge_and_the_clients_import_only_the_shared_kernel() -> None:
    files = [
        p
        for folder in ("bridge", "clients")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "web" not in p.relative_to(ROOT).parts
    ]
    assert len(files) > 20
    offenders = {}
    for path in files:
        rel = path.relative_to(ROOT)
        if rel == COMPOSITION_ROOT:
            continue
        if bad := core_imports(path) - KERNEL:
            offenders[str(rel)] = sorted(bad)
    assert offenders == {}


def test_the_walker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import core.broker.memory\ndef f():\n    from core import server\n")
    assert core_imports(bad) == {"core.broker", "core.server"}


def test_the_registration_covers_every_method_of_the_service() -> None:
    declared = set(spb.DESCRIPTOR.services_by_name["RealtimeService"].methods_by_name)
    service = RealtimeService(CoreSettings(**{}), broker=None, hub=Hub())  # type: ignore[arg-type]
    assert set(method_handlers(service)) == declared
    assert declared >= {"Publish", "Subscribe", "History"}
