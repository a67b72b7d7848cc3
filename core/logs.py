"""How every ``clearpath`` process logs: readable text, or one JSON object a line.

``text`` (the default) is what a person reads in a terminal::

    2025-01-31 12:00:00,123 INFO clearpath.bridge: connect 3f2a… /ws/map from 10.0.0.7

``json`` is what a log pipeline reads: one object per line, made by
python-json-logger's ``JsonFormatter``, with ``time`` (RFC 3339, UTC),
``level``, ``logger`` and ``message``, plus the structured fields a call gives
with ``extra=`` (``event``, ``connection_id``, ``topic``, ...), and an exception
as one string field, ``exc_info``; a field not known (None) is left out.

Filter on ``event``. The bridge's (``clearpath.bridge*`` loggers):

==================  ===========================================================
``connect``         connection_id, endpoint, remote
``authenticated``   connection_id, user (INFO with auth on, else DEBUG)
``refresh``         connection_id, user (DEBUG)
``subscribe``       connection_id, topic (a message) or topics (at connect)
``unsubscribe``     connection_id, topic
``resume``          connection_id, topic (live again after a replay)
``disconnect``      connection_id, endpoint, remote, user, code, reason,
                    duration_s, frames_sent, frames_dropped
``auth_failed``     reason (unauthorized, auth_timeout, operator_unauthorized),
                    remote, connection_id, code (the close code), error
``refused``         reason (origin, max_connections, per_address, per_identity,
                    token_expired, abuse, operator_forbidden), remote, ...
``overflow``        connection_id, queued_bytes, topics (caught up from history)
``slow_consumer``   connection_id, remote, user, queued_bytes (closed, 1013)
``no_pong``, ``protocol_error``, ``message_error``, ``resume_failed``
``upstream_state``  state (connected, reconnecting), core, error
``upstream_retry``  core, attempt, delay_s, error
``upstream_gap``    topic, reason, core
``dispatch``        event_id, topic, offset, epoch, sockets (DEBUG only)
``listening``       url, core (``worker_listening``: worker, url)
==================  ===========================================================

The core's: ``listening`` (address), ``stopped``, ``broker_state`` (state: up,
down; from the node and from the Redis broker), ``broker_error`` (doing, error).

Tokens are never logged by the code; as a second line of defence both formats
blank anything shaped like a JWT or a ``token=`` query value (:func:`redact`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

__all__ = [
    "FORMATS",
    "FORMAT_ENV",
    "TEXT_FORMAT",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "formatter",
    "redact",
    "resolve_format",
    "resolve_level",
]

#: The log formats, the first the default.
FORMATS = ("text", "json")
#: The variable naming the format when ``--log-format`` is not given.
FORMAT_ENV = "CLEARPATH_LOG_FORMAT"
#: The text format (what ``clearpath`` has always printed).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A JWT (three base64url parts, the first a JSON header: "eyJ") and a token in a URL.
_SECRETS = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?<=token=)[^&\s\"'\\]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every JWT and ``token=`` value replaced by ``[redacted]``."""
    return _SECRETS.sub(REDACTED, text) if ("eyJ" in text or "token=" in text) else text


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(_JsonFormatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``,
    the record's ``extra=`` fields (those not None), and ``exc_info`` (a string)
    with an exception."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # A field not known (None: a user before authentication) is left out.
        return {key: value for key, value in log_data.items() if value is not None}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (one of :data:`FORMATS`); ValueError otherwise."""
    if log_format == "text":
        return TextFormatter()
    if log_format == "json":
        return JsonFormatter()
    raise ValueError(f"expected a log format of {' or '.join(FORMATS)}, not {log_format!r}")


def resolve_format(given: str | None) -> str:
    """The format to use: ``given`` (``--log-format``), else ``$CLEARPATH_LOG_FORMAT``,
    else ``text``. ValueError naming the variable when it holds something else."""
    if given:
        formatter(given)  # checked
        return given
    value = os.environ.get(FORMAT_ENV, "").strip().lower()
    if not value:
        return FORMATS[0]
    if value not in FORMATS:
        raise ValueError(f"${FORMAT_ENV}: expected {' or '.join(FORMATS)}, not {value!r}")
    return value


def resolve_level(given: str) -> int:
    """The level named ``given`` (DEBUG, INFO, WARNING, ERROR, CRITICAL; any case);
    ValueError otherwise."""
    level = logging.getLevelNamesMapping().get(given.strip().upper())
    if level is None:
        raise ValueError(f"expected a log level DEBUG, INFO, WARNING or ERROR, not {given!r}")
    return level


def configure(level: str = "INFO", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (stderr) in ``log_format``.

    As :func:`logging.basicConfig`, which it calls: nothing changes when the root
    logger already has a handler (a second call, or a test runner's capture).
    ValueError for a bad level or format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=resolve_level(level), handlers=[handler])
