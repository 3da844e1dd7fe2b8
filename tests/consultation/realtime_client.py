"""What the live-session tests share: a Realtime client of the official `openai` package, real-time audio
streaming, and an event collector."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import openai
import websockets

RATE = 24000


def silence(seconds: float) -> bytes:
    return np.zeros(int(RATE * seconds), dtype="<i2").tobytes()


async def stream(conn, audio: bytes, pace: float = 1.0, chunk_s: float = 0.1) -> None:
    """Append audio in chunks at real-time pace (pace 1.0), as a microphone would."""
    step = int(RATE * chunk_s) * 2
    t0 = time.monotonic()
    for i in range(0, len(audio), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + step]).decode())
        due = t0 + (i + step) / 2 / RATE / pace
        await asyncio.sleep(max(0.0, due - time.monotonic()))


class Collector:
    """Every server event of a connection, in order, as (arrival time, type, dict)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.events: list[tuple[float, str, dict]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with_suppress = (openai.OpenAIError, websockets.exceptions.ConnectionClosed)
        try:
            async for event in self.conn:
                self.events.append((time.monotonic(), event.type, event.model_dump()))
        except with_suppress:
            pass

    def of(self, type_: str) -> list[dict]:
        return [e for _t, ty, e in self.events if ty == type_]

    async def until(self, type_: str, count: int = 1, timeout_s: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.of(type_)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}× {type_} in {timeout_s}s; saw {[t for _, t, _ in self.events]}")
            await asyncio.sleep(0.05)
        return self.of(type_)


def client(server: str, key: str):
    # The beta connection assumes wss:// unless told the WebSocket base (a clinic's TLS proxy would give wss).
    return openai.AsyncOpenAI(
        base_url=f"http://{server}/v1", websocket_base_url=f"ws://{server}/v1", api_key=key, max_retries=0
    )
