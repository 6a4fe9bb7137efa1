"""``make cluster``: a whole cluster on this machine, for development and demos.

Starts, on loopback ports with data in a temporary directory: Redis, PostgreSQL, two
``captions asr-serve`` (the Kyutai streaming protocol, backed by Whisper here), two
``captions serve`` nodes captioning through both servers as one pool (``--engine
kyutai-remote --kyutai-url A --kyutai-url B``) and HAProxy with deploy/haproxy.cfg. Prints the entry
point and join links, and stops everything on Ctrl-C. Each service comes from the
Debian packages that scripts/system-deps.sh installs.

    python deploy/cluster.py [--room NAME] [--embedded]   (--embedded: Whisper in each node)
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.cluster import NODE_IDS, LocalCluster  # noqa: E402
from evaluation.services import free_port, missing_services, terminate, wait_for_port  # noqa: E402
from sfu.tokens import Grants, mint_token  # noqa: E402


def start_asr_server(port: int, key: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "asr-serve", "--port", str(port), "--api-key", key],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--room", default="lobby", help="room of the printed links")
    parser.add_argument("--embedded", action="store_true", help="Whisper inside each node")
    args = parser.parse_args()
    missing = missing_services()
    if missing:
        print(f"missing Debian packages: {', '.join(missing)} (run scripts/system-deps.sh)")
        return 1
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    key = secrets.token_urlsafe(24)
    asr: list[subprocess.Popen[bytes]] = []
    cluster = LocalCluster(nodes_count=2)
    try:
        asr_urls: list[str] = []
        if not args.embedded:
            for i in range(2):
                port = free_port()
                asr.append(start_asr_server(port, key, cluster.directory / f"asr-{i + 1}.log"))
                wait_for_port(port, timeout=120, what=f"asr-serve {i + 1}")
                asr_urls.append(f"ws://127.0.0.1:{port}/api/asr-streaming")
            for k, node_id in enumerate(NODE_IDS):
                # Both servers form each node's pool, each node starting from another one.
                pool = asr_urls[k:] + asr_urls[:k]
                urls = [arg for url in pool for arg in ("--kyutai-url", url)]
                cluster.per_node_args[node_id] = [
                    "--engine",
                    "kyutai-remote",
                    *urls,
                    "--kyutai-api-key",
                    key,
                ]
        print("starting Redis, PostgreSQL, two nodes and HAProxy...", flush=True)
        cluster.start()
        host = mint_token(cluster.secret, Grants.for_role(args.room, "Host", "host"), ttl=86400)
        guest = mint_token(cluster.secret, Grants.for_role(args.room, "Guest", "guest"), ttl=86400)
        print(f"entry point (HAProxy): {cluster.entry}")
        for node in cluster.nodes:
            print(f"  {node.id}: {node.url}  (metrics: {node.url}/metrics)")
        for process, url in zip(asr, asr_urls, strict=True):
            ready = url.replace("ws", "http", 1).replace("/api/asr-streaming", "/readyz")
            print(f"  asr-serve: {url} (pid {process.pid}, readiness: {ready})")
        print(f"  Redis {cluster.redis.url if cluster.redis else ''}")
        print(f"  PostgreSQL {cluster.database_url}")
        print(f"  data and logs: {cluster.directory}")
        print(f"host link:  {cluster.entry}/room/{args.room}#token={host}")
        print(f"guest link: {cluster.entry}/room/{args.room}#token={guest}")
        print("Ctrl-C stops everything", flush=True)
        while not stop:
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        cluster.stop()
        for process in asr:
            terminate(process, timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
