"""The steps `medvoice demo up` shows once the services answer: the sample knowledge base ingested as the
admin, a question spoken by the demo voice, and that recording taken through a consultation as the clinician.

Everything here talks to the running service over HTTP (an `httpx.Client` whose `base_url` is the API and
whose timeouts allow for the slow steps, see CLIENT_TIMEOUT; a FastAPI `TestClient` works too) or sends
Celery tasks by name: this process never imports a model library, and never opens the knowledge base (the
rag pool holds it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from workers.core import event_schema as es
from workers.core.event_schema import decode

SAMPLE_DIR = Path(str(files("knowledge") / "sample_kb"))
SAMPLE_SOURCE = "medvoice sample KB"
DEFAULT_QUESTION = "What is the first-line antibiotic for otitis media in adults, and for how long?"
# The Chinese question the demo asks aloud (the Mandarin voice says it; the sample KB's influenza page answers).
ZH_QUESTION = "流感发热退后多久可以返回工作？"
# An upload waits for the rag pool's ingest; the SSE stream sends a keep-alive every 15 s.
CLIENT_TIMEOUT = httpx.Timeout(30.0, read=600.0)
TERMINAL = (*(t.value for t in es.TERMINAL), es.EventType.timeout.value)


class DemoError(Exception):
    """A demo step failed; str(exc) says which and why."""


def _check(r: httpx.Response, what: str, expect: tuple[int, ...] = (200,)) -> httpx.Response:
    if r.status_code not in expect:
        try:
            detail: Any = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise DemoError(f"{what}: HTTP {r.status_code}: {str(detail)[:300]}")
    return r


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- the sample knowledge base ----------------------------------------------------------------------------
def sample_documents() -> list[tuple[Path, str]]:
    """(file, document id) for every sample document; the ids are stable so a re-run updates, never adds."""
    return [(p, f"sample-{p.stem}") for p in sorted(SAMPLE_DIR.glob("*.md"))]


def ingest_sample_kb(client: httpx.Client, admin: dict[str, str]) -> list[dict[str, Any]]:
    """Upload every sample document as the admin (POST /v1/knowledge/documents → the rag pool's rag.ingest).
    Returns one row per document: doc_id, status (added | updated | unchanged), chunks, title, date."""
    docs = sample_documents()
    if not docs:
        raise DemoError(f"no sample documents in {SAMPLE_DIR}")
    rows = []
    for path, doc_id in docs:
        r = client.post(
            "/v1/knowledge/documents",
            headers=admin,
            files={"file": (path.name, path.read_bytes(), "text/markdown")},
            data={"doc_id": doc_id, "source": SAMPLE_SOURCE},
        )
        rows.append(_check(r, f"ingest {path.name}", (201,)).json())
    listed = {
        d["doc_id"]: d for d in _check(client.get("/v1/knowledge/documents", headers=admin), "list documents").json()
    }
    for row in rows:
        meta = listed.get(row["doc_id"], {})
        row.update(title=meta.get("title", ""), date=meta.get("date", ""), language=meta.get("language", ""))
    return rows


def document_dates(client: httpx.Client, admin: dict[str, str]) -> dict[str, str]:
    r = _check(client.get("/v1/knowledge/documents", headers=admin), "list documents")
    return {d["doc_id"]: d["date"] for d in r.json()}


def print_ingest(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(
        "title",
        "date",
        "lang",
        "status",
        "chunks",
        title=f"sample knowledge base: knowledge/{SAMPLE_DIR.name}/*.md as sample-<name>, source {SAMPLE_SOURCE!r}",
    )
    colour = {"added": "green", "updated": "cyan", "unchanged": "dim"}
    for row in rows:
        st = row["status"]
        t.add_row(
            escape(row["title"]), row["date"], row["language"], f"[{colour.get(st, 'red')}]{st}[/]", str(row["chunks"])
        )
    console.print(t)


def search(client: httpx.Client, headers: dict[str, str], question: str, k: int = 20) -> dict[str, Any]:
    r = client.post("/v1/knowledge/search", json={"query": question, "k": k}, headers=headers)
    return _check(r, "knowledge search").json()


def best_per_document(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best-scoring passage of each document, in rank order."""
    seen: set[str] = set()
    return [h for h in hits if not (h["doc_id"] in seen or seen.add(h["doc_id"]))]


def print_search(console: Console, question: str, res: dict[str, Any], rows: int = 6) -> None:
    """Each document's best passage with similarity × decay = score: where an old edition sinks below the
    current one even when its text matches the question as well."""
    t = Table(
        "rank",
        "document",
        "date",
        "similarity",
        "× decay",
        "= score",
        title=f"knowledge search: {question!r} (best passage per document)",
    )
    if res["nothing_relevant"]:
        t.add_row("-", "[yellow]nothing relevant[/yellow]", "", "", "", "")
    ranks = {id(h): i for i, h in enumerate(res["hits"], 1)}
    for h in best_per_document(res["hits"])[:rows]:
        t.add_row(
            str(ranks[id(h)]),
            escape(h["title"]),
            h["date"],
            f"{h['similarity']:.3f}",
            f"{h['decay']:.3f}",
            f"[bold]{h['score']:.3f}[/bold]",
        )
    console.print(t)


# ---- the spoken question ------------------------------------------------------------------------------
def speak(text: str, data_dir: Path, timeout_s: float = 180.0, speed: float = 1.0) -> bytes:
    """WAV bytes of the demo voice saying `text`: Celery task `tts.synthesize` by name on the tts pool."""
    from app import task_client
    from workers.core.errors import MedvoiceError

    try:
        out = task_client.call("tts.synthesize", {"text": text, "speed": speed}, timeout_s=timeout_s)
    except MedvoiceError as exc:
        raise DemoError(f"tts.synthesize failed: {exc.code}: {exc.message}") from exc
    path = Path(data_dir) / out["audio_ref"]
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DemoError(f"the synthesized question is not at {path}: {exc.strerror}") from exc


# ---- the consultation -----------------------------------------------------------------------------------
@dataclass
class ConsultationRun:
    consultation_id: str
    turn_id: str
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)  # (seconds since upload, type, data)
    turn: dict[str, Any] = field(default_factory=dict)  # the turn as GET /v1/consultations/{id} reports it
    reply_path: Path | None = None
    upload_s: float = 0.0  # the upload request itself
    first_sentence_s: float | None = None  # upload start → first `sentence` event, measured here
    first_audio_s: float | None = None  # upload start → first `audio` event (first spoken clip)
    done_s: float | None = None


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    """(id, type, data) for each Server-Sent Event in a stream of lines; comments and `retry:` are skipped."""
    id_, type_, data = None, None, []
    for line in lines:
        if not line:
            if type_ is not None:
                try:
                    payload = json.loads("\n".join(data) or "{}")
                except ValueError:
                    payload = {"raw": "\n".join(data)}
                yield id_, type_, payload
            id_, type_, data = None, None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("id:"):
            id_ = line[3:].strip()
        elif line.startswith("event:"):
            type_ = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


