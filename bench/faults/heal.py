"""FLUSHALL with the connection up: time until a sidecar shows every request again."""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from gunicorn_runner import Agent, Gunicorn, parse, redis_command, scrape_text, value
from redis_server import RedisServer

for ttl in ("0", None):
    server = RedisServer()
    tmp = tempfile.mkdtemp()
    os.mkdir(os.path.join(tmp, "a"))
    env = {
        **server.env(),
        "REDIS_INSTANCE_ID": "hostA",
        "REDIS_FLUSH_INTERVAL": "1",
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, "a"),
    }
    if ttl:
        env["REDIS_TTL_SECONDS"] = ttl
    sidecar = Agent(
        tmp, ["--source", "redis"], env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
    )
    g = Gunicorn(tmp, env=env, wait_ready=False, name="hostA")
    try:
        g.wait_serving()
        for _ in range(8000):
            g.status("/")

        def n(sidecar=sidecar):
            try:
                return value(parse(scrape_text(sidecar.port)), "gunicorn_worker_requests_total")
            except Exception:
                return None

        while n() != 8000:
            time.sleep(0.05)
        redis_command(server.port, "FLUSHALL")
        t = time.monotonic()
        while n() != 8000 and time.monotonic() - t < 30:
            time.sleep(0.02)
        print(
            f"REDIS_TTL_SECONDS={ttl or 'default (300)'}, flush interval 1 s: sidecar shows {n()} of 8000 again {time.monotonic() - t:.2f} s after FLUSHALL"
        )
    finally:
        g.stop()
        sidecar.stop()
        server.close()
