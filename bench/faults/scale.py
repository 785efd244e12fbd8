"""200,000 series: one mirror pass into Redis, then a sidecar scrape (default limits).

usage: python bench/faults/scale.py [series] [ttl]"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from gunicorn_runner import Agent, http_get
from redis_server import RedisServer

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ttl = sys.argv[2] if len(sys.argv) > 2 else "300"
server = RedisServer()
tmp = tempfile.mkdtemp()
try:
    d = os.path.join(tmp, "mp")
    os.mkdir(d)
    env = {
        **server.env(),
        "PROMETHEUS_MULTIPROC_DIR": d,
        "REDIS_FLUSH_INTERVAL": "600",
        "REDIS_TTL_SECONDS": ttl,
        "REDIS_INSTANCE_ID": "h",
    }
    for k in [k for k in os.environ if k.startswith(("REDIS_", "PROMETHEUS_"))]:
        del os.environ[k]
    os.environ.update(env)
    from prometheus_client import Counter

    from gunicorn_prometheus_exporter.backend import RedisStorageManager

    m = RedisStorageManager()
    assert m.setup()
    c = Counter("items", "Items.", ["i"], registry=None)
    for i in range(N):
        c.labels(str(i)).inc()
    t = time.monotonic()
    assert m._mirror.pass_now()
    print(f"first pass of {N} series: {time.monotonic() - t:.2f} s")
    a = Agent(
        tmp, ["--source", "redis"], env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
    )
    try:
        for _ in range(100):
            try:
                if http_get(a.port, "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        for label in ("cold", "steady"):
            t = time.monotonic()
            status, _, body = http_get(a.port, "/metrics", timeout=60)
            lines = sum(1 for line in body.splitlines() if line.startswith(b"items_total"))
            print(
                f"sidecar scrape ({label}): status {status}, {lines} items_total lines, {time.monotonic() - t:.2f} s"
            )
        print("agent log:", a.log()[-500:])
    finally:
        a.stop()
    m.teardown()
finally:
    server.close()