ANSWER_MODES = {
    "extractive": "quoted from the passage",
    "generated": "generated and claim-checked",
    "no_answer": "not in the knowledge base",
    "unverified": "nothing verifiable",
}


def describe_event(type_: str, data: dict[str, Any]) -> str:
    """One line for an event of the turn's stream, read through its schema (workers/core/event_schema.py)."""
    event = decode(type_, data)
    if isinstance(event, es.Status):
        return f"[dim]status {event.status}[/dim]"
    if isinstance(event, es.Transcribed):
        return f"[bold]transcribed[/bold] ({event.language}, {event.duration_s} s of audio): {escape(repr(event.text))}"
    if isinstance(event, es.Retrieved):
        cites = ", ".join(f"[{c.n}] {c.title} ({c.score:.2f})" for c in event.citations)
        return f"[bold]retrieved[/bold] {event.count} passages: {escape(cites) or 'nothing relevant'}"
    if isinstance(event, es.Sentence):
        return f"[bold]sentence {event.index + 1}[/bold]: {escape(event.text)}"
    if isinstance(event, es.Answered):
        mode = ANSWER_MODES.get(event.mode or "", "")
        return (
            f"[bold]answered[/bold]: {event.sentences} sentences, cites {event.citations}, "
            f"{mode + ', ' if mode else ''}claim check {'fired' if event.guard_fired else 'quiet'}"
        )
    if isinstance(event, es.Audio):
        return f"[bold]audio[/bold] clip {(event.index or 0) + 1} ({event.duration_s} s)"
    if isinstance(event, es.TextOnly):
        return f"[yellow]text only[/yellow]: sentence {event.index + 1} has no voice ({event.language})"
    if isinstance(event, es.AudioReady):
        return f"[bold]audio_ready[/bold]: the reply, {event.duration_s} s"
    if isinstance(event, es.Done):
        return "[green bold]done[/green bold]"
    if isinstance(event, es.Restart):
        return f"[yellow]restart[/yellow] of the {event.stage} stage (its earlier events are void)"
    if isinstance(event, es.Failed | es.Timeout):
        return f"[red bold]{type_}[/red bold]: {escape(str(event.message or data))}"
    return f"{type_}: {escape(json.dumps(data, ensure_ascii=False)[:200])}"


