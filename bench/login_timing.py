"""How long a failed sign-in takes for a known user name (wrong password) and for an unknown one.

Through the real HTTP app (TestClient), a fresh SQLite database and a private Redis (the login throttle's
counters), with the throttle's limits raised out of the way. An unknown name that returns measurably faster
tells an attacker which names exist; both should spend one argon2 verification.

    .venv/bin/python bench/login_timing.py [--n 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40, help="sign-ins of each kind")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from app import users as svc
    from app.main import create_app
    from app.migrate import upgrade
    from tests.conftest import start_redis
    from workers.core.db import session_scope
    from workers.core.records import Role
    from workers.core.settings import Settings

    with tempfile.TemporaryDirectory(prefix="medvoice-login-bench-") as tmp:
        root = Path(tmp)
        redis_proc, redis_url = start_redis(root)
        try:
            url = f"sqlite:///{root / 'medvoice.db'}"
            upgrade(url)
            settings = Settings(
                database_url=url,
                data_dir=root / "data",
                redis_url=redis_url,
                consult_reap_interval_s=0,
                login_max_failures_per_user=10**6,
                login_max_failures_per_address=10**6,
            )
            with session_scope(url) as db:
                svc.create_user(db, "known", "the-right-password", Role.clinician)
            figures: dict[str, list[float]] = {"known name, wrong password": [], "unknown name": []}
            with TestClient(create_app(settings)) as client:
                for i in range(args.n + 3):
                    for label, name in (("known name, wrong password", "known"), ("unknown name", f"ghost{i}")):
                        t0 = time.perf_counter()
                        r = client.post("/v1/auth/token", data={"username": name, "password": "wrong-password"})
                        elapsed = time.perf_counter() - t0
                        assert r.status_code == 401, r.text
                        if i >= 3:  # the first few warm up the app and the database
                            figures[label].append(elapsed * 1000)
            for label, ms in figures.items():
                print(f"{label:28s} n={len(ms)}  median {statistics.median(ms):7.2f} ms  p90 {_p90(ms):7.2f} ms")
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


if __name__ == "__main__":
    main()
