"""The client side of test_multihost.py, run on its own "desk" host (a network namespace): waits for /readyz of the
API on another host, gives the knowledge base a page and has a spoken question made (through the pools on the
worker hosts), signs a clinician in, uploads the question and follows the turn. Then asks Redis and PostgreSQL
which addresses their clients come from. Prints a JSON summary; everything it reaches is on the hosts' /24.

    python -m tests.faults.multihost_run WORKDIR API_BASE
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def wait_ready(base: str, timeout_s: float) -> None:
    import httpx

    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"/readyz not ready after {timeout_s}s: {last[-1500:]}")


def main(workdir: Path, base: str) -> dict:
    import redis
    from sqlalchemy import create_engine, text

    from tests.faults.offline_run import consult
    from tests.faults.procs import Stack

    wait_ready(base, 200)
    # Stack only for its sign-in (user row + token); the API it talks to runs on another host.
    stack = Stack(workdir, os.environ["MEDVOICE_REDIS_URL"], db_url=os.environ["MEDVOICE_DATABASE_URL"])
    stack.base = base
    out = consult(stack)

    db = create_engine(stack.db_url)
    with db.connect() as conn:
        out["turns"] = [tuple(r) for r in conn.execute(text("SELECT status, error FROM turns"))]
        q = "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        out["postgres_peers"] = sorted(str(r[0]) for r in conn.execute(text(q)))
    db.dispose()
    clients = redis.Redis.from_url(stack.env["MEDVOICE_REDIS_URL"]).client_list()
    out["redis_peers"] = sorted({c["addr"].rsplit(":", 1)[0] for c in clients})
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), sys.argv[2])
    print("MULTIHOST-RESULT " + json.dumps(result), flush=True)
