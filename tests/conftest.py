"""Shared fixtures: a real Redis server, real Celery worker processes, real SQL (SQLite; PostgreSQL when
one answers), the real FastAPI app.

The Redis server starts in pytest_configure, before any test module imports workers.celery_app,
because the Celery app reads MEDVOICE_REDIS_URL when it is created.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
EVAL_DATA = SHARED / "eval-data"

_redis_proc: subprocess.Popen | None = None
_session_dir: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_interpreter(code: str) -> Any:
    """What `code` prints last, as JSON, run in a fresh interpreter (nothing imported or allocated by the suite)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_in_thread(app) -> tuple[object, threading.Thread, int]:
    """A real uvicorn serving `app` on a free loopback port, in a daemon thread: (server, thread, port). Stop it
    with `server.should_exit = True` and `thread.join()`."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn")
    return server, thread, port


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise pytest.UsageError("redis-server not found: run the suite through `make test`, which installs it")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(up, 10, "redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def pytest_configure(config: pytest.Config) -> None:
    global _redis_proc, _session_dir
    _session_dir = Path(tempfile.mkdtemp(prefix="medvoice-tests-"))
    _redis_proc, url = start_redis(_session_dir)
    os.environ["MEDVOICE_REDIS_URL"] = url
    # Models stay where `make test` assembled them (`medvoice models prepare`); all else is per session.
    models = Path(os.environ.get("MEDVOICE_DATA_DIR", ROOT / "var")) / "models"
    os.environ.setdefault("MEDVOICE_MODELS_DIR", str(models))
    os.environ["MEDVOICE_DATA_DIR"] = str(_session_dir / "data")
    os.environ["MEDVOICE_DATABASE_URL"] = f"sqlite:///{_session_dir / 'session.db'}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    # The same text always sounds the same: speech made at test time and heard back by Whisper is then
    # reproducible (with the voice's own noise, Whisper base misheard about one rendition in 36).
    os.environ.setdefault("MEDVOICE_TTS_NOISE_SCALE", "0")
    os.environ.setdefault("MEDVOICE_TTS_NOISE_W_SCALE", "0")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis_proc is not None:
        _redis_proc.terminate()
        _redis_proc.wait(10)
    if _session_dir is not None:
        shutil.rmtree(_session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["MEDVOICE_REDIS_URL"]


@pytest.fixture(scope="session")
def session_dir() -> Path:
    assert _session_dir is not None
    return _session_dir


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database migrated to head through Alembic (never create_all)."""
    from app.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'medvoice.db'}"
    upgrade(url)
    return url


DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://medvoice:medvoice@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    """A server URL with CREATEDB rights: MEDVOICE_TEST_POSTGRES_URL (.ci/run sets it), else the local
    role that .ci/run creates; tests skip when neither answers."""
    return os.environ.get("MEDVOICE_TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (created and dropped here); skipped when no server answers."""
    admin = postgres_admin_url()
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL answers at {make_url(admin).render_as_string()}: {type(exc).__name__}")
    name = f"medvoice_test_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        from workers.core.db import get_engine

        get_engine.cache_clear()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test on SQLite and again on PostgreSQL (skipped when no server answers)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'medvoice.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path):
    from workers.core.settings import Settings

    return Settings(database_url=sqlite_url, data_dir=tmp_path / "data")


@pytest.fixture
def client(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


class WorkerProcess:
    """A real `medvoice worker` process consuming the given pool(s)."""

    def __init__(self, pool: str, env: dict[str, str], log_path: Path) -> None:
        self.pool = pool
        self.name = f"{pool}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "worker",
                "--pool",
                pool,
                "--name",
                self.name,
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 240, wait_for_models: bool = True) -> None:
        import redis

        from workers.celery_app import ENGINES_READY_PREFIX, celery_app

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_path.read_text()[-3000:]}")
            replies = celery_app.control.ping(destination=[self.name], timeout=0.5)
            return any(self.name in r for r in replies)

        def engines_loaded() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_path.read_text()[-3000:]}")
            return bool(redis.Redis.from_url(os.environ["MEDVOICE_REDIS_URL"]).scard(ENGINES_READY_PREFIX + self.name))

        wait_for(answers, timeout_s, f"worker {self.name}")
        if not wait_for_models:
            return
        # Ready means a pool child has its models loaded, as /readyz defines it.
        wait_for(engines_loaded, timeout_s, f"worker {self.name} to load its models")

    def stop(self) -> None:
        if self.proc.poll() is None:
            import signal

            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def _worker_factory(log_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def _start(pool: str, timeout_s: float = 240, wait_for_models: bool = True, **env: str) -> WorkerProcess:
        full_env = {**os.environ, **env}
        w = WorkerProcess(pool, full_env, log_dir / f"worker-{pool}-{len(started)}.log")
        started.append(w)
        w.wait_ready(timeout_s, wait_for_models)
        return w

    try:
        yield _start
    finally:
        for w in started:
            w.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start_worker("asr", MEDVOICE_X="y") → a ready worker process, stopped at teardown."""
    with _worker_factory(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    """Like start_worker, but the workers serve every test of the module (model loads are slow)."""
    with _worker_factory(tmp_path_factory.mktemp("workers")) as start:
        yield start


def eval_data(*parts: str) -> Path:
    """A path under ../shared/eval-data, or skip the test with the reason when it is absent."""
    path = EVAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"evaluation data not found at {path} (it lives in ../shared beside the clone)")
    return path
