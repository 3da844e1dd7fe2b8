"""`medvoice demo up|down`: bring the whole service up on this machine and show it working."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app import users as svc
from app.cli import demo_steps as steps
from app.cli import live, procs
from app.migrate import upgrade
from app.security import verify_password
from workers.core.db import session_scope
from workers.core.records import Role
from workers.core.settings import POOLS, get_settings

app = typer.Typer(help="Run the demo deployment in the background.", no_args_is_help=True)
console = Console()

DEMO_USERS = {"demo-admin": Role.admin, "demo-clinician": Role.clinician}
DEMO_PASSWORD = "medvoice-demo"  # printed on screen: a demo on a developer's machine, not a clinic


def _ensure_user(db, username: str, role: Role) -> None:  # noqa: ANN001
    user = svc.get_by_username(db, username)
    if user is None:
        svc.create_user(db, username, DEMO_PASSWORD, role)
    elif user.role != role or not user.is_active or not verify_password(user.password_hash, DEMO_PASSWORD):
        # Only repair what differs: resetting on every run would revoke tokens printed by the last run.
        user.role, user.is_active = role, True
        svc.set_password(db, username, DEMO_PASSWORD)


def _wait_ready(base: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            body = r.json()
            if r.status_code == 200:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"services not ready after {timeout_s:.0f}s: {json.dumps(body)}")


def _token(base: str, username: str) -> str:
    r = httpx.post(f"{base}/v1/auth/token", data={"username": username, "password": DEMO_PASSWORD}, timeout=10)
    r.raise_for_status()
    return r.json()["access_token"]


@app.command()
def up(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    ready_timeout: float = typer.Option(120.0, help="Seconds to wait for every pool."),
    question: str = typer.Option(steps.DEFAULT_QUESTION, "--question", help="What the demo voice asks."),
    language: str = typer.Option("en", "--language", help="Language of the question for ASR: en, zh, or auto."),
    consult: bool = typer.Option(
        True, "--consult/--no-consult", help="Speak the question and take it through a consultation."
    ),
    sample_kb: bool = typer.Option(True, "--sample-kb/--no-sample-kb", help="Ingest the sample knowledge base."),
    turn_timeout: float = typer.Option(900.0, help="Seconds to wait for the consultation turn."),
) -> None:
    """Start API + four pools + Flower, create demo users, run a round trip through every queue, ingest the
    sample knowledge base, and take a spoken question through a consultation."""
    try:
        _up(host, port, ready_timeout, question, language, consult, sample_kb, turn_timeout)
    except (steps.DemoError, RuntimeError, httpx.HTTPError) as exc:
        console.print(f"\n[red bold]demo failed:[/red bold] {escape(str(exc) or type(exc).__name__)}", soft_wrap=True)
        console.print(
            f"the services are still running; logs: {(get_settings().data_dir / 'run').resolve()}/*.log, "
            "stop with: make stop",
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None


def _up(
    host: str,
    port: int,
    ready_timeout: float,
    question: str,
    language: str,
    consult: bool,
    sample_kb: bool,
    turn_timeout: float,
) -> None:
    s = get_settings()
    run_dir = s.data_dir / "run"
    stopped = procs.stop_all(run_dir)
    if stopped:
        console.print(f"stopped the previous demo's {', '.join(stopped)}")
    upgrade(s.resolved_database_url)
    with session_scope(s.resolved_database_url) as db:
        for username, role in DEMO_USERS.items():
            _ensure_user(db, username, role)

    funasr_port = s.funasr_port or 10095  # FunASR dictation clients' port: on loopback only in the demo
    api_cmd = procs.medvoice_cmd("serve", "--host", host, "--port", str(port))
    funasr_env = {"MEDVOICE_FUNASR_PORT": str(funasr_port), "MEDVOICE_FUNASR_HOST": "127.0.0.1"}
    procs.start(run_dir, "api", api_cmd, env=funasr_env)
    for pool in POOLS:
        procs.start(run_dir, f"worker-{pool}", procs.medvoice_cmd("worker", "--pool", pool))
    procs.start(run_dir, "flower", procs.medvoice_cmd("flower"))

    base = f"http://{host}:{port}"
    t0 = time.perf_counter()
    ready = _wait_ready(base, ready_timeout)
    console.print(f"[green]ready[/green] in {time.perf_counter() - t0:.1f}s; /readyz said:")
    console.print_json(data=ready)

    admin_token = _token(base, "demo-admin")
    pings = httpx.get(f"{base}/v1/admin/pools", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    pings.raise_for_status()
    table = Table("pool", "answered by", "round trip ms", title="a round trip through every queue")
    for p in pings.json():
        table.add_row(p["pool"], p["worker"] or f"[red]{p['error']}[/red]", str(p["round_trip_ms"]))
    console.print(table)

    token = _token(base, "demo-clinician")
    admin, clinician = steps.bearer(admin_token), steps.bearer(token)
    with httpx.Client(base_url=base, timeout=steps.CLIENT_TIMEOUT) as client:
        if sample_kb:
            console.rule("the sample knowledge base, uploaded as demo-admin")
            steps.print_ingest(console, steps.ingest_sample_kb(client, admin))
            steps.print_search(console, question, steps.search(client, clinician, question))
        if consult:
            console.rule("a spoken question, uploaded as demo-clinician")
            console.print(
                f"the demo voice says: {escape(repr(question))}  [dim](tts.synthesize on the tts pool)[/dim]",
                soft_wrap=True,
            )
            wav = steps.speak(question, s.data_dir)
            run = steps.run_consultation(
                client,
                clinician,
                wav,
                out_dir=s.data_dir / "demo",
                language=None if language == "auto" else language,
                timeout_s=turn_timeout,
                console=console,
            )
            steps.print_consultation(console, run, steps.document_dates(client, admin))
            console.rule("the same question spoken live, over /v1/realtime (OpenAI Realtime protocol)")
            question_wav = s.data_dir / "demo" / "question.wav"
            question_wav.write_bytes(wav)
            live_run = asyncio.run(
                live.converse(
                    base.replace("http://", "ws://") + "/v1/realtime",
                    token,
                    live.pcm24(question_wav),
                    None if language == "auto" else language,
                    console,
                )
            )
            live.print_run(console, live_run, live.save_reply(live_run, s.data_dir / "demo" / "live-reply.wav"))
            dates = steps.document_dates(client, admin)
            steps.chinese_consultation(console, client, clinician, s.data_dir, dates, timeout_s=turn_timeout)

    console.rule("the demo is running")
    console.print(f"API        {base}   (OpenAPI docs: {base}/docs)")
    console.print(f"Flower     http://{s.flower_host}:{s.flower_port}")
    console.print(f"logs       {run_dir.resolve()}/*.log   stop with: make stop")
    console.print(
        f"FunASR     ws://127.0.0.1:{funasr_port}  (live dictation: FunASR's funasr_wss_client.py --host 127.0.0.1 "
        f"--port {funasr_port} --mode 2pass --ssl 0 --audio_in visit.wav)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"console    {base}/console   (talk to it in a browser: sign in as demo-clinician)")
    console.print(
        f"live       medvoice live --file {s.data_dir.resolve() / 'demo' / 'question.wav'} --user demo-clinician "
        f"--url {base}   (a live voice consultation from the command line)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"users      demo-admin / demo-clinician, password {DEMO_PASSWORD}\n")
    console.print(f"Try it (token valid for {s.jwt_lifetime_minutes:d} min):", soft_wrap=True)
    console.print(f"curl -s -H 'Authorization: Bearer {token}' {base}/v1/auth/me", soft_wrap=True, highlight=False)


@app.command()
def down() -> None:
    """Stop everything `demo up` started."""
    stopped = procs.stop_all(get_settings().data_dir / "run")
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
