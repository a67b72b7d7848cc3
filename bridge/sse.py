"""Server-Sent Events: ``GET /sse?topics=…``, the bridge's stream for networks
that refuse WebSockets.

An SSE stream is a bridge socket like any other: a
:class:`~bridge.session.Session` (hub subscription, floors, resume, catch-up on
overflow, the slow-consumer rule, metrics) and a
:class:`~bridge.connection.Connection` (written by the bridge's
:class:`~bridge.writer.Flusher`, counted by the same admission caps), with SSE
framing instead of WebSocket framing. Only the stream is one-way: what the
client would send (topics, positions, token, viewport) is in the request.

What goes on the wire (``text/event-stream``, UTF-8):

- ``retry: 500`` first: the web client's first backoff delay, for a plain
  ``EventSource`` that reconnects by itself;
- each frame as one event ``data: <frame JSON>``, exactly the WebSocket frame's
  JSON (orjson never writes a newline, so one ``data:`` line holds it);
- event frames carry ``id: <cursor>``: ``TOPIC:EPOCH:OFFSET`` of every topic of
  the stream with a known position, comma-joined in topic order
  (``package_updates:E:12,anomalies:E:5``). A browser's ``EventSource`` resends
  only the *last* id (``Last-Event-ID``), so that id must resume every topic:
  for a one-topic stream it is the WebSocket ``?since=`` syntax itself. Every
  topic of the stream is in the cursor from the start (:meth:`SSESession.seed`):
  a resumed one at the position it is resumed after, one subscribed live at the
  bridge's position when it was subscribed (a topic whose position the bridge
  does not know yet joins at its first event). The cursor moves as a client's
  cursor does (``clients/web/src/positions.ts``): to each event; to the position
  of a ``subscribed`` frame with ``recovered: false`` (where the stream
  continues); forward to a ``position`` frame's. A control frame carries the id
  only when it moved the cursor (or the cursor moved since the last id sent: the
  welcome carries the starting cursor); others have no id and leave it as it is;
- ``event: ping`` with ``data: {}`` every ping interval: the keepalive (proxies
  drop idle streams) and the stream's sign of life, which a page sees with
  ``addEventListener("ping", …)`` (a named event: ``onmessage`` never gets it),
  so a client can tell a silent dead stream from a quiet one;
- a final ``error`` frame when the bridge ends the stream: ``code`` as on a
  WebSocket (``going_away`` at shutdown), and ``close_code``, the WebSocket
  close code the same end would have had, so a client decides alike whether
  and how to reconnect.

Encode once: aiohttp-sse is not used. It writes each event with an awaited
``response.write()`` from a task per stream and formats the event text per
stream; here the bridge's flusher writes every stream in one loop turn with no
task per stream, each frame's JSON bytes are the ones built once for every
socket, and only the ``id:`` line is per stream. So this module frames the
bytes itself, HTTP/1.1 chunks included (``%x\\r\\n…\\r\\n``; aiohttp writes
the headers and the last chunk), written straight to the transport like
WebSocket frames.

A stream learns that its client left from aiohttp's request handler: a payload
parser installed with ``RequestHandler.set_parser`` (as aiohttp's own
WebSocketResponse does) gets ``feed_eof`` when the connection is lost. That is
aiohttp's internal API, pinned by ``tests/test_sse.py``. An SSE client sends
nothing once the stream runs: a client that stops reading without closing (a
stopped process) is noticed only when the bytes written to it stop being taken
— on a busy stream by the slow-consumer rule within ``slow_timeout``; on a
quiet one the keepalive alone takes very long to fill the kernel's buffers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11

from bridge.admission import Admission
from bridge.connection import Connection
from bridge.frames import Frame, control
from bridge.session import Session, State
from core.auth import ANONYMOUS, Identity, Verifier, parse_bearer
from core.errors import InvalidArgument, RealtimeError, Unauthenticated
from core.positions import HasPosition, Position, is_new
from core.topics import TOPIC_NAMES, topic_from_name

__all__ = [
    "ENDPOINT",
    "MAX_LAST_EVENT_ID",
    "MAX_TOPIC_NAMES",
    "RETRY_MS",
    "SSEConnection",
    "SSESession",
    "final_frame",
    "identify",
    "open_stream",
    "parse_topics",
    "split_event_id",
]

log = logging.getLogger("clearpath.bridge")

#: The path of the SSE endpoint (what ``/ws/status`` and ``/ws/connections`` show).
ENDPOINT = "/sse"

#: ``retry:`` sent first: the web client's first backoff delay (clients/web/src/backoff.ts).
RETRY_MS = 500

#: The longest ``Last-Event-ID`` read: every topic's ``TOPIC:EPOCH:OFFSET`` fits
#: (seven of at most 17 + 64 + 20 characters and separators).
MAX_LAST_EVENT_ID = 1024

#: The most names ``topics=`` may list (repeats included): HTTP 400 past it.
MAX_TOPIC_NAMES = 32

_PING = b"event: ping\ndata: {}\n\n"
_LABELS = {topic: name.encode() for topic, name in TOPIC_NAMES.items()}
_BY_LABEL = {name: topic for topic, name in TOPIC_NAMES.items()}
#: The control frames that tell a topic's position (see SSESession._told).
_TELLING = (b'{"type":"subscribed"', b'{"type":"position"')

#: The ``code`` of the final error frame for closes that are not errors.
_CLOSE_CODES = {1000: "closed", 1001: "going_away", 1011: "internal"}


def parse_topics(value: str | None) -> tuple[int, ...]:
    """The topics of ``?topics=a,b`` in the order given, once each.

    Every name is checked, then repeats are dropped. InvalidArgument naming
    ``topics`` when absent, empty or longer than :data:`MAX_TOPIC_NAMES` names;
    UnknownTopic (an InvalidArgument) naming the first unknown name.
    """
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    if not names:
        raise InvalidArgument(
            "topics: required, comma-separated subscription types, "
            "e.g. topics=package_updates,anomalies"
        )
    if len(names) > MAX_TOPIC_NAMES:
        raise InvalidArgument(f"topics: at most {MAX_TOPIC_NAMES} names, got {len(names)}")
    checked = [topic_from_name(name[:64]) for name in names]
    return tuple(dict.fromkeys(checked))


def split_event_id(value: str) -> list[str]:
    """The ``TOPIC:EPOCH:OFFSET`` entries of a ``Last-Event-ID`` (comma-separated;
    each then read like ``?since=``). InvalidArgument naming the header when it is
    longer than :data:`MAX_LAST_EVENT_ID` or has more entries than there are topics."""
    if len(value) > MAX_LAST_EVENT_ID:
        raise InvalidArgument(f"Last-Event-ID: at most {MAX_LAST_EVENT_ID} characters")
    entries = value.split(",")
    if len(entries) > len(TOPIC_NAMES):
        raise InvalidArgument(f"Last-Event-ID: at most {len(TOPIC_NAMES)} positions")
    return entries


def identify(
    request: web.Request,
    topics: tuple[int, ...],
    verifier: Verifier | None,
    admission: Admission,
    refusals: Counter[str],
) -> Identity:
    """Who opens an SSE stream, checked before it starts: the token of ``?token=``
    (``EventSource`` cannot set headers) or ``Authorization: Bearer``.

    Raises HTTPUnauthorized (no token or a bad one), HTTPTooManyRequests (the
    identity holds all the sockets it may) or HTTPForbidden (the token allows
    none of ``topics``, named), counted in ``refusals`` by reason and logged.
    Some topics allowed: the stream starts, and each forbidden one gets a
    ``forbidden`` error frame naming it (as a WebSocket subscribe does).
    ANONYMOUS when authentication is off.
    """

    def refused(reason: str, why: object) -> None:
        refusals[reason] += 1
        log.info(
            "refused an SSE stream from %s: %s",
            request.remote,
            why,
            extra={"event": "refused", "reason": reason, "remote": request.remote},
        )

    if verifier is None:
        return ANONYMOUS
    try:
        token = request.query.get("token") or parse_bearer(request.headers.get("Authorization"))
        identity = verifier.verify(token)
    except Unauthenticated as exc:
        refused("unauthorized", exc)
        raise web.HTTPUnauthorized(
            text=f"unauthorized: {exc} (give ?token= or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    if admission.subject_full(identity.subject):
        refused("per_identity", identity.subject)
        raise web.HTTPTooManyRequests(
            text=f"at most {admission.per_subject} connections per user"
        ) from None
    forbidden = [TOPIC_NAMES[t] for t in topics if not identity.may_subscribe(t)]
    if forbidden and len(forbidden) == len(topics):  # topics: once each (parse_topics)
        refused("forbidden", forbidden)
        raise web.HTTPForbidden(text=f"this token may not subscribe to {', '.join(forbidden)}")
    return identity


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Send the response head of an SSE stream: chunked under HTTP/1.1 (and the
    connection closed when the stream ends), never compressed or cached."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()
    response.force_close()  # one stream per connection: nothing follows it
    await response.prepare(request)
    return response


class SSESession(Session):
    """An SSE stream's protocol state: a :class:`Session` whose bytes are SSE
    events (in HTTP/1.1 chunks when ``chunked``), with the stream's cursor.

    No I/O: tested with plain calls.
    """

    __slots__ = ("_at", "_chunked", "_cursors", "_sent")

    def __init__(self, id: str, remote: str, *, chunked: bool = True, **kw: Any) -> None:
        """``kw``: :class:`Session`'s (``max_bytes``, ``stats``, …); never ``batch``."""
        super().__init__(id, ENDPOINT, remote, **kw)
        self._chunked = chunked
        #: Topic → ``b"TOPIC:EPOCH:OFFSET"`` of its last position (see :meth:`cursor`).
        self._cursors: dict[int, bytes] = {}
        #: Topic → its last position (what ``_cursors`` spells).
        self._at: dict[int, Position] = {}
        self._sent = b""  # the id last written

    # --- the cursor ----------------------------------------------------------------

    def seed(self, positions: Mapping[int, HasPosition | None]) -> None:
        """Start the cursor of each topic not yet in it at its position (None:
        unknown, left out): a resumed topic at the position it is resumed after,
        a live one at the bridge's position when it was subscribed."""
        for topic, position in positions.items():
            if position is not None and topic not in self._cursors:
                self._advance(topic, position.epoch, position.offset)

    def _advance(self, topic: int, epoch: str, offset: int) -> None:
        self._cursors[topic] = b"%s:%s:%d" % (_LABELS[topic], epoch.encode(), offset)
        self._at[topic] = Position(offset, epoch)

    def _told(self, data: bytes) -> None:
        """A ``subscribed`` or ``position`` control frame (``data``, its JSON) moves
        its topic's cursor as a client's cursor moves (``positions.ts`` ``Cursor``):
        ``subscribed`` with ``recovered: false`` to its position (where the stream
        continues; recovered, only a topic with no position yet starts there);
        ``position`` forward only, within the topic's epoch."""
        body = orjson.loads(data)["data"]
        topic = _BY_LABEL.get(body.get("subscription_type"))
        at = body.get("position")
        if topic is None or not isinstance(at, dict):
            return
        position = Position(at["offset"], at["epoch"])
        last = self._at.get(topic)
        if "recovered" in body:  # subscribed
            if body["recovered"] is False or last is None:
                self._advance(topic, position.epoch, position.offset)
        elif last is not None and position.epoch == last.epoch and is_new(position, last):
            self._advance(topic, position.epoch, position.offset)

    def cursor(self) -> str:
        """The stream's id now: ``TOPIC:EPOCH:OFFSET`` per topic, comma-joined in
        topic order ("" when no position is known)."""
        return self._id().decode()

    def _id(self) -> bytes:
        cursors = self._cursors
        if len(cursors) == 1:
            return next(iter(cursors.values()))
        return b",".join(cursors[t] for t in sorted(cursors))

    # --- bytes ---------------------------------------------------------------------

    def encode(self, frames: list[Frame]) -> bytes:
        """``frames`` as SSE events in one chunk (:meth:`Session.take` does the rest,
        the same for every transport)."""
        return self.chunk(self.events(frames))

    def events(self, frames: Iterable[Frame]) -> bytes:
        """``frames`` as SSE events; each event frame moves the cursor and carries
        it; a control frame carries it only when the cursor differs from the id
        last sent (it moved the cursor, or it is the first frame)."""
        parts: list[bytes] = []
        for frame in frames:
            data = frame.data
            if frame.topic:
                self._advance(frame.topic, frame.epoch, frame.offset)
                self._sent = sent = self._id()
                parts.append(b"id: %s\ndata: %s\n\n" % (sent, data))
                continue
            if data.startswith(_TELLING):
                self._told(data)
            cursor = self._id()
            if cursor != self._sent:
                self._sent = cursor
                parts.append(b"id: %s\ndata: %s\n\n" % (cursor, data))
            else:
                parts.append(b"data: %s\n\n" % data)
        return b"".join(parts)

    def chunk(self, body: bytes) -> bytes:
        """``body`` as one HTTP/1.1 chunk (as it is without chunked encoding)."""
        if not self._chunked:
            return body
        return b"%x\r\n%s\r\n" % (len(body), body)

    def preamble(self) -> bytes:
        """The first bytes of the stream: the client's reconnection delay."""
        return self.chunk(b"retry: %d\n\n" % RETRY_MS)

    def keepalive(self) -> bytes:
        """The keepalive: a ``ping`` event with ``data: {}`` (a page listens to it
        with ``addEventListener("ping", …)``; ``onmessage`` never sees it)."""
        return self.chunk(_PING)


