"""Benchmark: what Redis Cluster costs the native client, next to one server.

1. A pipeline of N HSET (default 1,000) over 25 hash tags, as 25 instances'
   mirrors spread their nodes: median ms on one redis-server and on a real
   cluster of 3 primaries + 3 replicas (tests/redis_cluster.py); the cluster
   client splits the pipeline by node and serves the nodes one after another.
2. A primary SIGKILLed while a client writes 30 keys every 50 ms: seconds from
   the kill to the first write that succeeded whole, the longest call, and
   the calls that failed (with the socket timeout given).

    python bench/bench_cluster.py [--commands 1000] [--socket-timeout 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gunicorn_prometheus_exporter.backend.core.client import RedisClient  # noqa: E402
from redis_cluster import NODE_TIMEOUT_MS, RedisCluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402


def pipeline_ms(client: RedisClient, n: int, repeats: int = 30) -> float:
    commands = [("HSET", f"gunicorn:{{node-{i % 25}}}:view", f"f{i}", str(i)) for i in range(n)]
    client.pipeline_execute(commands)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        client.pipeline_execute(commands)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def failover(cluster: RedisCluster, socket_timeout: float) -> tuple[float, float, int]:
    client = RedisClient(cluster_nodes=cluster.seeds, socket_timeout=socket_timeout)
    keys = [f"failover:{i}" for i in range(30)]
    client.pipeline_execute([("SET", k, "0") for k in keys])
    killed = time.monotonic()
    cluster.kill_primary(keys[0])
    first_ok: float | None = None
    longest = 0.0
    failed = 0
    while time.monotonic() - killed < 3 * socket_timeout + 5:
        start = time.monotonic()
        try:
            client.pipeline_execute([("SET", k, "1") for k in keys])
            first_ok = first_ok or time.monotonic() - killed
        except Exception:
            failed += 1
        longest = max(longest, time.monotonic() - start)
        if first_ok is not None and time.monotonic() - killed > first_ok + 1:
            break
        time.sleep(0.05)
    return (first_ok if first_ok is not None else float("nan")), longest, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--socket-timeout", type=float, default=5.0)
    args = parser.parse_args()
    with RedisServer() as one:
        single = pipeline_ms(RedisClient(host="127.0.0.1", port=one.port), args.commands)
    with RedisCluster() as cluster:
        spread = pipeline_ms(RedisClient(cluster_nodes=cluster.seeds), args.commands)
        first_ok, longest, failed = failover(cluster, args.socket_timeout)
    print(f"| measure ({args.commands} HSET pipelined, 25 hash tags) | ms |")
    print("| --- | --- |")
    print(f"| one redis-server | {single:.2f} |")
    print(f"| cluster, 3 primaries | {spread:.2f} |")
    print()
    print(f"primary SIGKILLed (cluster-node-timeout {NODE_TIMEOUT_MS} ms, socket timeout ", end="")
    print(f"{args.socket_timeout:g} s): first whole write after {first_ok:.2f} s, ", end="")
    print(f"longest call {longest:.2f} s, failed calls {failed}")


if __name__ == "__main__":
    main()
