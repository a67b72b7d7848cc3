"""What the kernel holds for a load-generator socket."""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios

__all__ = ["unread_bytes"]


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes waiting in the socket's kernel receive buffer (FIONREAD); 0 once closed."""
    if transport is None or transport.is_closing():
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])
