"""A FunASR WebSocket client written from the protocol description (not FunASR's code), for tests and bench/.

It does what FunASR's Python client does: connect to the root path offering the `binary` subprotocol and no ping,
send the JSON configuration, PCM16 frames of `chunk_ms` (at real-time pace, or as fast as it can), then
`{"is_speaking": false}` (with `"is_end": true` for the newer style), and collect every reply until the final one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Result:
    messages: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.perf_counter() of each reply
    audio_done_at: float = 0.0  # when the last frame was sent
    close_code: int | None = None
    close_reason: str = ""

    def of(self, *modes: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("mode") in modes and "error" not in m]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "error" in m]

    def printed(self, mode: str) -> str:
        """The text a FunASR client shows at the end: each final appended (2pass: finals replace partials)."""
        if mode == "2pass":
            return "".join(m["text"] for m in self.of("2pass-offline"))
        return "".join(m["text"] for m in self.of(mode))

    @property
    def final(self) -> dict[str, Any] | None:
        finals = [m for m in self.messages if m.get("is_final") and not m.get("is_end")]
        return finals[-1] if finals else None


def pcm_frames(pcm: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    step = int(rate * chunk_ms / 1000) * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def config(mode: str, wav_name: str = "demo", rate: int = 16000, **extra: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "chunk_size": [5, 10, 5],
        "chunk_interval": 10,
        "encoder_chunk_look_back": 4,
        "decoder_chunk_look_back": 0,
        "audio_fs": rate,
        "wav_name": wav_name,
        "wav_format": "pcm",
        "is_speaking": True,
        "hotwords": "",
        "itn": True,
        **extra,
    }


async def run(
    uri: str,
    first: dict[str, Any] | str | bytes | None,
    frames: list[bytes | str],
    *,
    frame_s: float = 0.0,
    end: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    after_end_s: float = 0.0,
    timeout_s: float = 300.0,
    disconnect_after: int | None = None,
) -> Result:
    """One session; `frame_s` is each frame's duration, to send at real-time pace (0: as fast as possible).
    Returns when the final (or the is_end reply, when asked for) arrived, the server closed, or `after_end_s`
    passed after the end-of-input message (older clients wait a little, then close)."""
    import websockets

    out = Result()
    end = {"is_speaking": False} if end is None else end
    async with websockets.connect(
        uri, subprotocols=["binary"], ping_interval=None, additional_headers=headers, max_size=None
    ) as ws:

        async def reader() -> None:
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    out.messages.append(msg)
                    out.received_at.append(time.perf_counter())
                    if end.get("is_end") and msg.get("is_end"):
                        return
                    if not end.get("is_end") and msg.get("is_final") and "error" not in msg and sent_end.is_set():
                        return
            except websockets.ConnectionClosed:
                pass

        sent_end = asyncio.Event()
        task = asyncio.create_task(reader())
        if first is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps(first, ensure_ascii=False) if isinstance(first, dict) else first)
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            if disconnect_after is not None and i == disconnect_after:
                await ws.close()
                task.cancel()
                return out
            if task.done():
                break  # the server closed the connection
            try:
                await ws.send(frame)
            except websockets.ConnectionClosed:
                break
            await asyncio.sleep(max(0.0, t0 + (i + 1) * frame_s - time.monotonic()) if frame_s else 0)
        out.audio_done_at = time.perf_counter()
        if not task.done() and end:
            sent_end.set()
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps(end))
        try:
            await asyncio.wait_for(task, after_end_s or timeout_s)
        except TimeoutError:
            task.cancel()
        if ws.close_code is not None:
            out.close_code, out.close_reason = ws.close_code, ws.close_reason or ""
    return out


def as_pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()
