"""The demo (demo/run_demo.py, behind scripts/demo.sh) run for real: it ends
by itself with the counts of what it sent, a stop signal during --serve stops
Gunicorn's whole process group (workers and agent included), and a busy port
fails loudly, naming the port, with nothing started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_runner import ROOT, alive, children, clean_env, cmdline, is_agent, wait_for
from ports import free_ports

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

DEMO = ROOT / "demo" / "run_demo.py"
HOST = "127.0.0.1"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def processes_on(app_port: int, metrics_port: int) -> list[int]:
    """Live Gunicorn processes bound to app_port and agents serving metrics_port."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not alive(int(entry)):
            continue
        args = cmdline(int(entry))
        gunicorn = f"{HOST}:{app_port}" in args and "gunicorn" in args
        agent = (
            is_agent(int(entry))
            and "--port" in args
            and args[args.index("--port") + 1] == str(metrics_port)
        )
        if gunicorn or agent:
            found.append(int(entry))
    return found


class Demo:
    def __init__(
        self,
        tmp: Path,
        *args: str,
        ports: list[int] | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.port, self.metrics_port = ports or free_ports(2)
        self.out_path, self.err_path = tmp / "demo.out", tmp / "demo.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # A session of its own, like a terminal's: signals to its group reach the demo only.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *(program or [str(DEMO)]),
                    "--port",
                    str(self.port),
                    "--metrics-port",
                    str(self.metrics_port),
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=clean_env(),
                start_new_session=True,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the demo did not end within {timeout}s:\n{self.out}\n{self.err}"
            ) from None

    def left_behind(self) -> list[str]:
        out = [
            f"pid {pid}: {' '.join(cmdline(pid))}"
            for pid in processes_on(self.port, self.metrics_port)
        ]
        out += [
            f"port {port} listening" for port in (self.port, self.metrics_port) if listening(port)
        ]
        return out

    def kill(self) -> None:
        """Test cleanup: the demo and anything it left on its ports."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in processes_on(self.port, self.metrics_port):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.kill()
        print(
            f"demo on ports {demo.port}, {demo.metrics_port}:\n{demo.out}\n{demo.err}"
        )  # shown on a failure


def start(
    demos: list[Demo],
    tmp: Path,
    *args: str,
    ports: list[int] | None = None,
    program: list[str] | None = None,
) -> Demo:
    demo = Demo(tmp, *args, ports=ports, program=program)
    demos.append(demo)
    return demo


def excerpt_value(out: str, line_start: str) -> float:
    match = re.search(r"^  " + re.escape(line_start) + r" (\S+)$", out, re.MULTILINE)
    assert match, f"no line {line_start} in:\n{out}"
    return float(match.group(1))


def test_ends_by_itself_with_the_counts_it_sent(demos: list[Demo], tmp_path: Path) -> None:
    demo = start(demos, tmp_path)  # the defaults, as scripts/demo.sh runs it
    assert demo.wait() == 0, demo.err
    out = demo.out
    assert f"/metrics is served at http://{HOST}:{demo.metrics_port}/metrics" in out
    # demo/run_demo.py sends 40 x "/" (200), 5 x /missing (404), 3 x /fail (503), 2 x /boom (500)
    assert "Sent 50 requests: 40 answered 2xx, 5 4xx, 5 5xx; /metrics counted the same." in out
    requests = 'gunicorn_worker_requests_total{method="GET",status="%s"}'
    assert excerpt_value(out, requests % "2xx") == 40
    assert excerpt_value(out, requests % "4xx") == 5
    assert excerpt_value(out, requests % "5xx") == 5
    assert excerpt_value(out, 'gunicorn_worker_failed_requests_total{method="GET"}') == 5
    assert excerpt_value(out, 'gunicorn_worker_request_duration_seconds_count{method="GET"}') == 50
    assert excerpt_value(out, "gunicorn_master_workers") == 4
    assert out.count("  gunicorn_worker_memory_bytes{pid=") == 4
    assert "Stopped Gunicorn and its metrics agent." in out
    assert demo.left_behind() == []


def serving(demo: Demo) -> list[int]:
    """Waits for --serve to be up; the demo's Gunicorn master, workers and agent."""
    wait_for(
        lambda: "Serving until Ctrl-C." in demo.out or demo.process.poll() is not None,
        timeout=60,
        message=lambda: f"the demo serving:\n{demo.out}\n{demo.err}",
    )
    assert demo.process.poll() is None, demo.err
    masters = [pid for pid in children(demo.process.pid) if "gunicorn" in cmdline(pid)]
    assert len(masters) == 1
    group = [masters[0], *children(masters[0])]
    assert len(group) == 4 + 1 + 1, [cmdline(pid) for pid in group]  # master, 4 workers, agent
    assert sum(map(is_agent, group)) == 1
    assert all(os.getpgid(pid) == masters[0] for pid in group)  # a group of its own, not the demo's
    assert os.getpgid(masters[0]) != os.getpgid(demo.process.pid)
    assert listening(demo.port) and listening(demo.metrics_port)
    return group