def final_frame(code: int, reason: str, error: RealtimeError | None) -> Frame:
    """The ``error`` frame that ends a stream: ``code`` (the error's, or
    ``going_away`` for 1001), ``message`` and ``close_code``."""
    kind = error.ws_error if error is not None else _CLOSE_CODES.get(code, "closed")
    return control("error", {"code": kind, "message": reason, "close_code": code})


class _PeerWatch:
    """A payload parser for aiohttp's request handler that reads nothing and
    reports the end of the connection (``feed_eof``)."""

    __slots__ = ("_gone",)

    def __init__(self, gone: Callable[[], None]) -> None:
        self._gone = gone

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        return False, b""  # an SSE client has nothing to say; ignored

    def feed_eof(self) -> None:
        self._gone()


class SSEConnection(Connection):
    """One SSE stream: its :class:`SSESession` written to its response's transport."""

    __slots__ = ("_done", "response")

    session: SSESession

    def __init__(
        self, response: web.StreamResponse, request: web.Request, session: SSESession, **kw: Any
    ) -> None:
        super().__init__(request, session, **kw)
        self.response = response
        self._done = asyncio.Event()
        protocol: Any = request.protocol  # aiohttp's RequestHandler (see the module docstring)
        protocol.set_parser(_PeerWatch(self._done.set))
        self.writer.write(session.preamble())

    async def finished(self) -> None:
        """Return once the stream has ended (closed by the bridge or by the client)."""
        await self._done.wait()

    @property
    def ended(self) -> bool:
        return self._done.is_set()

    @property
    def peer_close_code(self) -> int | None:
        return None  # an SSE client leaves without a code

    async def close(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """End the stream once: drop what is queued (counted), send the final
        ``error`` frame (:func:`final_frame`) and the last chunk; abort the
        connection if that has not gone out within ``close_timeout``."""
        if not self.session.begin_close(code, reason):
            return
        if self._space is not None:
            self._space.set()  # a replay waiting for room gives up
        loop = asyncio.get_running_loop()
        abort = loop.call_later(self._close_timeout, self.writer.abort)
        session = self.session
        self.writer.write(session.chunk(session.events([final_frame(code, reason, error)])))
        self._done.set()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self.response.write_eof()
            abort.cancel()
        except (TimeoutError, ConnectionError, RuntimeError):
            self.writer.abort()

    def abort(self, reason: str) -> None:
        super().abort(reason)
        self._done.set()

    def ping(self) -> None:
        """Write the keepalive ``ping`` event; while the transport takes it, the stream
        counts as alive (an SSE client sends nothing: no pong to wait for)."""
        if self.session.state is State.OPEN and self.writer.write(self.session.keepalive()):
            self.seen = asyncio.get_running_loop().time()
            self._wait_for_drain()
