"""A live session's speculative prefill (workers/pipeline/prefill.py), from the gateway's side.

What the clinician has said so far (a partial transcript of enough words, then the transcript made at the first
pause) is offered; `rag.prefill` retrieves for it and says whether the LLM will write the answer, and if so
`llm.prefill` evaluates that answer's prompt up to its question. One chain in flight per session, the newest
text offered meanwhile next; each task is dropped when not started within PREFILL_EXPIRE_S, at the lowest
priority, so a busy machine thins speculation out before anything else. At the endpoint a prefill still running
for other words is told to stop (between batches of tokens): the turn's own llm stage must not wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from app import task_client
from workers.core.errors import MedvoiceError
from workers.core.settings import Settings

log = logging.getLogger("medvoice.live")
PREFILL_EXPIRE_S = 1.5
PRIORITY = 9  # Redis: last, with the partial transcripts
MIN_WORDS = 4  # fewer words rarely retrieve what the whole question will
MIN_CJK = 6
_CJK = re.compile(r"[\u3400-\u9fff]")


def long_enough(text: str) -> bool:
    return len(_CJK.findall(text)) >= MIN_CJK or len(text.split()) >= MIN_WORDS


class Prefiller:
    def __init__(self, settings: Settings, consultation_id: str, language: Callable[[], str | None]) -> None:
        self.settings = settings
        self.consultation_id = consultation_id
        self.language = language
        self.sent = 0  # llm prefills sent since the last endpoint
        self._task: asyncio.Task | None = None
        self._next: str | None = None
        self._last: str | None = None
        self._running: tuple[str, str] | None = None  # (its text, its stop ticket) while llm.prefill runs
        self._chunks: list[Any] = []  # the passages of the last llm.prefill sent (this utterance)

    def offer(self, text: str) -> None:
        text = text.strip()
        if not self.settings.live_prefill or not long_enough(text) or text == self._last:
            return
        if self._task is not None and not self._task.done():
            self._next = text
            return
        self._task = asyncio.create_task(self._run(text))

    def endpoint(self, final_text: str | None) -> int:
        """The utterance ended: a prefill running for other words than `final_text` stops. Returns the number of
        llm prefills sent for it."""
        final = (final_text or "").strip()
        if self._next != final:
            self._next = None
        if self._running is not None and self._running[0] != final:
            self._stop(self._running[1])
        sent, self.sent = self.sent, 0
        self._chunks = []
        return sent

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self, text: str | None) -> None:
        while text is not None:
            self._last = text
            with contextlib.suppress(MedvoiceError):
                await self._prefill(text)
            text, self._next = self._next, None

    async def _prefill(self, text: str) -> None:
        language = self.language()
        found: dict[str, Any] = await task_client.call_async(
            "rag.prefill",
            {"question": text, "language": language},
            timeout_s=PREFILL_EXPIRE_S + 10,
            expires_s=PREFILL_EXPIRE_S,
            priority=PRIORITY,
        )
        if not found.get("llm"):
            return
        chunks = [p.get("chunk_id") for p in found.get("passages") or []]
        if chunks == self._chunks:
            return  # the last prefill had these passages: its prompt is most likely in the cache still
        self._chunks = chunks
        ticket = uuid.uuid4().hex
        self._running = (text, ticket)
        self.sent += 1
        try:
            await task_client.call_async(
                "llm.prefill",
                {
                    "question": text,
                    "passages": found.get("passages") or [],
                    "language": found.get("language") or language,
                    "consultation_id": self.consultation_id,
                    "ticket": ticket,
                },
                timeout_s=PREFILL_EXPIRE_S + 30,
                expires_s=PREFILL_EXPIRE_S,
                priority=PRIORITY,
            )
        finally:
            self._running = None

    def _stop(self, ticket: str) -> None:
        from workers.pipeline.prefill import stop

        try:
            stop(ticket)
        except Exception as exc:  # noqa: BLE001 - a prefill left running only delays; it is never wrong
            log.info("prefill stop not sent: %s", type(exc).__name__)