@pytest.mark.parametrize(
    "sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_a_stop_signal_during_serve_stops_the_whole_group(
    demos: list[Demo], tmp_path: Path, sig: signal.Signals
) -> None:
    demo = start(demos, tmp_path, "--serve")
    group = serving(demo)
    os.killpg(demo.process.pid, sig)  # as a terminal does: to the demo's process group
    assert demo.wait(30) == 128 + sig
    wait_for(lambda: not any(alive(pid) for pid in group), timeout=10, message="the group gone")
    assert demo.left_behind() == []


def test_a_killed_demo_takes_gunicorn_with_it(demos: list[Demo], tmp_path: Path) -> None:
    demo = start(demos, tmp_path, "--serve")
    group = serving(demo)
    demo.process.kill()  # no cleanup code runs: the kernel's parent-death signal stops Gunicorn
    demo.process.wait()
    wait_for(
        lambda: not any(alive(pid) for pid in group),
        timeout=30,
        message=lambda: f"the group gone: {demo.left_behind()}",
    )
    wait_for(lambda: demo.left_behind() == [], timeout=10, message=lambda: str(demo.left_behind()))


@pytest.mark.parametrize("busy", ["app", "metrics"])
def test_a_busy_port_fails_naming_it(demos: list[Demo], tmp_path: Path, busy: str) -> None:
    port, metrics_port = free_ports(2)
    taken = port if busy == "app" else metrics_port
    with socket.socket() as holder:
        holder.bind((HOST, taken))
        holder.listen()
        demo = start(demos, tmp_path, "--seconds", "0", ports=[port, metrics_port])
        assert demo.wait(30) != 0
        assert f"port {taken} " in demo.err and "busy" in demo.err, demo.err
        assert "/metrics is served" not in demo.out
        assert processes_on(port, metrics_port) == []
        assert not listening(metrics_port if busy == "app" else port)


def test_a_second_demo_on_the_ports_of_a_running_one_fails(
    demos: list[Demo], tmp_path: Path
) -> None:
    (tmp_path / "first").mkdir()
    first = start(demos, tmp_path / "first", "--serve")
    group = serving(first)
    for ports, taken in (
        ([first.port, free_ports(1)[0]], first.port),
        ([free_ports(1)[0], first.metrics_port], first.metrics_port),
    ):
        second = start(demos, tmp_path, "--seconds", "0", ports=ports)
        assert second.wait(30) != 0
        assert f"port {taken} " in second.err and "busy" in second.err, second.err
        assert "/metrics is served" not in second.out
    assert all(alive(pid) for pid in group)  # the running one is left alone
    os.killpg(first.process.pid, signal.SIGTERM)
    assert first.wait(30) == 128 + signal.SIGTERM
    assert first.left_behind() == []


# The demo with its check before starting skipped, so that the port is found busy by Gunicorn or the agent.
WITHOUT_CHECK = (
    "import importlib.util, sys; spec = importlib.util.spec_from_file_location('run_demo', sys.argv[1]); "
    "demo = importlib.util.module_from_spec(spec); spec.loader.exec_module(demo); "
    "demo.check_free = lambda *args: None; del sys.argv[1]; sys.exit(demo.main())"
)


@pytest.mark.parametrize("busy", ["app", "metrics"])
def test_a_port_taken_after_the_check_fails_naming_it(
    demos: list[Demo], tmp_path: Path, busy: str
) -> None:
    """Gunicorn's or the agent's own bind failure, read from their log, stops
    the demo and the group."""
    port, metrics_port = free_ports(2)
    taken = port if busy == "app" else metrics_port
    with socket.socket() as holder:
        holder.bind((HOST, taken))
        holder.listen()
        demo = start(
            demos,
            tmp_path,
            "--seconds",
            "0",
            ports=[port, metrics_port],
            program=["-c", WITHOUT_CHECK, str(DEMO)],
        )
        assert demo.wait(60) != 0
        assert f"port {taken} " in demo.err and "cannot bind" in demo.err, demo.err
        assert "/metrics is served" not in demo.out
        wait_for(
            lambda: processes_on(port, metrics_port) == [],
            timeout=10,
            message=lambda: str(processes_on(port, metrics_port)),
        )
        assert not listening(metrics_port if busy == "app" else port)
