"""``clearpath cluster``: the local scale-out cluster, every process in the foreground
of one supervisor (``make cluster``)::

    browsers ──► nginx :8000 ─┬─► bridge1 :8001 ──► core1 :50061 ─┬─► redis-server :6390
                              └─► bridge2 :8002 ──► core2 :50062 ─┘   (AOF, .cluster/redis)
                                           simulator ──► core1

The supervisor starts the stages in order (redis, the cores, nginx, the bridges, the
simulator), each only once the one before listens; a process that does not come up
stops the others and the supervisor exits 1. Once up, a process that exits is
restarted (with a log line and a growing delay) unless ``--no-restart``, which ends
the cluster instead. SIGTERM or SIGINT (Ctrl-C) stops every process in the reverse
order (the simulator, then the bridges, which close their browsers' sockets with
1001 through a front still up, then nginx, the cores, redis), and the supervisor
exits 0. Every line a process writes is shown prefixed with its name; with
``clearpath --log-format json cluster`` the cores and bridges log JSON too, and
every line shown is one JSON object with the process's name as ``source``.
Children get SIGTERM if the supervisor itself dies (``setpriv --pdeathsig``).

nginx runs from Debian's package with a generated ``.cluster/nginx/nginx.conf``
around ``deploy/nginx/clearpath.conf``, the same file ``docker-compose.yml`` mounts.

Each core serves /metrics on a port of its own (``--metrics-ports``, free ones by
default), and ``.cluster/prometheus.yml`` is a Prometheus scrape config for every
core's metrics port and every bridge's port (with ``--auth``, through an operator
token it writes to ``.cluster/prometheus-token``). Prometheus is not started; run
``prometheus --config.file=.cluster/prometheus.yml`` beside the cluster to have it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.auth import mint, read_secret
from core.backoff import Backoff

__all__ = [
    "Options",
    "Spec",
    "Supervisor",
    "json_line",
    "plan",
    "register",
    "render_nginx",
    "render_prometheus",
]

log = logging.getLogger("clearpath.cluster")

ROOT = Path(__file__).resolve().parents[2]
#: The server-level nginx configuration shared with docker-compose.yml.
NGINX_SHARED = ROOT / "deploy" / "nginx" / "clearpath.conf"
#: Seconds a stage may take to listen.
START_TIMEOUT = 30.0
#: Seconds a process may take to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15.0
#: Delays before restarting a process that keeps exiting (reset once one listens).
RESTART_BACKOFF = Backoff(initial=0.5, maximum=5.0)
#: Longest log line relayed whole.
LINE_LIMIT = 1 << 20
LOOPBACK = "127.0.0.1"


def _binary(name: str) -> str:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def _env(name: str, default: str) -> str:
    # A string default: argparse converts it (with the option's type) only when
    # `cluster` runs, so a bad variable cannot break the other commands.
    return os.environ.get(f"CLEARPATH_CLUSTER_{name}", default)


def _ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        ports = []
    if not ports or any(not 0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ports (0: a free one): {text!r}"
        )
    return ports


def register(sub: Any) -> None:
    """Add ``cluster`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "cluster",
        help="run the local cluster: redis, two cores, two bridges, nginx, the simulator",
        description="Run redis-server (AOF), cores on the Redis broker, bridges, the "
        "simulator and nginx in front, until Ctrl-C/SIGTERM. Every option is also "
        "CLEARPATH_CLUSTER_<NAME>; a port 0 picks a free one.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=_env("DIR", ".cluster"),
        help="state folder (Redis AOF, nginx config); git-ignores itself (default .cluster)",
    )
    parser.add_argument(
        "--front-host",
        default=_env("FRONT_HOST", LOOPBACK),
        help="nginx's address (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--front-port", type=int, default=_env("FRONT_PORT", "8000"), help="default 8000"
    )
    parser.add_argument(
        "--bridge-ports",
        type=_ports,
        default=_env("BRIDGE_PORTS", "8001,8002"),
        help="one bridge per port (default 8001,8002)",
    )
    parser.add_argument(
        "--core-ports",
        type=_ports,
        default=_env("CORE_PORTS", "50061,50062"),
        help="one core per port (default 50061,50062)",
    )
    parser.add_argument(
        "--metrics-ports",
        type=_ports,
        default=os.environ.get("CLEARPATH_CLUSTER_METRICS_PORTS"),
        help="each core's metrics port (serve --metrics-port), one per core (default: free "
        "ones); DIR/prometheus.yml scrapes them",
    )
    parser.add_argument(
        "--redis-port", type=int, default=_env("REDIS_PORT", "6390"), help="default 6390"
    )
    parser.add_argument(
        "--bridge-workers",
        type=int,
        default=_env("BRIDGE_WORKERS", "1"),
        help="processes per bridge (clearpath bridge --workers; default 1)",
    )
    parser.add_argument(
        "--one-core-each",
        dest="bridge_core_list",
        action="store_false",
        default=_env("ONE_CORE_EACH", "") in ("", "0"),
        help="give each bridge and the simulator one core only (default: every core, its own "
        "first, the others to fail over to)",
    )
    parser.add_argument("--rate", type=float, default=_env("RATE", "20"), help="simulated events/s")
    parser.add_argument("--seed", type=int, help="simulator seed (reproducible traffic)")
    parser.add_argument("--no-simulate", action="store_true", help="run without the simulator")
    parser.add_argument(
        "--auth",
        action="store_true",
        default=_env("AUTH", "") not in ("", "0"),
        help="authentication on: an HS256 secret in DIR/auth-secret that cores and bridges "
        "verify; bridges sign their own operator tokens, the simulator gets a publish token, "
        "and a dashboard URL with a viewer token is printed",
    )
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="a process that exits ends the cluster (default: it is restarted)",
    )
    parser.add_argument(
        "--nginx",
        default=os.environ.get("CLEARPATH_CLUSTER_NGINX"),
        help="the nginx binary (default: nginx on PATH, else /usr/sbin/nginx)",
    )
    parser.add_argument(
        "--redis-server",
        default=os.environ.get("CLEARPATH_CLUSTER_REDIS_SERVER"),
        help="the redis-server binary (default: redis-server on PATH)",
    )
    parser.set_defaults(handler=run)


# --- the plan (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run, every port chosen (none is 0)."""

    dir: Path
    front_host: str
    front_port: int
    bridge_ports: tuple[int, ...]
    core_ports: tuple[int, ...]
    redis_port: int
    bridge_workers: int = 1
    bridge_core_list: bool = True
    rate: float = 20.0
    seed: int | None = None
    simulate: bool = True
    auth: bool = False
    nginx: str = "nginx"
    redis_server: str = "redis-server"
    python: str = sys.executable
    #: ``--log-format`` for the clearpath processes (None: their own default).
    log_format: str | None = None
    #: Each core's metrics port, in ``core_ports``' order (empty: the cores serve none).
    metrics_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Spec:
    """One process: its name, command, what it serves, and what says it is up: its
    ``port`` accepts connections (``ping``: answers a Redis PING there), and it has
    printed a line holding ``ready_line``, if given."""

    name: str
    argv: tuple[str, ...]
    serves: str
    port: int | None = None
    ping: bool = False
    ready_line: bytes = b""
    #: Environment variables set for the process (beside the supervisor's own).
    env: tuple[tuple[str, str], ...] = ()


def plan(opts: Options) -> list[list[Spec]]:
    """The stages to start in order (each stage's processes together)."""
    state = opts.dir.resolve()
    redis_url = f"redis://{LOOPBACK}:{opts.redis_port}/0"
    cores = [f"{LOOPBACK}:{p}" for p in opts.core_ports]
    log_format = ("--log-format", opts.log_format) if opts.log_format else ()
    clearpath = (opts.python, "-m", "clients.cli.app", *log_format)

    def core_of(i: int) -> str:
        # With the list, each starts on its own core and fails over to the others.
        k = i % len(cores)
        return ",".join(cores[k:] + cores[:k]) if opts.bridge_core_list else cores[k]

    # --auth: one HS256 secret for all; bridges sign their own upstream tokens with it.
    secret = str(auth_secret_file(opts))
    core_env = (("CLEARPATH_CORE_AUTH_SECRET_FILE", secret),) if opts.auth else ()
    bridge_env = (
        # nginx in front: the client's address is what it forwards (per-address caps).
        ("CLEARPATH_BRIDGE_TRUSTED_PROXIES", LOOPBACK),
        *((("CLEARPATH_BRIDGE_AUTH_SECRET_FILE", secret),) if opts.auth else ()),
    )

    # Ports, hosts and URLs hold no spaces; paths may, so they are never split.
    redis_flags = "--appendonly yes --appendfsync everysec --daemonize no --protected-mode yes"
    redis = Spec(
        "redis",
        (
            opts.redis_server,
            *f"--port {opts.redis_port} --bind {LOOPBACK} {redis_flags}".split(),
            *("--save", ""),  # no RDB snapshots: the AOF is the persistence
            *("--dir", str(state / "redis")),
        ),
        f"{redis_url} (AOF in {state / 'redis'})",
        opts.redis_port,
        ping=True,
    )
    metrics = dict(enumerate(opts.metrics_ports))

    def metrics_flag(i: int) -> tuple[str, ...]:
        return ("--metrics-port", str(metrics[i])) if i in metrics else ()

    def metrics_at(i: int) -> str:
        return f"; metrics http://{LOOPBACK}:{metrics[i]}/metrics" if i in metrics else ""

    core_specs = [
        Spec(
            f"core{i + 1}",
            (
                *clearpath,
                *f"serve --no-bridge --host {LOOPBACK} --grpc-port {port}".split(),
                *metrics_flag(i),
                *("--broker", redis_url),
            ),
            f"{LOOPBACK}:{port} (broker {redis_url}{metrics_at(i)})",
            port,
            env=core_env,
        )
        for i, port in enumerate(opts.core_ports)
    ]
    bridge_specs = [
        Spec(
            f"bridge{i + 1}",
            (
                *clearpath,
                *f"bridge --core {core_of(i)} --http-host {LOOPBACK} --http-port {port}".split(),
                *("--workers", str(opts.bridge_workers)),
            ),
            f"http://{LOOPBACK}:{port} (core {core_of(i)})",
            port,
            # The port answers once one worker listens; this line, once all do.
            ready_line=b"bridge listening on ",
            env=bridge_env,
        )
        for i, port in enumerate(opts.bridge_ports)
    ]
    conf = state / "nginx" / "nginx.conf"
    nginx = Spec(
        "nginx",
        (opts.nginx, "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"),
        f"http://{_reach(opts.front_host)}:{opts.front_port} (config {conf})",
        opts.front_port,
    )
    # nginx before the bridges, so that on the way down (in reverse) the bridges close
    # their browsers' sockets with 1001 through a front that is still there.
    stages = [[redis], core_specs, [nginx], bridge_specs]
    if opts.simulate:
        argv = [*clearpath, "simulate", "--core", core_of(0), "--rate", f"{opts.rate:g}"]
        if opts.seed is not None:
            argv += ["--seed", str(opts.seed)]
        env: tuple[tuple[str, str], ...] = ()
        if opts.auth:
            publisher = cluster_token(opts, "simulator", 30 * 86400, publish=["*"])
            env = (("CLEARPATH_TOKEN", publisher),)
        serves = f"{opts.rate:g} events/s to {core_of(0)}"
        stages.append([Spec("simulator", tuple(argv), serves, env=env)])
    return stages


def render_nginx(opts: Options, shared: Path = NGINX_SHARED) -> str:
    """The cluster's nginx.conf: as deploy/nginx/nginx.conf, with local ports."""
    servers = "\n".join(
        f"        server {LOOPBACK}:{p} max_fails=1 fail_timeout=5s;" for p in opts.bridge_ports
    )
    # One nginx worker: this machine's cores are for the bridges. 8192 connections
    # are 4096 browsers (each proxied socket is two).
    return f"""\
# Written by `clearpath cluster`; edit deploy/nginx/clearpath.conf or the cluster's code.
daemon off;
worker_processes 1;
error_log stderr notice;
pid nginx.pid;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream clearpath_bridges {{
        least_conn;
{servers}
        keepalive 16;
    }}

    server {{
        listen {_bracketed(opts.front_host)}:{opts.front_port};
        include {shared};
    }}
}}
"""


def render_prometheus(opts: Options) -> str:
    """A Prometheus scrape config for the cluster: every core's metrics port, every
    bridge's /metrics (with ``--auth``, with the token of :func:`prometheus_token_file`)."""

    def targets(ports: tuple[int, ...]) -> str:
        return json.dumps([f"{LOOPBACK}:{p}" for p in ports])

    cores = f"""\
  - job_name: clearpath-core
    metrics_path: /metrics
    static_configs:
      - targets: {targets(opts.metrics_ports)}
"""
    token = f"""\
    authorization:
      type: Bearer
      credentials_file: {json.dumps(str(prometheus_token_file(opts)))}
"""
    return f"""\
# Written by `clearpath cluster`; Prometheus is not started by it:
#   prometheus --config.file={opts.dir.resolve() / "prometheus.yml"}
global:
  scrape_interval: 15s
  scrape_timeout: 5s
  evaluation_interval: 15s

scrape_configs:
{cores if opts.metrics_ports else ""}\
  - job_name: clearpath-bridge
    metrics_path: /metrics
{token if opts.auth else ""}\
    static_configs:
      - targets: {targets(opts.bridge_ports)}
"""


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reach(host: str) -> str:
    return LOOPBACK if host in ("0.0.0.0", "::", "") else host


# --- the supervisor -----------------------------------------------------------------


class StartFailed(Exception):
    """A process exited, or did not listen in time, while the cluster started."""


@dataclass
class _Child:
    spec: Spec
    process: asyncio.subprocess.Process | None = None
    relay: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    attempt: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class Supervisor:
    """Starts :func:`plan`'s stages, restarts what exits, stops everything in reverse."""

    def __init__(
        self, stages: list[list[Spec]], *, restart: bool = True, log_format: str | None = None
    ) -> None:
        self.stages = [[_Child(spec) for spec in stage] for stage in stages]
        self.restart = restart
        #: "json": relay each line as one JSON object (see :func:`json_line`).
        self.log_format = log_format
        self.failed = asyncio.Event()
        self.stopping = asyncio.Event()
        self._stopping = False
        self._prefix = max(len(c.spec.name) for stage in self.stages for c in stage)

    @property
    def children(self) -> list[_Child]:
        return [c for stage in self.stages for c in stage]

    async def start(self) -> None:
        """Start stage after stage; StartFailed (after stopping what runs) if one fails."""
        try:
            for stage in self.stages:
                await asyncio.gather(*(self._launch(c) for c in stage))
        except BaseException:
            await self.stop()
            raise
        for child in self.children:
            child.watcher = asyncio.create_task(self._watch(child))
            log.info("cluster: %s pid %d on %s", child.spec.name, child.pid, child.spec.serves)

    def request_stop(self) -> None:
        """From now on a process that exits is not restarted; sets :attr:`stopping`.

        Called from the signal handler itself: on Ctrl-C every process gets SIGINT too,
        and their exits must not look unexpected."""
        self._stopping = True
        self.stopping.set()

    async def stop(self) -> bool:
        """SIGTERM each stage in reverse order; True if every process stopped in time."""
        self._stopping = True  # not `stopping`: that one says a signal came
        watchers = [c.watcher for c in self.children if c.watcher is not None]
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        clean = True
        for stage in reversed(self.stages):
            results = await asyncio.gather(*(self._stop(c) for c in stage))
            clean = clean and all(results)
        return clean

    async def _launch(self, child: _Child) -> None:
        spec = child.spec
        process = await asyncio.create_subprocess_exec(
            *_die_with_parent(),
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **dict(spec.env)} if spec.env else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT,
        )
        child.process = process
        printed = asyncio.Event()
        child.relay = asyncio.create_task(self._relay(spec, process, printed))
        if spec.port is None:
            return
        probe = asyncio.create_task(_until_up(spec, printed))
        exited = asyncio.create_task(process.wait())
        try:
            done, _ = await asyncio.wait(
                {probe, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (probe, exited):
                task.cancel()
        if probe not in done or probe.cancelled():
            if exited in done:
                reason = f"exited with {process.returncode}"
            else:
                reason = f"did not listen within {START_TIMEOUT:g}s"
            raise StartFailed(f"{spec.name} {reason} (port {spec.port}): {' '.join(spec.argv)}")

    async def _relay(
        self, spec: Spec, process: asyncio.subprocess.Process, printed: asyncio.Event
    ) -> None:
        assert process.stdout is not None
        prefix = f"{spec.name:<{self._prefix}} | ".encode()
        out = sys.stderr.buffer
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # longer than LINE_LIMIT: the rest of it was dropped
                line = b"[a line too long to show]\n"
            if not line:
                return
            if spec.ready_line and spec.ready_line in line:
                printed.set()
            if self.log_format == "json":
                _relay_json(spec.name, line, out)
                continue
            out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            out.flush()

    async def _watch(self, child: _Child) -> None:
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if child.relay is not None:
                await child.relay
            if self._stopping:
                return
            if not self.restart:
                log.error("cluster: %s (pid %d) exited with %s", child.spec.name, child.pid, code)
                self.failed.set()
                return
            child.attempt += 1
            delay = RESTART_BACKOFF.delay(child.attempt)
            log.warning(
                "cluster: %s (pid %d) exited with %s; restarting it in %.1fs",
                child.spec.name,
                child.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await self._launch(child)
            except StartFailed as exc:
                log.error("cluster: %s", exc)
                continue
            child.attempt = 0
            log.info("cluster: %s restarted, pid %d", child.spec.name, child.pid)

    async def _stop(self, child: _Child) -> bool:
        process = child.process
        if process is None:
            return True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        clean = True
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.error("cluster: %s (pid %d) did not stop; killing it", child.spec.name, child.pid)
            process.kill()
            await process.wait()
            clean = False
        if child.relay is not None:
            await child.relay
        return clean


def json_line(source: str, line: bytes) -> bytes | None:
    """A child's JSON log line with ``"source": source`` added; None when the line
    is not a JSON object (nginx's and redis's own lines)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return json.dumps({**record, "source": source}).encode() + b"\n"


def _relay_json(source: str, line: bytes, out: Any) -> None:
    relayed = json_line(source, line)
    if relayed is None:
        # Not JSON: logged as the supervisor's own line, so the output stays JSON.
        text = line.decode(errors="replace").rstrip("\r\n")
        log.info("%s", text, extra={"event": "output", "source": source})
        return
    out.write(relayed)
    out.flush()


def _die_with_parent() -> tuple[str, ...]:
    """A prefix that gives the child SIGTERM when the supervisor dies, where it can."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "TERM", "--") if setpriv and sys.platform == "linux" else ()


async def _until_up(spec: Spec, printed: asyncio.Event) -> None:
    """Return once ``spec``'s process is up (see :class:`Spec`)."""
    assert spec.port is not None
    await _until_listening(spec.port, spec.ping)
    if spec.ready_line:
        await printed.wait()


async def _until_listening(port: int, ping: bool) -> None:
    """Return once 127.0.0.1:port accepts a connection (and answers PING with PONG)."""
    while True:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            try:
                if not ping:
                    return
                writer.write(b"PING\r\n")
                if await asyncio.wait_for(reader.readline(), 1.0) == b"+PONG\r\n":
                    return  # not while Redis still loads its AOF (-LOADING)
            except TimeoutError:
                pass
            finally:
                writer.close()
        await asyncio.sleep(0.05)


# --- the command ----------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (free now; taken by whoever binds first)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def options(args: argparse.Namespace) -> Options:
    """The command's options with every port 0 replaced by a free one."""
    metrics = args.metrics_ports or [0] * len(args.core_ports)
    wanted = [args.front_port, args.redis_port, *args.bridge_ports, *args.core_ports, *metrics]
    chosen = iter(free_ports(wanted.count(0)))
    front, redis, *rest = [port or next(chosen) for port in wanted]
    split = len(args.bridge_ports), len(args.bridge_ports) + len(args.core_ports)
    bridges, cores, metrics = rest[: split[0]], rest[split[0] : split[1]], rest[split[1] :]
    return Options(
        dir=args.dir,
        front_host=args.front_host,
        front_port=front,
        bridge_ports=tuple(bridges),
        core_ports=tuple(cores),
        redis_port=redis,
        bridge_workers=args.bridge_workers,
        bridge_core_list=args.bridge_core_list,
        rate=args.rate,
        seed=args.seed,
        simulate=not args.no_simulate,
        auth=args.auth,
        nginx=args.nginx or _binary("nginx"),
        redis_server=args.redis_server or _binary("redis-server"),
        log_format=getattr(args, "log_format", None),
        metrics_ports=tuple(metrics),
    )


def prepare(opts: Options) -> None:
    """Make the state folder (git-ignored by a .gitignore of its own), nginx's config,
    and Prometheus's (with ``--auth``, and its operator token)."""
    state = opts.dir.resolve()
    for folder in (state / "redis", state / "nginx" / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    (state / ".gitignore").write_text("# clearpath cluster's state\n*\n")
    (state / "nginx" / "nginx.conf").write_text(render_nginx(opts))
    secret = auth_secret_file(opts)
    if opts.auth and not secret.exists():
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(48) + "\n")
    if opts.auth:
        token = prometheus_token_file(opts)
        token.touch(mode=0o600)
        token.write_text(cluster_token(opts, "prometheus", 365 * 86400, operator=True) + "\n")
    (state / "prometheus.yml").write_text(render_prometheus(opts))


def auth_secret_file(opts: Options) -> Path:
    """Where ``--auth`` keeps the cluster's HS256 secret (made once, kept across runs)."""
    return opts.dir.resolve() / "auth-secret"


def prometheus_token_file(opts: Options) -> Path:
    """Where ``--auth`` keeps Prometheus's operator token for the bridges' /metrics."""
    return opts.dir.resolve() / "prometheus-token"


def cluster_token(opts: Options, subject: str, lifetime: float, **claims: Any) -> str:
    """A token of the cluster's secret (``--auth``)."""
    secret = read_secret(auth_secret_file(opts))
    return mint(subject=subject, key=secret, lifetime=lifetime, **claims)


def _missing(opts: Options) -> list[str]:
    return [
        b
        for b in (opts.nginx, opts.redis_server)
        if shutil.which(b) is None and not Path(b).is_file()
    ]


def _taken(opts: Options) -> list[str]:
    named = {
        "front": (opts.front_host, opts.front_port),
        "redis": (LOOPBACK, opts.redis_port),
        **{f"core{i + 1}": (LOOPBACK, p) for i, p in enumerate(opts.core_ports)},
        **{f"bridge{i + 1}": (LOOPBACK, p) for i, p in enumerate(opts.bridge_ports)},
        **{f"core{i + 1} metrics": (LOOPBACK, p) for i, p in enumerate(opts.metrics_ports)},
    }
    taken = []
    for name, address in named.items():
        with socket.socket() as sock:
            try:
                sock.bind(address)
            except OSError as exc:
                taken.append(f"{name} {address[0]}:{address[1]} ({exc.strerror})")
    return taken


def run(args: argparse.Namespace) -> int:
    """Run the cluster until SIGINT/SIGTERM; 1 if it could not start or a process failed."""
    if args.bridge_workers < 1:
        print("clearpath: error: --bridge-workers must be at least 1", file=sys.stderr)
        return 2
    if args.metrics_ports and len(args.metrics_ports) != len(args.core_ports):
        print("clearpath: error: --metrics-ports needs one port per core", file=sys.stderr)
        return 2
    opts = options(args)
    if missing := _missing(opts):
        print(
            f"clearpath: error: not installed: {', '.join(missing)} "
            "(make system installs nginx and redis-server)",
            file=sys.stderr,
        )
        return 1
    if taken := _taken(opts):
        print(f"clearpath: error: ports in use: {'; '.join(taken)}", file=sys.stderr)
        return 1
    prepare(opts)
    return asyncio.run(_supervise(plan(opts), opts, restart=not args.no_restart))


async def _supervise(stages: list[list[Spec]], opts: Options, *, restart: bool) -> int:
    loop = asyncio.get_running_loop()
    supervisor = Supervisor(stages, restart=restart, log_format=opts.log_format)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_stop)
    starting = asyncio.create_task(supervisor.start())
    stopped = asyncio.create_task(supervisor.stopping.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while starting
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await supervisor.stop()
        return 0
    if (exc := starting.exception()) is not None:
        stopped.cancel()
        if supervisor.stopping.is_set():
            return 0  # interrupted while starting (a Ctrl-C reaches every process)
        log.error("cluster: %s", exc)
        return 1
    front = f"http://{_reach(opts.front_host)}:{opts.front_port}"
    log.info("cluster listening on %s", front)
    if opts.auth:
        viewer = cluster_token(opts, "viewer", 12 * 3600)
        # A token: printed for whoever started the cluster, never logged (log lines
        # blank tokens, core/logs.py); with JSON logs, on stdout, away from them.
        print(
            f"cluster: dashboard (a 12-hour viewer token): {front}/?token={viewer}",
            file=sys.stdout if opts.log_format == "json" else sys.stderr,
            flush=True,
        )
        log.info(
            "cluster: more tokens: clearpath token --secret-file %s --subject NAME "
            "[--operator] [--publish '*']",
            auth_secret_file(opts),
        )
    failed = asyncio.create_task(supervisor.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, failed):
        task.cancel()
    log.info("cluster: stopping")
    clean = await supervisor.stop()
    return 0 if clean and not supervisor.failed.is_set() else 1
