"""`medvoice kb ...`: the knowledge base at the console (ingest, list, show, delete, reindex, stats, search).

The CLI opens the knowledge base in this process (it imports the model library only when a command needs
it). With an embedded store (no MEDVOICE_KB_CHROMA_URL) only one process may hold it: when a rag worker
already does, `ingest`/`delete` hand the work to that worker by task name instead. With a Chroma server
(`medvoice kb server`, MEDVOICE_KB_CHROMA_URL) the CLI and every rag worker share it directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workers.core.settings import get_settings

app = typer.Typer(help="Manage the clinic's knowledge base.", no_args_is_help=True)
console = Console()


def _offline() -> None:
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ["ANONYMIZED_TELEMETRY"] = "False"


def _open():  # noqa: ANN202
    _offline()
    from knowledge.base import KnowledgeBase
    from knowledge.store import StoreBusy
    from workers.engines.rag import kb_config

    try:
        return KnowledgeBase.open(kb_config(get_settings()))
    except StoreBusy as exc:
        raise _Busy(str(exc)) from exc


class _Busy(Exception):
    pass


def _via_worker(task: str, kwargs: dict, timeout: float) -> Any:
    """`task` on the rag worker (app/task_client.py). A typed error (bad input, no queue, no reply in time,
    a worker failure) is printed as `error: <message>` and ends the command: exit 2 for bad input, else 1."""
    from rich.markup import escape

    from app import task_client
    from workers.core.errors import InputError, MedvoiceError

    try:
        return task_client.call(task, kwargs, timeout_s=timeout)
    except MedvoiceError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))} [dim]({exc.code})[/dim]", highlight=False)
        raise typer.Exit(code=2 if isinstance(exc, InputError) else 1) from None


def _split_tags(tags: str | None) -> list[str]:
    return [t.strip() for t in (tags or "").split(",") if t.strip()]


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders (recursive): .txt .md .pdf .html .docx .jsonl"),
    source: str = typer.Option(None, "--source", help="Source label for every document (default: file name)."),
    date: str = typer.Option(None, "--date", help="Document date YYYY-MM-DD (default: file metadata, else mtime)."),
    tags: str = typer.Option(None, "--tags", help="Comma-separated tags."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Add or update documents; unchanged ones are skipped, bad files are reported and skipped."""
    from knowledge.loaders import discover

    tag_list = _split_tags(tags)
    files, _ = discover([p.resolve() for p in paths])
    try:
        kb = _open()
    except _Busy:
        console.print("[yellow]the embedded store is held by a rag worker: sending the files to it[/yellow]")
        summary = _via_worker(
            "rag.ingest",
            {"paths": [str(p.resolve()) for p in paths], "source": source, "date": date, "tags": tag_list},
            timeout=3600,
        )
        _print_summary(summary, as_json)
        return

    t0 = time.perf_counter()
    counts = {"docs": 0, "chunks": 0}
    columns = [
        TextColumn("[bold]ingest[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False, disable=as_json) as progress:
        task = progress.add_task("ingest", total=max(len(files), 1), rate="")
        seen_paths: set[str] = set()

        def on_item(item) -> None:  # noqa: ANN001
            counts["docs"] += 1
            counts["chunks"] += item.chunks if item.status in ("added", "updated") else 0
            file = item.path.split("#", 1)[0]
            if file and file not in seen_paths and file in files_set:
                seen_paths.add(file)
                progress.advance(task)
            dt = max(time.perf_counter() - t0, 1e-6)
            progress.update(task, rate=f"{counts['docs'] / dt:.1f} docs/s · {counts['chunks'] / dt:.1f} chunks/s")

        files_set = {str(f) for f in files}
        report = kb.ingest_paths(
            [p.resolve() for p in paths], source=source, date=date, tags=tag_list, progress=on_item
        )
        progress.update(task, completed=max(len(files), 1))
    kb.close()
    _print_summary(report.summary(), as_json)
    if report.count("failed") and not (report.count("added") + report.count("updated") + report.count("unchanged")):
        raise typer.Exit(code=1)


def _print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(s))
        return
    secs = max(s.get("seconds", 0.0), 1e-6)
    console.print(
        f"added [green]{s['added']}[/green], updated [cyan]{s['updated']}[/cyan], unchanged {s['unchanged']}, "
        f"failed [red]{s['failed']}[/red]; {s['chunks']} chunks in {s['seconds']:.1f}s "
        f"({s['chunks'] / secs:.1f} chunks/s)"
    )
    if s["failures"]:
        t = Table("failed", "reason", title="not ingested")
        for f in s["failures"]:
            t.add_row(f["path"], f["reason"])
        console.print(t)


def _run(local, task: str, kwargs: dict | None = None, timeout: float = 120):  # noqa: ANN001, ANN202
    """Run `local(kb)` on a knowledge base opened here, or, when a rag worker holds the embedded store,
    send `task` to that worker. Either way the result is plain JSON data."""
    try:
        kb = _open()
    except _Busy:
        return _via_worker(task, kwargs or {}, timeout)
    try:
        return local(kb)
    finally:
        kb.close()


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents with chunk counts, dates and sources."""
    docs = _run(lambda kb: [d.as_dict() for d in kb.list_documents()], "rag.list")
    if as_json:
        typer.echo(json.dumps(docs))
        return
    t = Table("id", "title", "chunks", "date", "source", "tags", "lang")
    for d in docs:
        t.add_row(
            d["doc_id"], d["title"][:60], str(d["chunks"]), d["date"], d["source"], ",".join(d["tags"]), d["language"]
        )
    console.print(t)
    console.print(f"{len(docs)} documents, {sum(d['chunks'] for d in docs)} chunks")


@app.command()
def show(doc_id: str, full: bool = typer.Option(False, "--full", help="Print whole chunks.")) -> None:
    """One document: its metadata and chunks."""
    doc = _run(lambda kb: kb.get_document(doc_id), "rag.show", {"doc_id": doc_id})
    if doc is None:
        console.print(f"[red]no document {doc_id}[/red]")
        raise typer.Exit(code=1)
    for key in (
        "doc_id",
        "title",
        "source",
        "date",
        "tags",
        "language",
        "chunks",
        "content_hash",
        "path",
        "ingested_at",
    ):
        console.print(f"[bold]{key}[/bold]: {doc[key]}")
    for c in doc["chunk_list"]:
        text = c["text"] if full else (c["text"][:200] + ("…" if len(c["text"]) > 200 else ""))
        console.print(f"[cyan]{c['chunk_id']}[/cyan] [dim]{c['context']}[/dim]\n  {text}")


@app.command()
def delete(doc_id: str) -> None:
    """Delete a document and all its chunks."""
    t0 = time.perf_counter()
    n = _run(lambda kb: {"chunks": kb.delete(doc_id)}, "rag.delete", {"doc_id": doc_id}, timeout=60)["chunks"]
    if n == 0:
        console.print(f"[red]no document {doc_id}[/red]")
        raise typer.Exit(code=1)
    console.print(f"deleted {doc_id}: {n} chunks in {(time.perf_counter() - t0) * 1000:.0f} ms")


@app.command()
def reindex() -> None:
    """Re-embed every chunk (after changing the embedder model or its settings)."""
    with console.status("re-embedding…"):
        out = _run(lambda kb: kb.reindex(), "rag.reindex", timeout=24 * 3600)
    console.print(f"re-embedded {out['chunks']} chunks in {out['seconds']:.1f}s")


@app.command()
def stats(as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents, chunks, languages, sources, store size."""
    s = _run(lambda kb: kb.stats(), "rag.stats")
    if as_json:
        typer.echo(json.dumps(s))
        return
    for key, val in s.items():
        console.print(f"[bold]{key}[/bold]: {val}")


@app.command()
def search(
    question: str,
    k: int = typer.Option(5, "-k", help="How many chunks."),
    source: str = typer.Option(None, "--source"),
    tags: str = typer.Option(None, "--tags"),
    language: str = typer.Option(None, "--language", help="en or zh (default: detected)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ranked chunks with similarity, decay, final score and source."""
    filters = {"source": source, "tags": _split_tags(tags)}
    res = _run(
        lambda kb: kb.search(question, k=k, language=language, filters=filters).as_dict(),
        "rag.search",
        {"query": question, "k": k, "language": language, "filters": filters},
    )
    if as_json:
        typer.echo(json.dumps(res, ensure_ascii=False))
        return
    if res["nothing_relevant"]:
        console.print("[yellow]nothing relevant[/yellow] (no chunk reaches the relevance floor)")
        return
    for i, h in enumerate(res["hits"], 1):
        dense = "-" if h["dense"] is None else f"{h['dense']:.3f}"
        console.print(
            f"[bold]{i}.[/bold] score [bold]{h['score']:.3f}[/bold] = similarity {h['similarity']:.3f} × decay "
            f"{h['decay']:.3f} [dim](dense {dense}, bm25 {h['lexical']:.3f})[/dim]  {h['date']}  source "
            f"[cyan]{h['source']}[/cyan]  [dim]{h['chunk_id']}[/dim]"
        )
        console.print(f"   [italic]{h['context']}[/italic]: {h['text'][:300]}", highlight=False)
    console.print(f"[dim]{res['query_language']}, fusion {res['fusion']}, {res['timings_ms']['total']:.1f} ms[/dim]")


@app.command()
def server(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8001),
) -> None:
    """Run Chroma's own server over the knowledge directory (for several processes: set
    MEDVOICE_KB_CHROMA_URL=http://HOST:PORT for the rag workers and this CLI)."""
    binary = shutil.which("chroma")
    if binary is None:
        console.print("[red]the `chroma` command is not installed (pip install medvoice[knowledge])[/red]")
        raise typer.Exit(code=1)
    from workers.engines.rag import kb_config

    path = Path(kb_config(get_settings()).path) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    command = [binary, "run", "--path", str(path), "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(command, env=env))
