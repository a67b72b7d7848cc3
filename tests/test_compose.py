"""docker-compose.yml, checked without a Docker engine: every command of the ClearPath
image parses as a ``clearpath`` subcommand, every mounted file exists, the bridges
name the core services, the cores the redis service, and nginx the bridge services.
Prometheus scrapes every core's metrics port and every bridge's port (with a token),
Grafana is provisioned with that Prometheus and the dashboard, and every metric the
dashboard queries is one of :data:`EXPORTED`, with labels it has."""

from __future__ import annotations

import json
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
from clients.cli.token import parse_ttl

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
#: Mounted files the operator makes (never in the repository): git-ignored, and the
#: compose file's header shows the command that makes each.
OPERATOR_MADE = {
    ROOT / "deploy" / "prometheus" / "token": (
        "clearpath token --subject prometheus --operator --ttl 365d > deploy/prometheus/token"
    ),
}

#: The metrics ClearPath exports (README, Operations) and their labels, beside
#: ``role`` and ``node`` on every series; histograms also have ``le``.
EXPORTED: dict[str, frozenset[str]] = {
    "clearpath_events_published_total": frozenset({"topic", "outcome"}),
    "clearpath_events_delivered_total": frozenset({"path", "topic"}),
    "clearpath_events_dropped_total": frozenset({"path", "reason"}),
    "clearpath_events_filtered_total": frozenset({"path", "topic"}),
    "clearpath_delivery_latency_seconds": frozenset({"path", "topic"}),
    "clearpath_connections": frozenset({"endpoint"}),
    "clearpath_subscriptions": frozenset({"path", "topic"}),
    "clearpath_queue_depth_max": frozenset({"path"}),
    "clearpath_subscriber_lag_events": frozenset({"path"}),
    "clearpath_slow_consumer_closes_total": frozenset({"path"}),
    "clearpath_rate_limited_total": frozenset({"path", "kind"}),
    "clearpath_auth_failures_total": frozenset({"path"}),
    "clearpath_upstream_up": frozenset(),
    "clearpath_upstream_reconnects_total": frozenset(),
    "clearpath_broker_up": frozenset(),
    "clearpath_broker_reconnects_total": frozenset(),
    "clearpath_resumes_total": frozenset({"outcome"}),
    "clearpath_catch_ups_total": frozenset(),
}
HISTOGRAMS = {"clearpath_delivery_latency_seconds", "clearpath_subscriber_lag_events"}
EVERY_SERIES = frozenset({"role", "node"})


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


def volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``service``'s volumes as (source, target), short and long syntax alike."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            found.append((source, target))
    return found


def mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Bind mounts of ``service``: file in the repository → path in the container."""
    return {
        (ROOT / source).resolve(): target
        for source, target in volumes(service)
        if source.startswith((".", "/"))
    }


def mounted(service: dict[str, Any], file: Path) -> str:
    """Where ``service`` mounts ``file`` of the repository."""
    found = mounts(service)
    assert file.resolve() in found, f"{file.relative_to(ROOT)} is not mounted"
    return found[file.resolve()]


def address(target: str) -> tuple[str, str]:
    host, port = target.rsplit(":", 1)
    return host, port


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
        for source, _ in volumes(service):
            if (ROOT / source).resolve() in OPERATOR_MADE:
                continue
            if source.startswith((".", "/")):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_the_files_the_operator_makes_are_git_ignored_and_documented(
    services: dict[str, dict[str, Any]],
) -> None:
    header = "".join(line for line in COMPOSE.read_text().splitlines(True) if line[:1] == "#")
    bound = {
        (ROOT / v["source"]).resolve(): v
        for s in services.values()
        for v in s.get("volumes", [])
        if isinstance(v, dict)
    }
    parser = build_parser()
    for file, command in OPERATOR_MADE.items():
        ignored = (file.parent / ".gitignore").read_text().splitlines()
        assert file.name in ignored, f"{file.relative_to(ROOT)} is not git-ignored"
        assert command in header, f"the header does not say how to make {file.name}"
        # The long syntax: a missing file fails `up` instead of becoming a folder.
        assert bound[file]["bind"] == {"create_host_path": False}, file
        assert bound[file]["read_only"] is True, file
        argv = command.split(" > ")[0].split()
        assert argv[0] == "clearpath"
        args = parser.parse_args(argv[1:])
        assert callable(args.handler), command
        if argv[1] == "token":
            assert args.operator, "the bridges' /metrics wants an operator token"
            assert parse_ttl(args.ttl) == 365 * 86400


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


# --- monitoring: Prometheus and Grafana ------------------------------------------------


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text())
    return config


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    found: dict[str, Any] = json.loads((GRAFANA / "clearpath.json").read_text())
    return found


def test_prometheus_runs_the_mounted_config(services: dict[str, dict[str, Any]]) -> None:
    service = services["prometheus"]
    assert "build" not in service
    assert service["image"].startswith("prom/prometheus:")
    assert f"--config.file={mounted(service, PROMETHEUS)}" in service["command"]


def test_prometheus_scrapes_every_core_metrics_port_and_every_bridge_port(
    services: dict[str, dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    cores = by_subcommand(services, "serve")
    bridges = by_subcommand(services, "bridge")
    token = mounted(services["prometheus"], next(iter(OPERATOR_MADE)))
    scraped: dict[str, str] = {}
    for job in prometheus["scrape_configs"]:
        targets = [t for c in job["static_configs"] for t in c["targets"]]
        hosts = {address(t)[0] for t in targets}
        assert hosts <= set(cores) or hosts <= set(bridges), f"{job['job_name']} mixes roles"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for target in targets:
            host, port = address(target)
            assert host not in scraped, f"{host} is scraped twice"
            scraped[host] = job["job_name"]
            if host in cores:
                assert port == flag(cores[host], "--metrics-port"), target
            else:
                assert port == flag(bridges[host], "--http-port"), target
        if hosts <= set(bridges):
            # With auth on, a bridge's /metrics wants an operator token.
            assert job["authorization"] == {"type": "Bearer", "credentials_file": token}
        else:
            assert "authorization" not in job, "the cores' metrics port needs no token"
    assert set(scraped) == set(cores) | set(bridges), "every core and bridge is scraped"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    datasource = GRAFANA / "datasource.yml"
    provider = GRAFANA / "dashboards.yml"
    assert mounted(grafana, datasource).startswith("/etc/grafana/provisioning/datasources/")
    assert mounted(grafana, provider).startswith("/etc/grafana/provisioning/dashboards/")
    [source] = yaml.safe_load(datasource.read_text())["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus"
    assert any(p.endswith(f":{url.port}") for p in services["prometheus"]["ports"])
    [folder] = yaml.safe_load(provider.read_text())["providers"]
    json_target = Path(mounted(grafana, GRAFANA / "clearpath.json"))
    assert Path(folder["options"]["path"]) == json_target.parent
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == str(json_target)
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


def test_prometheus_and_grafana_listen_on_localhost_only(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    found = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def metric_names(expr: str) -> set[str]:
    """The ClearPath metrics ``expr`` reads (a histogram's series by its family's name)."""
    names = set()
    for name in re.findall(r"\bclearpath_[a-z][a-z0-9_]*", expr):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(family if family in HISTOGRAMS else name)
    return names


def test_every_metric_the_dashboard_queries_is_exported_and_every_one_is_shown(
    dashboard: dict[str, Any],
) -> None:
    used: set[str] = set()
    for expr in queries(dashboard):
        names = metric_names(expr)
        assert names <= set(EXPORTED), f"not exported: {names - set(EXPORTED)} in {expr}"
        used |= names
    assert used == set(EXPORTED), f"no panel shows {set(EXPORTED) - used}"


def test_the_dashboard_groups_and_selects_by_labels_the_metrics_have(
    dashboard: dict[str, Any],
) -> None:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            names = metric_names(expr)
            labels = set(EVERY_SERIES).union(*(EXPORTED.get(n, frozenset()) for n in names))
            if names & HISTOGRAMS:
                labels.add("le")
            grouped = {
                label.strip()
                for group in re.findall(r"\bby \(([^)]*)\)", expr)
                for label in group.split(",")
            }
            selected = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr))
            assert grouped | selected <= labels, f"{panel['title']}: {expr}"
            legend = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            assert legend <= grouped, f"{panel['title']}: legend {legend} not grouped by"
            if "histogram_quantile" in expr:
                assert "le" in grouped, f"{panel['title']}: a quantile needs `by (le)`"


def test_every_panel_has_an_alert_hint(dashboard: dict[str, Any]) -> None:
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for panel in dashboard["panels"]:
        assert "Alert hint:" in panel.get("description", ""), panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
