"""End to end: a Gunicorn binary upgrade (USR2) keeps /metrics up.

The operator's sequence: USR2 to the master, which forks and re-executes a
new master (GUNICORN_PID set, pidfile PIDFILE.2, its own agent sharing the
metrics port with SO_REUSEPORT, started with --upgrade); once the new master
is ready, WINCH (ignored unless daemonized) and TERM to the old one; the new
master promotes itself (PIDFILE.2 renamed to PIDFILE). Throughout, a scraper
polls /metrics every 100 ms: it may never go unanswered for more than 2 s, and
the request counts it sees may never go backwards. Afterwards the new
master's agent alone serves /metrics, the counts still hold every request
(before, during and after the upgrade), and the old master's files are
archived: only the new master's workers are left in the gauges.

Run with the directory the exporter makes by itself (the default) and with a
PROMETHEUS_MULTIPROC_DIR chosen by the user.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gunicorn_runner import (
    CONFIG,
    DEMO_DIR,
    LIVEALL,
    Gunicorn,
    alive,
    children,
    clean_env,
    free_port,
    is_agent,
    parse,
    pids_of,
    scrape_text,
    value,
    wait_for,
)

REQUESTS = "gunicorn_worker_requests_total"
MAX_GAP = 2.0  # seconds /metrics may stay unanswered
REASONS = ("graceful", "timeout", "crash", "max_requests", "reload", "scale_down")


def gunicorn_command() -> list[str]:
    """The command the master is started with, which USR2 runs again.

    Gunicorn re-executes ``sys.executable`` with ``sys.argv``: started as
    ``python -m gunicorn``, sys.argv[0] is gunicorn/__main__.py, and the new
    master runs that file as a script, with the gunicorn package directory
    first on sys.path, where gunicorn/http shadows the standard library's
    http (prometheus_client imports http.server): the new master dies at
    import. Operators start the console script, and so does this test.
    """
    script = Path(sys.executable).parent / "gunicorn"
    if not script.exists():
        pytest.skip(f"no gunicorn console script beside {sys.executable}")
    return [sys.executable, str(script)]


def control_socket_args() -> list[str]:
    """Gunicorn >= 25 opens a control socket in the working directory: not here."""
    from gunicorn.config import KNOWN_SETTINGS

    return (
        ["--no-control-socket"]
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
        else []
    )


class UpgradableGunicorn(Gunicorn):
    """gunicorn_runner's Gunicorn, started with the console script and a pidfile."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, workers: int = 2) -> None:
        self.tmp = Path(tmp)
        self.workers = workers
        self.port = free_port()
        self.metrics_port = free_port()
        self.pidfile = self.tmp / "gunicorn.pid"
        self.log_path = self.tmp / f"gunicorn-{self.port}.log"
        self.env = clean_env()
        self.env.update(
            {
                "PROMETHEUS_METRICS_PORT": str(self.metrics_port),
                "PROMETHEUS_BIND_ADDRESS": "127.0.0.1",
                "GUNICORN_PROMETHEUS_SAMPLE_INTERVAL": "0.2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env or {})
        self.args = [
            *gunicorn_command(),
            "-c",
            CONFIG,
            "-w",
            str(workers),
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(DEMO_DIR),
            *control_socket_args(),
            "--graceful-timeout",
            "1",
            "--pid",
            str(self.pidfile),
            "app:app",
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(self.tmp),
        )
        self.pid = self.proc.pid
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def directories(self) -> set[str]:
        """The metrics directories the agents said they serve."""
        return set(re.findall(r"serving (/\S+) on", self.log()))


def workers_of(master: int) -> list[int]:
    return [p for p in children(master) if not is_agent(p)]


def agents_of(master: int) -> list[int]:
    return [p for p in children(master) if is_agent(p)]


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def listens_on(pid: int, port: int) -> bool:
    """Whether process pid holds a listening TCP socket on port."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                return True
    return False


def send(g: Gunicorn, n: int, path: str = "/", status: int = 200) -> None:
    for _ in range(n):
        assert g.status(path) == status


class Scraper(threading.Thread):
    """Polls /metrics every 100 ms, records when it answered and the total
    request count it showed."""

    def __init__(self, port: int) -> None:
        super().__init__(name="scraper", daemon=True)
        self.port = port
        self.stop_event = threading.Event()
        self.answers: list[tuple[float, float]] = []  # (time, requests total)
        self.errors: list[tuple[float, str]] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                samples = parse(scrape_text(self.port, timeout=1.0))
                self.answers.append((time.monotonic(), value(samples, REQUESTS)))
            except Exception as e:  # noqa: BLE001 - recorded, checked by the test
                self.errors.append((time.monotonic(), repr(e)))
            self.stop_event.wait(0.1)
        self.stopped_at = time.monotonic()

    def finish(self) -> None:
        self.stop_event.set()
        self.join(10)

    def longest_gap(self) -> float:
        times = [self.started_at, *(t for t, _ in self.answers), self.stopped_at]
        return max(b - a for a, b in itertools.pairwise(times))

    def decreases(self) -> list[tuple[float, float]]:
        totals = [total for _, total in self.answers]
        return [(a, b) for a, b in itertools.pairwise(totals) if b < a]


@pytest.mark.parametrize("directory", ["private", "user"])
def test_usr2_upgrade_keeps_the_endpoint(tmp_path: Path, directory: str) -> None:
    env = {}
    if directory == "user":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "multiproc")
    with UpgradableGunicorn(tmp_path, env=env) as g:
        old = g.pid
        wait_for(lambda: read_pid(g.pidfile) == old, 5, message="the pidfile")
        old_workers = set(workers_of(old))
        old_agents = agents_of(old)
        assert len(old_agents) == 1

        send(g, 8)
        send(g, 2, "/missing", 404)
        g.wait_metrics(lambda s: value(s, REQUESTS) == 10, what="10 requests before the upgrade")

        scraper = Scraper(g.metrics_port)
        scraper.start()
        try:
            g.signal(signal.SIGUSR2)
            pidfile2 = Path(f"{g.pidfile}.2")
            new = wait_for(
                lambda: read_pid(pidfile2),
                15,
                message=lambda: f"the new master's pidfile {pidfile2}:\n{g.log()[-3000:]}",
            )
            assert new != old
            assert parent_of(new) == old  # Gunicorn forks the new master from the old one
            assert read_pid(g.pidfile) == old

            def new_master_ready() -> bool:
                assert alive(new), f"the new master died:\n{g.log()[-3000:]}"
                workers = workers_of(new)
                agents = agents_of(new)
                return (
                    len(workers) == 2 and len(agents) == 1 and listens_on(agents[0], g.metrics_port)
                )

            wait_for(
                new_master_ready,
                20,
                message=lambda: (
                    f"the new master's 2 workers and its agent on the port:\n{g.log()[-3000:]}"
                ),
            )
            new_workers = set(workers_of(new))
            new_agent = agents_of(new)[0]
            # the old master and its agent are still there: two agents share the port
            assert alive(old) and alive(old_agents[0]) and listens_on(old_agents[0], g.metrics_port)
            assert set(workers_of(old)) == old_workers | {
                new
            }  # the new master is the old one's child

            # both masters' workers take requests now
            send(g, 4)
            time.sleep(0.5)  # a few scrapes, spread over both agents

            # the operator stops the old master
            os.kill(old, signal.SIGWINCH)
            os.kill(old, signal.SIGTERM)
            g.proc.wait(15)
            wait_for(lambda: not alive(old_agents[0]), 5, message="the old master's agent to exit")
            for pid in old_workers:
                wait_for(lambda pid=pid: not alive(pid), 5, message=f"old worker {pid} to exit")

            # the new master is promoted: PIDFILE.2 becomes PIDFILE
            wait_for(
                lambda: read_pid(g.pidfile) == new and not pidfile2.exists(),
                10,
                message=lambda: f"the new master's promotion:\n{g.log()[-3000:]}",
            )
            assert alive(new_agent) and listens_on(new_agent, g.metrics_port)
            assert set(workers_of(new)) == new_workers

            send(g, 5)
            send(g, 1, "/missing", 404)
            time.sleep(0.5)
        finally:
            scraper.finish()

        # /metrics never stayed unanswered long, and its counts never went backwards
        assert scraper.answers, scraper.errors[:5]
        assert scraper.longest_gap() <= MAX_GAP, (scraper.longest_gap(), scraper.errors[:10])
        # both masters' agents serve the same directory (PROMETHEUS_MULTIPROC_DIR
        # passed on to the new master), or the counts split between them
        assert len(g.directories()) == 1, (
            f"the old and the new master's agents serve different directories: {sorted(g.directories())}; "
            f"totals seen by the scraper: {[total for _, total in scraper.answers]}"
        )
        assert scraper.decreases() == [], (
            f"the request count went backwards between scrapes during the upgrade: {scraper.decreases()[:10]}"
        )

        # the new master's agent alone serves now: every request is counted,
        # the old master's (archived) and the new one's, and counting goes on
        def settled(samples: list) -> bool:
            return (
                value(samples, REQUESTS) >= 20
                and value(samples, "gunicorn_master_workers") == 2
                and pids_of(samples, "gunicorn_worker_memory_bytes") - {new} == new_workers
            )

        samples = g.wait_metrics(
            settled,
            timeout=10,
            what="20 requests and only the new master's 2 workers "
            f"(agents served {sorted(g.directories())})",
        )
        assert value(samples, REQUESTS, method="GET", status="2xx") == 17
        assert value(samples, REQUESTS, method="GET", status="4xx") == 3
        assert value(samples, REQUESTS) == 20
        for name in LIVEALL:
            assert pids_of(samples, name) - {new} == new_workers, name
        # the old master's counters are archived, not lost
        assert value(samples, "gunicorn_master_signals_total", signal="USR2") == 1
        assert value(samples, "gunicorn_master_signals_total", signal="TERM") == 1
        # the old master's workers stopped with it: no restart
        assert {
            r: value(samples, "gunicorn_master_worker_restart_total", reason=r) for r in REASONS
        } == dict.fromkeys(REASONS, 0.0)

        send(g, 3)
        g.wait_metrics(lambda s: value(s, REQUESTS) == 23, what="3 more requests counted")

        # the new master leaves cleanly: its agent stops, no directory is left behind
        directories = g.directories()
        os.kill(new, signal.SIGTERM)
        wait_for(
            lambda: not alive(new),
            15,
            message=lambda: f"the new master to exit:\n{g.log()[-3000:]}",
        )
        wait_for(lambda: not alive(new_agent), 5, message="the new agent to exit")
        if directory == "private":
            assert directories
            left = sorted(d for d in directories if os.path.exists(d))
            assert left == [], f"metrics directories left behind after both masters exited: {left}"
        else:
            assert directories == {env["PROMETHEUS_MULTIPROC_DIR"]}
