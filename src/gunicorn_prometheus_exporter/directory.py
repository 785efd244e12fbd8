"""The multiprocess directory of a Gunicorn master: where it is, getting it
ready, removing it when it was ours, and what it says about the liveness
of processes (a worker's exit reason, an old master's end).

It must be ready before the app is imported: with ``--preload`` Gunicorn
imports the app in the master before the first hook runs, and metrics the
app creates at import time must already get native values. So the directory
is prepared when our package is imported while Gunicorn loads its
configuration (``-c python:gunicorn_prometheus_exporter.gunicorn_config``,
or a config file of one's own that imports anything of ours), and again,
idempotently, by ``on_starting``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .multiprocess import mark_process_dead

# Passed to the new master of a USR2 upgrade, which then owns the directory.
OWNED_DIRECTORY = "GUNICORN_PROMETHEUS_OWNED_DIR"

# A worker leaves its exit reason in ".exit-PID" for the master, which
# reaps it: only the worker knows why it left.
_EXIT_MARKER = ".exit-"
# The Redis mirror's node id and retire request of the run that used the
# directory (view_mirror.hpp): a run that starts from empty files is a new node.
_RUN_FILES = (".gpe-node", ".gpe-retire")


def make_private_directory() -> str:
    """A new private directory, in memory (/dev/shm) where possible; named in
    PROMETHEUS_MULTIPROC_DIR so that workers and the agent find it."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix=f"gunicorn-prometheus-{os.getpid()}-", dir=base)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _is_stale_file(name: str, own_pid: int) -> bool:
    """Files of an earlier run: every value file and exit marker, except this
    process's own (values the master created already, e.g. under --preload)."""
    if name.startswith(_EXIT_MARKER) or name in _RUN_FILES:
        return True
    if not name.endswith(".db"):
        return False
    return name.rsplit("_", 1)[-1] not in (f"{own_pid}.db", f"{own_pid}-native.db")


@dataclass
class _Prepared:
    directory: str
    owned: bool  # created by us: removed when the master leaves
    creator: int  # the pid that prepared it (workers inherit this state)
    released: bool = False  # removed, or handed to a USR2 successor


_prepared: _Prepared | None = None  # this master's directory, once prepared


def prepare(cleanup_files: bool) -> str:
    """Resolve (creating a private one if PROMETHEUS_MULTIPROC_DIR is unset)
    and prepare the directory once per master; returns it. During a USR2
    upgrade (GUNICORN_PID set) the old master's workers still write here, so
    nothing is removed."""
    global _prepared
    if _prepared is not None:
        # Prepared already; from another pid only if Gunicorn daemonized
        # after loading its configuration (workers never prepare).
        _prepared.creator = os.getpid()
        return _prepared.directory
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    if directory is None:
        directory = make_private_directory()
        os.environ[OWNED_DIRECTORY] = directory
    owned = os.environ.get(OWNED_DIRECTORY) == directory
    os.makedirs(directory, exist_ok=True)
    upgrade = "GUNICORN_PID" in os.environ
    if cleanup_files and not upgrade:
        for name in os.listdir(directory):
            if _is_stale_file(name, os.getpid()):
                os.unlink(os.path.join(directory, name))
    _prepared = _Prepared(directory, owned, os.getpid())
    if owned:
        atexit.register(_remove_if_left)
    return directory


def replace_private_directory(directory: str) -> None:
    """A YAML file named a directory after we created a private one (its
    loader runs after our import): the named one is used instead."""
    global _prepared
    if _prepared is not None and _prepared.owned and _prepared.creator == os.getpid():
        shutil.rmtree(_prepared.directory, ignore_errors=True)
        os.environ.pop(OWNED_DIRECTORY, None)
        _prepared = None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def is_private(directory: str | None) -> bool:
    """Whether ``directory`` is the private one this process created."""
    return _prepared is not None and _prepared.owned and _prepared.directory == directory


def owns_current() -> bool:
    """Whether this master prepared a private directory of its own."""
    return _prepared is not None and _prepared.owned and _prepared.creator == os.getpid()


def release(successor: bool) -> None:
    """The master is leaving: remove a directory of ours, unless a USR2
    successor carries on with it."""
    if _prepared is None or _prepared.creator != os.getpid() or _prepared.released:
        return
    _prepared.released = True
    if _prepared.owned and not successor:
        shutil.rmtree(_prepared.directory, ignore_errors=True)


def _remove_if_left() -> None:
    # Gunicorn can exit before on_exit (a busy port, a broken app): the
    # directory we created must not outlive the master. Workers inherit this
    # handler and run it too (they leave by sys.exit): the pid check keeps
    # them from removing it.
    release(successor=False)


def loading_gunicorn_config() -> bool:
    """Whether Gunicorn is loading its configuration right now (we are being
    imported by a config module or file, or by a hook named as a string)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name in ("load_config_from_module_name_or_filename", "load_config") and (
            os.sep + "gunicorn" + os.sep in code.co_filename
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def prepare_master() -> str:
    """For a Gunicorn master: the directory ready and native values on."""
    from .config import config
    from .native_values import enable_native_values

    directory = prepare(config.cleanup_db_files)
    enable_native_values(directory)
    return directory


def _exit_marker(directory: str, pid: int) -> Path:
    return Path(directory) / f"{_EXIT_MARKER}{pid}"


def report_exit(directory: str, pid: int, reason: str) -> None:
    """A worker leaving says why (for its master's restart count)."""
    try:
        _exit_marker(directory, pid).write_text(reason)
    except OSError:
        pass  # then the master counts a crash


def take_exit_reason(directory: str, pid: int) -> str | None:
    """Why worker ``pid`` left, as it reported it (None if it did not)."""
    marker = _exit_marker(directory, pid)
    reason = None
    try:
        reason = marker.read_text().strip() or None
        marker.unlink()
    except OSError:
        pass
    return reason


def archive_when_gone(pid: int, directory: str) -> None:
    """After a USR2 upgrade: when the old master ``pid`` is gone, its live
    gauges go (its files are archived), watched by a daemon thread."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(1)
        mark_process_dead(pid, directory)

    threading.Thread(target=watch, name="gunicorn-prometheus-old-master", daemon=True).start()
