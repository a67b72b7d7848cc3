"""docker-compose.yml, checked without a Docker engine: every command of the ClearPath
image parses as a ``clearpath`` subcommand, every mounted file exists, the bridges
name the core services, the cores the redis service, and nginx the bridge services."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from clients.cli.app import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return found


def built(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The commands of the services built from this repository's Dockerfile."""
    return {name: s["command"] for name, s in services.items() if s.get("build") == "."}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def by_subcommand(services: dict[str, dict[str, Any]], sub: str) -> dict[str, list[str]]:
    return {n: c for n, c in built(services).items() if c[0] == sub}


def mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Bind mounts of ``service``: file in the repository → path in the container."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            found[(ROOT / source).resolve()] = target
    return found


def test_the_image_runs_clearpath() -> None:
    entry = re.search(r"^ENTRYPOINT (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert entry is not None
    assert yaml.safe_load(entry.group(1)) == ["clearpath"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clearpath"] == "clients.cli.app:main"


def test_every_command_parses_as_a_clearpath_subcommand(
    services: dict[str, dict[str, Any]],
) -> None:
    commands = built(services)
    assert {c[0] for c in commands.values()} == {"serve", "bridge", "simulate"}
    parser = build_parser()
    for name, command in commands.items():
        assert all(isinstance(part, str) for part in command), name
        try:
            args = parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: `clearpath {' '.join(command)}` does not parse")
        assert callable(args.handler), name


def test_the_topology_is_two_cores_on_redis_two_bridges_and_a_simulator(
    services: dict[str, dict[str, Any]],
) -> None:
    cores = by_subcommand(services, "serve")
    assert len(cores) == 2
    redis = services["redis"]["command"]
    assert redis[0] == "redis-server"
    assert flag(redis, "--appendonly") == "yes"
    for name, command in cores.items():
        assert "--no-bridge" in command, name
        broker = urlsplit(flag(command, "--broker"))
        assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), name
    assert len(by_subcommand(services, "bridge")) == 2
    assert len(by_subcommand(services, "simulate")) == 1


def test_the_bridges_and_the_simulator_name_core_services(
    services: dict[str, dict[str, Any]],
) -> None:
    cores = by_subcommand(services, "serve")
    named = set()
    clients = {**by_subcommand(services, "bridge"), **by_subcommand(services, "simulate")}
    for name, command in clients.items():
        for address in flag(command, "--core").split(","):
            host, port = address.rsplit(":", 1)
            assert host in cores, f"{name}: --core {address} is not a core service"
            assert port == flag(cores[host], "--grpc-port"), name
            named.add(host)
    assert named == set(cores), "every core serves a bridge or the simulator"


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    declared = set((yaml.safe_load(COMPOSE.read_text()).get("volumes") or {}).keys())
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_nginx_spreads_over_the_bridge_services(services: dict[str, dict[str, Any]]) -> None:
    bridges = by_subcommand(services, "bridge")
    files = mounts(services["nginx"])
    main = ROOT / "deploy" / "nginx" / "nginx.conf"
    shared = ROOT / "deploy" / "nginx" / "clearpath.conf"
    assert files[main] == "/etc/nginx/nginx.conf"
    text = main.read_text()
    assert f"include {files[shared]};" in text, "nginx.conf includes the mounted clearpath.conf"
    upstream = re.search(r"upstream clearpath_bridges \{(.*?)\}", text, re.DOTALL)
    assert upstream is not None
    servers = dict(re.findall(r"^\s*server ([\w.-]+):(\d+)", upstream.group(1), re.MULTILINE))
    assert servers == {name: flag(c, "--http-port") for name, c in bridges.items()}
    listen = re.search(r"^\s*listen (\d+);", text, re.MULTILINE)
    assert listen is not None
    assert f"8000:{listen.group(1)}" in services["nginx"]["ports"]


def test_the_compose_nginx_config_is_valid(tmp_path: Path) -> None:
    """deploy/nginx/nginx.conf through ``nginx -t``, its service names read as loopback."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).is_file(), "nginx is missing: make system installs it"
    text = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    text = re.sub(r"server bridge\d+:", "server 127.0.0.1:", text)
    text = text.replace("/etc/nginx/clearpath.conf", str(ROOT / "deploy/nginx/clearpath.conf"))
    text = re.sub(r"^pid .*$", f"pid {tmp_path}/nginx.pid;", text, flags=re.MULTILINE)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_every_setting_in_the_environment_is_a_real_one(
    services: dict[str, dict[str, Any]],
) -> None:
    from bridge.config import BridgeSettings
    from clients.cli._common import SECRET_ENV
    from core.config import CoreSettings

    known = {
        "CLEARPATH_CORE_": set(CoreSettings.model_fields),
        "CLEARPATH_BRIDGE_": set(BridgeSettings.model_fields),
    }
    seen = 0
    for name in built(services):
        for key in services[name].get("environment", {}):
            seen += 1
            if key == SECRET_ENV:
                continue
            prefix = next((p for p in known if key.startswith(p)), None)
            assert prefix is not None, f"{name}: {key} is not a ClearPath setting"
            assert key[len(prefix) :].lower() in known[prefix], f"{name}: no setting {key}"
    assert seen >= 7  # auth on every core, bridge and the simulator


def test_authentication_is_on_for_every_service_listening_on_all_interfaces(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, command in built(services).items():
        environment = services[name].get("environment", {})
        if "0.0.0.0" in command:
            assert any(k.endswith("_AUTH_SECRET") for k in environment), name
            assert "--insecure" not in command, name
