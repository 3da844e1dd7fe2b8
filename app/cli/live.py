"""`medvoice live`: hold a live voice consultation from the command line — a recording streamed at real-time
pace through `/v1/realtime` (the OpenAI Realtime protocol), as a microphone would, with what comes back printed
and the reply audio saved. The demo uses the same client."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

RATE = 24000
FRAME_S = 0.1


@dataclass
class LiveRun:
    transcript: str = ""
    partials: list[str] = field(default_factory=list)
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    turn_id: str | None = None
    consultation_id: str | None = None
    reply_pcm: bytearray = field(default_factory=bytearray)
    end_of_speech_to_first_audio_s: float | None = None
    errors: list[str] = field(default_factory=list)


def pcm24(path: Path) -> bytes:
    """A recording (any format soundfile reads) as PCM16 mono 24 kHz."""
    import soundfile as sf
    import soxr

    samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return soxr.resample(samples[:, 0], rate, RATE).astype("<i2").tobytes()


async def converse(
    ws_url: str, token: str, audio: bytes, language: str | None, console: Console | None = None, timeout_s: float = 300
) -> LiveRun:
    """Stream `audio` (PCM16 24 kHz) with server VAD, then silence, and collect the first reply."""
    import websockets

    run = LiveRun()
    silence = bytes(int(RATE * 1.5) * 2)
    session = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
    if language:
        session["audio"]["input"]["transcription"] = {"language": language}
    say = console.print if console else (lambda *_a, **_k: None)
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        ended: dict[str, float] = {}

        async def send_audio() -> None:
            step = int(RATE * FRAME_S) * 2
            data = audio + silence
            t0 = time.perf_counter()
            for i in range(0, len(data), step):
                await asyncio.sleep(max(0.0, t0 + i / 2 / RATE - time.perf_counter()))
                chunk = base64.b64encode(data[i : i + step]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                if i + step >= len(audio) and "speech" not in ended:
                    ended["speech"] = time.perf_counter()

        sender = asyncio.create_task(send_audio())
        try:
            async with asyncio.timeout(timeout_s):
                async for raw in ws:
                    ev = json.loads(raw)
                    kind = ev["type"]
                    if kind == "conversation.item.input_audio_transcription.delta":
                        run.partials.append(ev["delta"])
                        say(f"[dim]… {escape(''.join(run.partials))}[/dim]", soft_wrap=True)
                    elif kind == "conversation.item.input_audio_transcription.completed":
                        run.transcript = ev["transcript"]
                        say(f"heard: {escape(run.transcript)}", soft_wrap=True)
                    elif kind == "response.output_audio_transcript.delta":
                        run.answer += ev["delta"]
                    elif kind == "response.output_audio.delta":
                        if not run.reply_pcm and "speech" in ended:
                            run.end_of_speech_to_first_audio_s = round(time.perf_counter() - ended["speech"], 2)
                        run.reply_pcm.extend(base64.b64decode(ev["delta"]))
                    elif kind == "error":
                        run.errors.append(f"{ev['error'].get('code')}: {ev['error'].get('message')}")
                        say(f"[red]error[/red] {escape(run.errors[-1])}", soft_wrap=True)
                    elif kind == "response.done":
                        resp = ev["response"]
                        run.status = resp.get("status")
                        extras = resp.get("medvoice") or {}
                        run.citations = extras.get("citations") or []
                        run.turn_id = extras.get("turn_id")
                        run.consultation_id = extras.get("consultation_id")
                        break
        finally:
            sender.cancel()
    return run


def save_reply(run: LiveRun, path: Path) -> Path | None:
    if not run.reply_pcm:
        return None
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.frombuffer(bytes(run.reply_pcm), dtype="<i2"), RATE, subtype="PCM_16")
    return path


def print_run(console: Console, run: LiveRun, saved: Path | None) -> None:
    console.print(f"answer ({run.status}): {escape(run.answer)}", soft_wrap=True)
    for c in run.citations:
        mark = "cited" if c.get("cited") else "retrieved"
        console.print(f"  [{c.get('n')}] {escape(str(c.get('title')))} ({escape(str(c.get('source')))}, {mark})")
    if run.end_of_speech_to_first_audio_s is not None:
        console.print(f"end of the recording → first reply audio: {run.end_of_speech_to_first_audio_s:.2f}s")
    if saved:
        console.print(f"reply audio: {saved}")
    if run.consultation_id:
        console.print(f"consultation {run.consultation_id}, turn {run.turn_id}")


def live(
    file: Path = typer.Option(..., "--file", exists=True, dir_okay=False, help="A recording of the question."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The API."),
    user: str = typer.Option("", help="Sign in as this user (asks for the password) ..."),
    token: str = typer.Option("", envvar="MEDVOICE_TOKEN", help="... or use this JWT."),
    password: str = typer.Option("", envvar="MEDVOICE_PASSWORD", hidden=True),
    language: str = typer.Option("", help="en, zh, or empty to detect."),
    out: Path = typer.Option(Path("live-reply.wav"), help="Where to save the reply audio."),
) -> None:
    """Stream a recording through a live voice consultation and print the transcript and the cited answer."""
    console = Console()
    if not token:
        if not user:
            raise typer.BadParameter("give --user (and the password when asked) or --token / MEDVOICE_TOKEN")
        secret = password or typer.prompt("password", hide_input=True)
        r = httpx.post(f"{url}/v1/auth/token", data={"username": user, "password": secret}, timeout=30)
        if r.status_code != 200:
            raise typer.BadParameter(f"sign-in failed: HTTP {r.status_code}")
        token = r.json()["access_token"]
    ws_url = url.replace("https://", "wss://").replace("http://", "ws://") + "/v1/realtime"
    run = asyncio.run(converse(ws_url, token, pcm24(file), language or None, console))
    print_run(console, run, save_reply(run, out))
    if run.status != "completed":
        raise typer.Exit(code=1)
