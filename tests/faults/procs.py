"""Real processes for the fault tests that stop or cut what the session shares: their own Redis (append-only
file on), the API (`medvoice serve`) and an `all`-pools worker, each a child of the test, all on one env."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port, wait_for

PASSWORD = "password-1234"


class Redis:
    """redis-server with the append-only file, so a stop and a start keep what was queued."""

    def __init__(self, directory: Path) -> None:
        self.dir, self.port, self.proc = directory, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        cmd = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 20, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


PG_BIN = Path("/usr/lib/postgresql")


def pg_tool(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(PG_BIN.glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(versions[-1]) if versions else None


class Postgres:
    """A throwaway PostgreSQL cluster of the test's own (run as the `postgres` user: the server refuses root),
    so the test may restart it without touching a server anyone else uses."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
        self.dir, self.port = Path(tempfile.mkdtemp(prefix="medvoice-pg-")), free_port()
        self.data = self.dir / "pgdata"
        self.url = f"postgresql+psycopg://medvoice@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        r = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, cwd="/")
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def init(self) -> None:
        shutil.chown(self.dir, "postgres")
        self._as_postgres(pg_tool("initdb"), "-D", str(self.data), "-U", "medvoice", "--auth=trust", "-E", "UTF8")

    def pg_ctl(self, action: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            pg_tool("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.dir / "pg.log"),
            "-m",
            "fast",
            "-w",
            action,
        )


class Stack:
    """API + worker processes on one database, data dir and Redis."""

    def __init__(self, root: Path, redis_url: str, db_url: str | None = None, **env: str) -> None:
        from app.migrate import upgrade

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{root / 'medvoice.db'}"
        upgrade(self.db_url)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MEDVOICE_REDIS_URL": redis_url,
            "MEDVOICE_DATABASE_URL": self.db_url,
            "MEDVOICE_DATA_DIR": str(root / "data"),
            "MEDVOICE_KB_DIR": str(root / "data" / "knowledge"),
            "MEDVOICE_LLM_N_CTX": "2048",
            "MEDVOICE_CONSULT_MAX_TOKENS": "64",
            "MEDVOICE_CONSULT_SSE_HEARTBEAT_S": "1",
            **env,
        }
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--port", str(self.port))
        wait_for(lambda: self._get("/healthz") == 200, 60, "the API")

    def start_worker(self) -> subprocess.Popen:
        self.worker = self._spawn("worker", "worker", "--pool", "all", "--concurrency", "1", "--loglevel", "INFO")
        return self.worker

    def _get(self, path: str) -> int:
        if self.api.poll() is not None:
            raise RuntimeError(f"the API exited: {self.log('api')[-3000:]}")
        try:
            return httpx.get(self.base + path, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def wait_ready(self, timeout_s: float = 300) -> None:
        def ready() -> bool:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited: {self.log('worker')[-3000:]}")
            return self._get("/readyz") == 200

        wait_for(ready, timeout_s, "/readyz")

    def user(self, name: str = "ann") -> dict[str, str]:
        from app import users as svc
        from workers.core.db import session_scope
        from workers.core.records import Role

        with session_scope(self.db_url) as db:
            svc.create_user(db, name, PASSWORD, Role.clinician)
        r = httpx.post(self.base + "/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