def run_consultation(
    client: httpx.Client,
    clinician: dict[str, str],
    wav: bytes,
    *,
    out_dir: Path,
    language: str | None = "en",
    title: str = "medvoice demo",
    timeout_s: float = 900.0,
    console: Console | None = None,
) -> ConsultationRun:
    """Upload `wav` as a new consultation's first turn, follow its events (printing each as it arrives when a
    console is given), then read the consultation back and download the reply audio into `out_dir`."""
    r = _check(
        client.post("/v1/consultations", json={"title": title}, headers=clinician), "create consultation", (201,)
    )
    cid = r.json()["id"]
    t0 = time.perf_counter()
    r = client.post(
        f"/v1/consultations/{cid}/turns",
        headers=clinician,
        files={"file": ("question.wav", wav, "audio/wav")},
        data={"language": language} if language else {},
    )
    body = _check(r, "upload the question", (202,)).json()
    run = ConsultationRun(consultation_id=cid, turn_id=body["turn_id"], upload_s=time.perf_counter() - t0)
    if console:
        console.print(
            f"consultation [cyan]{cid}[/cyan], turn [cyan]{run.turn_id}[/cyan] accepted in "
            f"{run.upload_s * 1000:.0f} ms; its events:"
        )

    deadline = time.monotonic() + timeout_s
    last, last_id, drops = None, None, 0
    while last not in TERMINAL and time.monotonic() < deadline:
        # Resumable: after a dropped connection, Last-Event-ID picks up after the last event seen.
        headers = {**clinician, **({"Last-Event-ID": last_id} if last_id else {})}
        try:
            with client.stream("GET", f"/v1/turns/{run.turn_id}/events", headers=headers) as stream:
                if stream.status_code != 200:
                    stream.read()
                    _check(stream, "follow the turn's events")
                for event_id, type_, data in sse_events(stream.iter_lines()):
                    at = time.perf_counter() - t0
                    run.events.append((at, type_, data))
                    if type_ == "sentence" and run.first_sentence_s is None:
                        run.first_sentence_s = at
                    elif type_ == "audio" and run.first_audio_s is None:
                        run.first_audio_s = at
                    if console:
                        console.print(f"  [dim]+{at:6.2f}s[/dim]  {describe_event(type_, data)}", soft_wrap=True)
                    last, last_id = type_, event_id or last_id
                    if type_ in TERMINAL or time.monotonic() > deadline:
                        break
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = "it ended before the turn did"
        if last in TERMINAL or time.monotonic() >= deadline:
            break
        drops += 1
        if drops > 3:
            raise DemoError(f"the event stream kept dropping: {problem}")
        if console:
            console.print(f"  [yellow]the event stream dropped ({escape(problem)}); resuming[/yellow]")
        time.sleep(1)
    if last == "done":
        run.done_s = run.events[-1][0]
    elif last in TERMINAL:
        raise DemoError(f"the turn ended with {last}: {run.events[-1][2].get('message') or run.events[-1][2]}")
    else:
        raise DemoError(f"no done event within {timeout_s:.0f}s (last event: {last})")

    detail = _check(client.get(f"/v1/consultations/{cid}", headers=clinician), "read the consultation")
    turns = [t for t in detail.json()["turns"] if t["id"] == run.turn_id]
    if not turns:
        raise DemoError(f"turn {run.turn_id} is missing from consultation {cid}")
    run.turn = turns[0]
    if run.turn["status"] != "done":
        raise DemoError(f"the turn is {run.turn['status']}: {run.turn['error']}")
    if run.turn["has_reply_audio"]:
        audio = _check(client.get(f"/v1/turns/{run.turn_id}/audio", headers=clinician), "download the reply")
        out_dir.mkdir(parents=True, exist_ok=True)
        run.reply_path = out_dir / f"reply-{run.turn_id}.wav"
        run.reply_path.write_bytes(audio.content)
    return run


