"""Safe defaults: a process with authentication off listens on loopback only.

The embedded default (``make run``) runs with auth off on 127.0.0.1 and says so
loudly at start; binding any other address without auth refuses to start unless
the operator asked for it with ``--insecure``.
"""

from __future__ import annotations

import ipaddress
import logging

__all__ = ["check_exposure", "is_loopback", "warn_if_open"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: assume it is reachable


def check_exposure(host: str, *, auth: bool, insecure: bool) -> None:
    """ValueError when ``host`` is reachable from other machines, auth is off and
    ``insecure`` was not given."""
    if not auth and not insecure and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} with authentication off: configure auth "
            "(auth_secret, auth_public_key or auth_jwks) or pass --insecure"
        )


def warn_if_open(log: logging.Logger, what: str, host: str, *, auth: bool) -> None:
    """Log loudly, at start, that ``what`` serves everyone who can reach ``host``."""
    if not auth:
        scope = "this machine" if is_loopback(host) else "EVERY MACHINE THAT REACHES IT"
        log.warning(
            "AUTHENTICATION IS OFF: %s on %s lets any process of %s read and publish "
            "every topic. Configure auth_secret/auth_public_key/auth_jwks for production.",
            what,
            host,
            scope,
        )
