"""``clearpath cluster`` as a real process on free ports: redis-server, two cores on the
Redis broker, two bridges, nginx in front and the simulator. A browser's socket through
the front gets simulated events; when its bridge is killed it reconnects through the
front and resumes with ``?since=``, positions continuous; SIGTERM stops every process.

nginx and redis-server are required, not optional (``make system`` installs them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.cli.app import build_parser
from clients.cli.cluster import (
    NGINX_SHARED,
    Options,
    plan,
    prepare,
    render_nginx,
    render_prometheus,
)
from clients.cli.cluster import options as resolved_options
from clients.cli.cluster import run as run_cluster

START = 60.0
TIMEOUT = 15.0
MAX_LINES = 200_000


class Cluster:
    """The supervisor process, the lines it printed, what it said it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.front = ""
        self.pids: dict[str, int] = {}
        self.serves: dict[str, str] = {}
        self._new_line = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            if len(self.lines) < MAX_LINES:
                self.lines.append(line.decode(errors="replace"))
            self._new_line.set()
        self._new_line.set()

    async def line(self, pattern: str, within: float = TIMEOUT, start: int = 0) -> re.Match[str]:
        """The first line from ``start`` on that matches ``pattern``."""
        regex = re.compile(pattern)

        async def wait() -> re.Match[str]:
            seen = start
            while True:
                for text in self.lines[seen:]:
                    if m := regex.search(text):
                        return m
                seen = len(self.lines)
                if self.reader.done():
                    raise AssertionError(f"the cluster ended before {pattern!r}:\n{self.log()}")
                self._new_line.clear()
                await self._new_line.wait()

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {within:g}s:\n{self.log()}") from None

    def log(self) -> str:
        return "".join(self.lines[-80:])

    def session(self) -> list[int]:
        """Every process still alive in the supervisor's session (its descendants)."""
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # After the comm field: state, ppid, pgrp, session.
                if int(fields[3]) == self.process.pid and fields[0] != "Z":
                    alive.append(int(entry.name))
        return alive