def _secs(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def print_consultation(console: Console, run: ConsultationRun, dates: dict[str, str] | None = None) -> None:
    """Transcript, answer, citations (n, title, source, date, score), stage timings and the saved reply."""
    t = run.turn
    dates = dates or {}
    heard = t["transcript"] or t["question"] or ""
    console.print(Panel(escape(heard), title=f"transcript ({t['language']})", title_align="left"))
    guard = " · claim check fired" if t["guard_fired"] else ""
    console.print(Panel(escape(t["answer"] or ""), title=f"answer{guard}", title_align="left"))
    cites = Table("n", "title", "source", "date", "score", "cited", title="citations")
    for c in t["citations"]:
        cites.add_row(
            f"[{c['n']}]",
            escape(c["title"] or ""),
            escape(c["source"] or ""),
            dates.get(c["document_id"], "-"),
            f"{c['score']:.3f}",
            "yes" if c["cited"] else "[dim]no[/dim]",
        )
    console.print(cites)
    tm = t["timings"] or {}
    times = Table("stage", "seconds", title="timings")
    for stage in ("asr", "rag", "llm", "tts"):
        times.add_row(stage, _secs((tm.get(stage) or {}).get("total_s")))
    times.add_row("pipeline (sum of stages)", _secs(tm.get("pipeline_s")))
    times.add_row("wall (turn created → done)", _secs(tm.get("wall_s")))
    times.add_row("[dim]client: upload → first sentence[/dim]", _secs(run.first_sentence_s))
    times.add_row("[dim]client: upload → first audio[/dim]", _secs(run.first_audio_s))
    times.add_row("[dim]client: upload → done[/dim]", _secs(run.done_s))
    console.print(times)
    if run.reply_path:
        console.print(f"reply audio saved to [bold]{run.reply_path}[/bold]", soft_wrap=True)
    else:
        console.print("[yellow]the turn has no reply audio[/yellow]")


def chinese_consultation(
    console: Console,
    client: httpx.Client,
    clinician: dict[str, str],
    data_dir: Path,
    dates: dict[str, str] | None = None,
    timeout_s: float = 900.0,
    question: str = ZH_QUESTION,
) -> ConsultationRun:
    """One Chinese question asked aloud: the Mandarin voice says it (tts.synthesize picks the voice by the
    text's language), it goes through a consultation with ASR in Chinese, and the transcript, the cited answer
    and where the Chinese reply audio was saved are printed."""
    console.rule("a spoken question in Chinese, uploaded as demo-clinician")
    console.print(
        f"the Mandarin voice says: {escape(repr(question))}  [dim](tts.synthesize on the tts pool)[/dim]",
        soft_wrap=True,
    )
    wav = speak(question, data_dir)
    run = run_consultation(
        client,
        clinician,
        wav,
        out_dir=Path(data_dir) / "demo",
        language="zh",
        title="medvoice demo (中文)",
        timeout_s=timeout_s,
        console=console,
    )
    print_consultation(console, run, dates)
    return run
