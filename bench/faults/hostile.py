"""Numbers for the report: the sidecar against a fake server, default settings
(REDIS_SOCKET_TIMEOUT 5 s, REDIS_MAX_REPLY_BYTES 32 MiB)."""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from gunicorn_runner import Agent, wait_for
from test_redis_hostile import (
    FakeRedis,
    PeakGrowth,
    _timed_scrape,
    _try_status,
    endless_scan,
    huge_bulk,
)


def run(name, answer):
    tmp = tempfile.mkdtemp()
    with FakeRedis(answer, limit=30) as fake:
        a = Agent(
            tmp,
            ["--source", "redis"],
            env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(fake.port)},
        )
        try:
            wait_for(lambda: _try_status(a.port, "/health") == 200, 10)
            g = PeakGrowth(a.proc.pid)
            status, body, took = _timed_scrape(a.port)
            print(
                f"{name}: status {status} in {took:.2f} s, agent peak RSS growth {g.bytes() / 2**20:.1f} MB"
            )
            print("   ", body.decode().strip()[:300])
        finally:
            a.stop()


run("$2000000000 streamed", huge_bulk(64 * 1024, 0.0))
run("$2000000000 trickled 4 KB/5 ms", huge_bulk(4096, 0.005))
run("SCAN cursor never 0", endless_scan)