async def start_cluster(folder: Path, *extra: str) -> asyncio.subprocess.Process:
    """``clearpath cluster`` on free ports, in a session of its own."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli.app", "cluster", "--dir", str(folder),
        "--front-port", "0", "--bridge-ports", "0,0", "--core-ports", "0,0",
        "--redis-port", "0", "--rate", "40", "--seed", "7", *extra,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


@asynccontextmanager
async def running_cluster(folder: Path, *extra: str) -> AsyncIterator[Cluster]:
    """The cluster, listening, until the block ends; nothing of it outlives the block."""
    cluster = Cluster(await start_cluster(folder, *extra))
    process = cluster.process
    try:
        cluster.front = (await cluster.line(r"cluster listening on (\S+)", START)).group(1)
        for text in cluster.lines:
            if m := re.search(r"cluster: (\S+) pid (\d+) on (\S+)", text):
                cluster.pids[m.group(1)] = int(m.group(2))
                cluster.serves[m.group(1)] = m.group(3)
        yield cluster
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for pid in cluster.session():  # nothing of it may outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(cluster.reader, TIMEOUT)


async def frames(ws: ClientConnection, count: int, *, events_only: bool = True) -> list[Any]:
    """The next ``count`` frames (event frames only, unless told otherwise)."""

    async def read() -> list[Any]:
        found: list[Any] = []
        while len(found) < count:
            frame = orjson.loads(await ws.recv())
            if "position" in frame or not events_only:
                found.append(frame)
        return found

    return await asyncio.wait_for(read(), TIMEOUT)


def offsets(events: list[Any]) -> list[int]:
    return [e["position"]["offset"] for e in events]


def continuous(events: list[Any], after: int) -> bool:
    return offsets(events) == list(range(after + 1, after + 1 + len(events)))


@pytest.mark.timeout(180)
async def test_the_cluster_serves_through_the_front_survives_a_bridge_and_stops(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "cluster"
    async with running_cluster(folder) as cluster:
        assert set(cluster.pids) == {
            "redis", "core1", "core2", "bridge1", "bridge2", "nginx", "simulator"
        }  # fmt: skip
        front = cluster.front.replace("http://", "ws://")
        ws = await asyncio.wait_for(connect(front + "/ws/packages"), TIMEOUT)
        assert ws.response is not None
        served_by = ws.response.headers["X-ClearPath-Bridge"]  # nginx: the bridge's address
        (bridge,) = [n for n, url in cluster.serves.items() if url == f"http://{served_by}"]
        seen = await frames(ws, 5)
        epoch = seen[0]["position"]["epoch"]
        assert continuous(seen, seen[0]["position"]["offset"] - 1)

        mark = len(cluster.lines)
        os.kill(cluster.pids[bridge], signal.SIGKILL)
        with pytest.raises(ConnectionClosed):  # read what it sent until the cut
            while True:
                seen += await frames(ws, 1)
        assert continuous(seen, seen[0]["position"]["offset"] - 1)

        # As the web client does: reconnect through the front, resume after the last position.
        since = f"?since=package_updates:{epoch}:{seen[-1]['position']['offset']}"
        ws = await asyncio.wait_for(connect(front + "/ws/packages" + since), TIMEOUT)
        assert ws.response is not None
        control = await frames(ws, 2, events_only=False)
        assert [f["type"] for f in control] == ["welcome", "subscribed"]
        assert control[1]["data"]["recovered"] is True, control[1]
        resumed = await frames(ws, 20)
        assert continuous(resumed, seen[-1]["position"]["offset"]), (
            offsets(seen),
            offsets(resumed),
        )

        # The supervisor restarts the killed bridge on its port.
        restarted = await cluster.line(rf"cluster: {bridge} restarted, pid (\d+)", 30, mark)
        assert int(restarted.group(1)) != cluster.pids[bridge]

        cluster.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:  # the bridges stop first: 1001
            while True:
                await frames(ws, 1)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert await asyncio.wait_for(cluster.process.wait(), 60) == 0, cluster.log()
        assert cluster.session() == []
    assert list((folder / "redis").rglob("*.aof")), "Redis kept an append-only file"


@pytest.mark.timeout(180)
async def test_the_cluster_with_auth_needs_tokens_through_the_front(tmp_path: Path) -> None:
    import aiohttp

    from core.auth import mint, read_secret

    folder = tmp_path / "cluster"
    async with running_cluster(folder, "--auth", "--bridge-workers", "2") as cluster:
        printed = await cluster.line(r"dashboard \(a 12-hour viewer token\): \S+\?token=(\S+)")
        viewer = printed.group(1)
        front = cluster.front.replace("http://", "ws://")
        # The printed token opens a socket through the front and receives simulated events.
        async with connect(f"{front}/ws/packages?token={viewer}") as ws:
            welcome = await frames(ws, 1, events_only=False)
            assert welcome[0]["data"]["subject"] == "viewer"
            assert len(await frames(ws, 3)) == 3  # the simulator's token lets it publish
        # No token: nothing but an error until it authenticates.
        async with connect(f"{front}/ws/packages") as ws:
            await ws.send(orjson.dumps({"type": "ping", "data": {}}).decode())
            [error] = await frames(ws, 1, events_only=False)
            assert error["data"]["code"] == "unauthorized"
        # A page of another site cannot open one at all.
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{front}/ws/packages?token={viewer}", origin="https://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        # The same origin as the front (nginx passes the Host with its port) is fine.
        async with connect(f"{front}/ws/packages?token={viewer}", origin=cluster.front) as ws:  # type: ignore[arg-type]
            assert (await frames(ws, 1, events_only=False))[0]["type"] == "welcome"
        # Operator endpoints through the front: an operator token of the cluster's secret.
        secret = read_secret(folder / "auth-secret")
        operator = mint(subject="ops", key=secret, operator=True)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{cluster.front}/ws/connections") as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {operator}"}
            async with http.get(f"{cluster.front}/ws/status", headers=headers) as response:
                assert response.status == 200
                status = await response.json()
                assert status["auth"] is True
                assert status["upstream"]["state"] == "connected"
            # Every target of the scrape config the cluster wrote answers as Prometheus
            # would ask: cores without a token, bridges with the token file's.
            config = yaml.safe_load((folder / "prometheus.yml").read_text())
            scraped = 0
            for job in config["scrape_configs"]:
                headers = {}
                if "authorization" in job:
                    credentials = read_secret(Path(job["authorization"]["credentials_file"]))
                    headers = {"Authorization": f"Bearer {credentials}"}
                for group in job["static_configs"]:
                    for target in group["targets"]:
                        path = job.get("metrics_path", "/metrics")
                        async with http.get(f"http://{target}{path}", headers=headers) as page:
                            assert page.status == 200, (job["job_name"], target)
                            assert "clearpath_info" in await page.text()
                            scraped += 1
            assert scraped == 4  # two cores, two bridges


async def test_a_process_that_cannot_start_stops_the_cluster_with_1(tmp_path: Path) -> None:
    process = await start_cluster(tmp_path / "c", "--nginx", "/bin/false")
    cluster = Cluster(process)
    try:
        code = await asyncio.wait_for(process.wait(), START)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
    await asyncio.wait_for(cluster.reader, TIMEOUT)
    assert code == 1, cluster.log()
    await cluster.line(r"cluster: nginx exited with 1 \(port \d+\)")
    assert cluster.session() == []


def options(tmp_path: Path, **overrides: Any) -> Options:
    given: dict[str, Any] = {
        "dir": tmp_path,
        "front_host": "127.0.0.1",
        "front_port": 18000,
        "bridge_ports": (18001, 18002),
        "core_ports": (15061, 15062),
        "redis_port": 16390,
        **overrides,
    }
    return Options(**given)


def test_the_plan_gives_each_bridge_every_core_and_redis_to_every_core(tmp_path: Path) -> None:
    stages = plan(options(tmp_path))
    assert [[s.name for s in stage] for stage in stages] == [
        ["redis"], ["core1", "core2"], ["nginx"], ["bridge1", "bridge2"], ["simulator"]
    ]  # fmt: skip
    redis, cores, bridges = stages[0][0], stages[1], stages[3]
    assert "--appendonly" in redis.argv
    assert redis.argv[redis.argv.index("--appendfsync") + 1] == "everysec"
    for core in cores:
        assert core.argv[core.argv.index("--broker") + 1] == "redis://127.0.0.1:16390/0"
    # Its own core first, the other to fail over to.
    assert [b.argv[b.argv.index("--core") + 1] for b in bridges] == [
        "127.0.0.1:15061,127.0.0.1:15062",
        "127.0.0.1:15062,127.0.0.1:15061",
    ]
    single = plan(options(tmp_path, bridge_core_list=False, simulate=False))
    assert len(single) == 4
    assert [b.argv[b.argv.index("--core") + 1] for b in single[3]] == [
        "127.0.0.1:15061",
        "127.0.0.1:15062",
    ]


def test_the_generated_nginx_config_is_valid_and_includes_the_shared_one(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).is_file(), "nginx is missing: make system installs it"
    opts = options(tmp_path)
    text = render_nginx(opts)
    assert f"include {NGINX_SHARED};" in text
    assert "server 127.0.0.1:18001" in text
    assert "server 127.0.0.1:18002" in text
    prepare(opts)
    conf = tmp_path / "nginx" / "nginx.conf"
    checked = subprocess.run(
        [nginx, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert (tmp_path / ".gitignore").read_text().splitlines()[-1] == "*"


def scraped(config: dict[str, Any]) -> dict[str, list[str]]:
    """A Prometheus config's targets by job."""
    return {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }


def test_the_plan_gives_each_core_a_metrics_port_that_prometheus_scrapes(
    tmp_path: Path,
) -> None:
    opts = options(tmp_path, metrics_ports=(19464, 19465))
    cores, bridges = plan(opts)[1], plan(opts)[3]
    assert [c.argv[c.argv.index("--metrics-port") + 1] for c in cores] == ["19464", "19465"]
    assert [c.serves.split()[0] for c in cores] == ["127.0.0.1:15061", "127.0.0.1:15062"]
    config = yaml.safe_load(render_prometheus(opts))
    assert scraped(config) == {
        "clearpath-core": ["127.0.0.1:19464", "127.0.0.1:19465"],
        "clearpath-bridge": [f"127.0.0.1:{b.port}" for b in bridges],
    }
    assert all("authorization" not in job for job in config["scrape_configs"])
    prepare(opts)
    assert yaml.safe_load((tmp_path / "prometheus.yml").read_text()) == config
    assert not (tmp_path / "prometheus-token").exists()


def test_with_auth_prometheus_scrapes_the_bridges_with_an_operator_token(
    tmp_path: Path,
) -> None:
    from core.auth import Verifier, read_secret

    folder = tmp_path / "a dir with spaces"
    opts = options(folder, metrics_ports=(19464, 19465), auth=True)
    prepare(opts)
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    token = folder.resolve() / "prometheus-token"
    assert jobs["clearpath-bridge"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": str(token),
    }
    assert "authorization" not in jobs["clearpath-core"]
    assert token.stat().st_mode & 0o077 == 0
    verifier = Verifier(algorithms=["HS256"], secret=read_secret(folder / "auth-secret"))
    identity = verifier.verify(token.read_text().strip())
    assert (identity.subject, identity.operator) == ("prometheus", True)


def test_metrics_ports_are_free_ones_by_default_and_one_per_core(tmp_path: Path) -> None:
    argv = ["cluster", "--dir", str(tmp_path), "--front-port", "0", "--redis-port", "0",
            "--bridge-ports", "0,0", "--core-ports", "0,0,0"]  # fmt: skip
    opts = resolved_options(build_parser().parse_args(argv))
    assert len(opts.metrics_ports) == 3
    every = [opts.front_port, opts.redis_port, *opts.bridge_ports, *opts.core_ports]
    assert len(set(every + list(opts.metrics_ports))) == len(every) + 3
    assert 0 not in opts.metrics_ports
    given = resolved_options(build_parser().parse_args([*argv, "--metrics-ports", "19001,0,19003"]))
    assert given.metrics_ports[0::2] == (19001, 19003)
    assert given.metrics_ports[1] not in (0, *given.core_ports, *given.bridge_ports)
    assert run_cluster(build_parser().parse_args([*argv, "--metrics-ports", "19001"])) == 2
