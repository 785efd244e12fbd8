"""Free loopback ports for the servers a test starts.

The kernel may give the same free port to two ``bind(..., 0)`` calls in a
row once the first socket is closed, so a test that asks for an app port and
then a metrics port (or two instances' ports) could get one port twice and
scrape the wrong server. Ports handed out here are never handed out again
by this process: that set is module state for that reason.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that nothing listens on and that this process has
    not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports as free_port gives them."""
    return [free_port() for _ in range(n)]
