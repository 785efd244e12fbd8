"""Which processes of a multiprocess directory are gone: the file names are
read by the core (the same parsing as the mirror and the readers), liveness
is asked of the kernel."""

from __future__ import annotations

import os

from ... import _native


def is_alive(pid: int) -> bool:
    """Whether a process with this pid exists (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_processes(directory: str) -> list[int]:
    """The pids with files in ``directory`` whose processes are gone, this
    process never among them; in increasing order."""
    pids = (int(p) for p in _native.directory_processes(directory) if p.isdigit())
    return sorted(pid for pid in pids if pid != os.getpid() and not is_alive(pid))
