"""Networking helpers shared by the benchmarks and the tests (tests/support re-exports them).

In bench/ rather than tests/: ``python -m bench`` runs without tests/ on the path.
"""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (bound, then released: another process could take it
    before the caller does, so use it at once)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
