"""Slow Redis (DEBUG SLEEP) and Redis SIGKILLed + restarted empty, under load.

usage: python bench/faults/load.py sleep|nosleep|kill"""

import http.client
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from gunicorn_runner import Agent, Gunicorn, parse, redis_command, scrape_text, value
from redis_server import RedisServer


def loop(port, n, latencies):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        latencies.append(time.perf_counter() - t)
        assert r.status == 200
    conn.close()


def requests_on(agent):
    return value(parse(scrape_text(agent.port)), "gunicorn_worker_requests_total")


mode = sys.argv[1]


class DebugRedis(RedisServer):
    def _args(self):
        return [*super()._args(), "--enable-debug-command", "yes"]


server = DebugRedis()
tmp = tempfile.mkdtemp()
os.mkdir(os.path.join(tmp, "a"))
env = {
    **server.env(),
    "REDIS_INSTANCE_ID": "hostA",
    "REDIS_FLUSH_INTERVAL": "0.2",
    "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, "a"),
}
sidecar = Agent(
    tmp, ["--source", "redis"], env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
)
g = Gunicorn(tmp, env=env, wait_ready=False, name="hostA")
try:
    g.wait_serving()
    lat = []
    if mode in ("sleep", "nosleep"):
        loop(g.port, 200, [])  # warm
        t = threading.Thread(target=loop, args=(g.port, 4000, lat))
        t.start()
        time.sleep(0.3)
        for _ in range(3):
            if mode == "sleep":
                redis_command(server.port, "DEBUG", "SLEEP", "1")
            else:
                time.sleep(1)
        t.join()
        print(
            f"{'DEBUG SLEEP 1 x3' if mode == 'sleep' else 'no DEBUG SLEEP'} during 4000 requests: worst {max(lat) * 1000:.1f} ms, median {sorted(lat)[len(lat) // 2] * 1000:.2f} ms"
        )
        total = 4200
    else:
        n = 40000
        threads = [threading.Thread(target=loop, args=(g.port, n // 4, lat)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        server.process = None
        time.sleep(2)
        server.start()  # empty
        for t in threads:
            t.join()
        print(f"{len(lat)} requests; Redis SIGKILLed at 3 s, restarted empty 2 s later")
        total = n
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got = requests_on(sidecar)
            if got == total:
                break
        except Exception as e:
            got = repr(e)
        time.sleep(0.2)
    print(f"sidecar shows {got} of {total}")
finally:
    g.stop()
    sidecar.stop()
    server.close()
