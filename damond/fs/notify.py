"""systemd readiness (sd_notify) without a dependency: one datagram to $NOTIFY_SOCKET.

The FUSE `init` operation runs once the mount exists, which is exactly when a
Type=notify unit's dependants may start; `STOPPING=1` goes out on the way down.
"""
from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run under a notify unit."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True
