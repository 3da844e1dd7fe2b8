"""`medvoice` console script (Typer): serve, worker, flower, migrate, reap-turns, users, demo, kb, models,
backup, restore, purge-audio."""

from __future__ import annotations

import os
import sys
from enum import Enum

import typer

from app.cli import backup, demo, kb, live, models, users
from workers.core.settings import POOLS, get_settings

cli = typer.Typer(
    name="medvoice",
    help="Offline voice knowledge assistant for clinics.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(users.app, name="users")
cli.add_typer(demo.app, name="demo")
cli.add_typer(kb.app, name="kb")
cli.add_typer(models.app, name="models")
cli.command("live")(live.live)


class Pool(str, Enum):
    asr = "asr"
    live = "live"
    rag = "rag"
    llm = "llm"
    tts = "tts"
    all = "all"


def _offline_env() -> None:
    # Offline by construction: no library may try a model hub or phone home.
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _logging(level: str, fmt: str = "text") -> None:
    # One line per event with its correlation id, text or JSON (workers/core/logs.py); workers do the same.
    from workers.core import logs

    logs.configure(level, fmt)


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, help="Uvicorn worker processes."),
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    _offline_env()
    settings = get_settings()
    _logging(settings.log_level, settings.log_format)
    from workers.core import logs

    if settings.funasr_port:  # FunASR clients' own port beside the API, in this one process
        import asyncio

        from app.routes.funasr import serve_together

        if workers != 1:
            raise typer.BadParameter("MEDVOICE_FUNASR_PORT needs --workers 1 (run more API processes separately)")
        level = settings.log_level.lower()
        api = uvicorn.Config("app.main:create_app", factory=True, host=host, port=port, log_level=level)
        fun = uvicorn.Config(
            "app.routes.funasr:create_funasr_app",
            factory=True,
            host=settings.funasr_host,
            port=settings.funasr_port,
            log_level=level,
        )
        asyncio.run(serve_together(uvicorn.Server(api), uvicorn.Server(fun)))
        return
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=logs.dict_config(settings.log_level, settings.log_format),  # uvicorn's own lines too
    )


@cli.command()
def worker(
    pool: Pool = typer.Option(..., help="Which queue(s) this worker consumes; `all` runs every stage."),
    concurrency: int = typer.Option(0, help="Worker processes; 0 takes MEDVOICE_<POOL>_CONCURRENCY."),
    name: str = typer.Option("", help="Celery node name (default <pool>@<host>)."),
    loglevel: str = typer.Option("INFO"),
    metrics_port: int = typer.Option(
        -1, help="This node's Prometheus metrics on MEDVOICE_WORKER_METRICS_HOST:PORT (0: none; -1: the setting)."
    ),
) -> None:
    """Run one Celery worker pool (its model engine loads once per child process)."""
    settings = get_settings()
    queues = list(POOLS) if pool is Pool.all else [pool.value]
    if concurrency <= 0:
        concurrency = max(settings.pool_concurrency(q) for q in queues)
    port = settings.worker_metrics_port if metrics_port < 0 else metrics_port
    argv = ["--queues", ",".join(queues), "--concurrency", str(concurrency), "--hostname", name or f"{pool.value}@%h"]
    argv += ["--loglevel", loglevel, "--metrics-port", str(port or 0)]
    # The same process becomes the node (workers/node.py): its pool children are forked from a parent that holds
    # Celery and the task registry, not this CLI's imports.
    os.execv(sys.executable, [sys.executable, "-m", "workers.node", *argv])


@cli.command()
def flower(
    host: str = typer.Option("", help="Interface (default MEDVOICE_FLOWER_HOST)."),
    port: int = typer.Option(0, help="Port (default MEDVOICE_FLOWER_PORT)."),
) -> None:
    """Run Flower against the same broker, to watch the pools."""
    settings = get_settings()
    host = host or settings.flower_host
    port = port or settings.flower_port
    argv = ["flower", f"--address={host}", f"--port={port}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic_auth={settings.flower_basic_auth}")
    elif host in ("127.0.0.1", "localhost", "::1"):
        # Flower 2 closes its HTTP API unless auth is set; on loopback only, open it for local tooling.
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    else:
        raise typer.BadParameter("set MEDVOICE_FLOWER_BASIC_AUTH=user:password before binding beyond loopback")
    from workers.celery_app import celery_app

    celery_app.start(argv=argv)


@cli.command()
def migrate(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Upgrade the database schema (Alembic) to REVISION."""
    from app.migrate import upgrade

    upgrade(get_settings().resolved_database_url, revision)
    typer.echo(f"database at {revision}")


@cli.command("reap-turns")
def reap_turns() -> None:
    """Mark turns whose queued work was lost (no progress for MEDVOICE_CONSULT_STALL_AFTER_S) as `error`.
    The API does this every MEDVOICE_CONSULT_REAP_INTERVAL_S; this runs it once, e.g. after restoring Redis."""
    from workers.reaper import reap

    reaped = reap(get_settings())
    typer.echo(f"{len(reaped)} stalled turns marked error" + (f": {', '.join(reaped)}" if reaped else ""))


backup.register(cli)  # backup, restore, purge-audio


def main() -> None:
    cli()
