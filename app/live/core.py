"""The streaming core both live protocols stand on (OpenAI Realtime, FunASR): audio in → utterances out.

A `LiveAudio` belongs to one session. PCM16 frames at the client's rate are checked, resampled to 16 kHz and
run through the session's own VAD (app/live/vad.py) in a thread, off the event loop. While the speaker talks,
the growing utterance is re-transcribed on the `live` queue every `partial_interval_s` of new audio, one partial
in flight per session, each dropped unstarted after `partial_expire_s` and none sent while the pool is behind on
finals (app/live/backlog.py) — so on a busy machine partials thin out before anything else slows — and only
words two hypotheses agree on are released (app/live/agreement.py). At the endpoint the utterance goes to the
protocol, which makes a turn or a final transcript of it.

Without VAD (push-to-talk, or a protocol that cuts utterances itself) audio is only buffered until `commit()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app import metrics as app_metrics
from app import task_client
from app.live.agreement import LocalAgreement
from app.live.audio import ASR_RATE, Resampler, pcm16
from app.live.backlog import BACKLOG, behind
from app.live.vad import KEEP_SILENCE_MS, Endpointer, VadStream
from workers.core.errors import InputTooLarge, MedvoiceError
from workers.core.settings import Settings

log = logging.getLogger("medvoice.live")
# VAD windows cost ~0.2 ms each: a few threads serve every session of the process without touching the loop.
_VAD_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vad")
FLOOD_SPEED = 4.0  # sustained audio faster than this many times real time is refused...
FLOOD_BURST_S = 15.0  # ...after a burst of this much (a client sending a file fast, then pacing)
PARTIAL_PRIORITY = 9  # Redis: 0 first, 9 last
MIN_PARTIAL_MS = 1000  # shorter (pre-roll included) is mostly not speech yet: Whisper guesses
SPECULATE_MS = KEEP_SILENCE_MS  # a pause this long starts the final transcript
FINAL_EXPIRE_S = 120.0  # ...which a live worker must start within this (then the turn's asr stage makes it)


@dataclass
class Utterance:
    audio: np.ndarray  # int16 at 16 kHz
    start_ms: int
    end_ms: int  # the last voiced sample, in the session's audio time
    reason: str  # silence | max_length | commit
    stopped_at: float  # time.perf_counter() when the endpoint was decided
    partial_text: str = ""  # what was released as partial transcript
    # The final transcript of this very audio, started at the speaker's first pause (None: there was none to use).
    speculation: asyncio.Task | None = None
    discarded: int = 0  # transcripts started at earlier pauses of this utterance, thrown away as speech resumed

    async def heard(self) -> dict | None:
        """The speculative final transcript, once it is done; None when there is none or it failed or is empty."""
        if self.speculation is None:
            return None
        with contextlib.suppress(asyncio.CancelledError):
            out = await self.speculation
            return out if out and (out.get("text") or "").strip() else None
        return None

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / ASR_RATE


@dataclass
class VadConfig:
    threshold: float
    silence_ms: int
    prefix_ms: int


class Listener:
    """What the protocol does with the core's events (each awaited in order)."""

    async def speech_started(self, at_ms: int) -> None: ...

    async def partial(self, delta: str, text: str) -> None: ...

    async def paused(self, text: str) -> None:
        """The transcript made at the speaker's first pause (the final one, if the pause becomes the endpoint)."""

    async def utterance(self, utterance: Utterance) -> None: ...


class LiveAudio:
    def __init__(
        self,
        settings: Settings,
        listener: Listener,
        rate: int,
        vad: VadConfig | None,
        language: Callable[[], str | None],
        partials: bool = True,
        hotwords: list[str] | None = None,
        flood_check: bool = True,
        speculate: bool = False,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.language = language
        self.partials = partials
        self.hotwords = hotwords
        self.flood_check = flood_check
        self.speculate = speculate
        self._speculation: tuple[int, asyncio.Task] | None = None  # (last voiced ms it covers, its transcript)
        self._discarded = 0  # in the current utterance
        self._resample = Resampler(rate)
        self.rate = rate
        self._buffer: list[np.ndarray] = []  # push-to-talk audio, or everything when VAD is off
        self._buffered = 0
        self._received_s = 0.0
        self._started = time.monotonic()
        self._agreement = LocalAgreement()
        self._partial_task: asyncio.Task | None = None
        self._partial_from_ms = 0  # utterance length at the last partial
        self._generation = 0  # bumps at every endpoint: a late partial of an earlier utterance is dropped
        self.partial_latency_s: list[float] = []
        self.endpointer: Endpointer | None = None
        self.configure(vad)
        self._open = True
        app_metrics.LIVE_SESSIONS.inc()

    # ---- configuration ---------------------------------------------------------------------------------------
    def configure(self, vad: VadConfig | None) -> None:
        s = self.settings
        if vad is None:
            self.endpointer = None
            return
        if self.endpointer is None:
            self.endpointer = Endpointer(
                release=s.live_vad_release,
                min_speech_ms=s.live_min_speech_ms,
                max_utterance_s=s.live_max_utterance_s,
                vad=VadStream(s.live_vad_model_path),
            )
        self.endpointer.threshold = vad.threshold
        self.endpointer.silence_ms = vad.silence_ms
        self.endpointer.prefix_ms = vad.prefix_ms

    @property
    def speaking(self) -> bool:
        return self.endpointer is not None and self.endpointer.speaking

    @property
    def buffered_s(self) -> float:
        return self._buffered / ASR_RATE

    # ---- audio in --------------------------------------------------------------------------------------------
    async def feed(self, raw: bytes) -> None:
        """One frame of PCM16 at the client's rate; InputError for a broken frame, InputTooLarge for a flood."""
        samples = pcm16(raw)
        seconds = samples.shape[0] / self.rate
        if self.flood_check:
            allowed = (time.monotonic() - self._started) * FLOOD_SPEED + FLOOD_BURST_S
            if self._received_s + seconds > allowed:
                raise InputTooLarge(
                    f"audio is arriving faster than {FLOOD_SPEED:g}x real time; this frame was dropped",
                    {"received_s": round(self._received_s, 2)},
                )
        self._received_s += seconds
        samples = self._resample(samples)
        if self.endpointer is None:
            if self.buffered_s + samples.shape[0] / ASR_RATE > self.settings.live_max_buffer_s:
                raise InputTooLarge(
                    f"more than {self.settings.live_max_buffer_s:g}s of audio buffered; commit or clear it",
                    {"max_s": self.settings.live_max_buffer_s},
                )
            self._buffer.append(samples)
            self._buffered += samples.shape[0]
            return
        events = await asyncio.get_running_loop().run_in_executor(_VAD_THREADS, self.endpointer.feed, samples)
        for ev in events:
            if ev.kind == "started":
                self._discarded = 0
                self._agreement.reset()
                self._partial_from_ms = 0
                await self.listener.speech_started(ev.at_ms)
            else:
                assert ev.audio is not None
                start = ev.start_ms if ev.start_ms is not None else ev.at_ms - int(ev.audio.shape[0] * 1000 / ASR_RATE)
                await self._endpoint(Utterance(ev.audio, max(0, start), ev.at_ms, ev.reason, time.perf_counter()))
        if self.speaking and self.speculate:
            self._maybe_speculate()
        if self.speaking and self.partials:
            self._maybe_partial()

    def commit(self) -> Utterance | None:
        """The buffered audio as an utterance (push-to-talk), or None when nothing is buffered."""
        if self.endpointer is not None and self.endpointer.speaking:
            audio = self.endpointer.current()
            self.endpointer.reset()
        else:
            audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, dtype=np.int16)
        self._buffer, self._buffered = [], 0
        self._generation += 1
        self._cancel_partial()
        if audio.shape[0] == 0:
            return None
        end = int(self._received_s * 1000)
        return Utterance(audio, max(0, end - int(audio.shape[0] * 1000 / ASR_RATE)), end, "commit", time.perf_counter())

    def continue_previous(self, max_gap_ms: int) -> bool:
        """Make the speech just started a continuation of the last utterance (see Endpointer.join_previous)."""
        if self.endpointer is None or not self.endpointer.join_previous(max_gap_ms):
            return False
        self._agreement.reset()
        self._partial_from_ms = 0
        return True

    def clear(self) -> None:
        self._buffer, self._buffered = [], 0
        if self.endpointer is not None:
            self.endpointer.reset()
        self._generation += 1
        self._cancel_partial()
        self._agreement.reset()

    async def close(self) -> None:
        self._cancel_partial()
        if self._open:
            self._open = False
            app_metrics.LIVE_SESSIONS.dec()

    # ---- utterances and partials -----------------------------------------------------------------------------
    async def _endpoint(self, utterance: Utterance) -> None:
        self._generation += 1
        self._cancel_partial()
        utterance.speculation = self._take_speculation(utterance)
        utterance.discarded, self._discarded = self._discarded, 0
        utterance.partial_text = self._agreement.text
        self._agreement.reset()
        await self.listener.utterance(utterance)

    # ---- the final transcript, started at the first pause ----------------------------------------------------
    # The speaker pauses; if the pause becomes the endpoint, the utterance's audio is exactly what was heard when
    # the pause began (the endpointer keeps SPECULATE_MS of trailing silence, the length of the pause awaited
    # here), so its final transcript can start then rather than after the whole endpoint silence. Speech that
    # resumes discards it.
    def _maybe_speculate(self) -> None:
        assert self.endpointer is not None
        e = self.endpointer
        if self._speculation is not None and self._speculation[0] != e.last_voice_ms:
            self._speculation[1].cancel()  # speech resumed: a new pause will make a new one
            self._speculation = None
            self._discarded += 1
        if self._speculation is None and e.silent_ms >= SPECULATE_MS and e.silent_ms < e.silence_ms:
            task = asyncio.create_task(self._speculate(e.current()))
            self._speculation = (e.last_voice_ms, task)

    def _take_speculation(self, utterance: Utterance) -> asyncio.Task | None:
        spec, self._speculation = self._speculation, None
        if spec is None:
            return None
        voice_ms, task = spec
        if voice_ms != utterance.end_ms or utterance.reason != "silence":
            task.cancel()  # speech went on after the pause it was made at: it is not this utterance's audio
            self._discarded += 1
            return None
        return task

    async def _speculate(self, audio: np.ndarray) -> dict | None:
        """The final transcript started at a pause. Not dropped for waiting as a partial is (the endpoint needs
        it, and making it again later is the same work); revoked when speech resumes, so a worker that has not
        started it skips it."""
        with BACKLOG.waiting():
            try:
                out = await task_client.call_async(
                    "live.transcribe",
                    self._task_kwargs(audio, partial=False),
                    timeout_s=FINAL_EXPIRE_S + 10,
                    expires_s=FINAL_EXPIRE_S,
                    revoke_on_cancel=True,  # speech resumed: a worker that has not started it skips it
                )
            except MedvoiceError as exc:
                log.info("speculative transcript skipped: %s", exc.code)
                return None
        text = ((out or {}).get("text") or "").strip()
        if text:
            with contextlib.suppress(Exception):  # the listener's use of it must not lose the transcript
                await self.listener.paused(text)
        return out

    def _task_kwargs(self, audio: np.ndarray, partial: bool) -> dict:
        return {
            "pcm": base64.b64encode(audio.astype("<i2").tobytes()).decode("ascii"),
            "language": self.language(),
            "hotwords": self.hotwords,
            "partial": partial,
            "fit_window": self.settings.live_asr_fit_window,
            "busy": not partial and behind(self.settings),
        }

    async def _transcribe_partial(self, audio: np.ndarray) -> dict | None:
        try:
            return await task_client.call_async(
                "live.transcribe",
                self._task_kwargs(audio, partial=True),
                timeout_s=self.settings.live_partial_expire_s + 10,
                expires_s=self.settings.live_partial_expire_s,
                # Partials go after every other waiting task (a final transcript, a turn's stages): a busy
                # machine thins them out first.
                priority=PARTIAL_PRIORITY,
            )
        except MedvoiceError as exc:
            log.info("partial transcript skipped: %s", exc.code)
            return None

    def _cancel_partial(self) -> None:
        if self._partial_task is not None and not self._partial_task.done():
            self._partial_task.cancel()
        self._partial_task = None

    def _maybe_partial(self) -> None:
        assert self.endpointer is not None
        grown = self.endpointer.utterance_ms - self._partial_from_ms
        if grown < self.settings.live_partial_interval_s * 1000 or self.endpointer.utterance_ms < MIN_PARTIAL_MS:
            return
        if self._partial_task is not None and not self._partial_task.done():
            return  # one in flight per session: a slow machine gets fewer partials, never a queue of them
        if self.endpointer.silent_ms > 0 or self._speculation is not None:
            return  # a pause may be the end: the live pool is kept free for the final transcript
        if behind(self.settings):
            return  # the pool is behind on finals: they come first
        self._partial_from_ms = self.endpointer.utterance_ms
        audio = self.endpointer.current()
        self._partial_task = asyncio.create_task(self._partial(audio, self._generation))

    async def _partial(self, audio: np.ndarray, generation: int) -> None:
        t0 = time.perf_counter()
        out = await self._transcribe_partial(audio)
        if out is None or generation != self._generation:
            return  # failed (finals matter, a missed partial does not), or the utterance ended meanwhile
        self.partial_latency_s.append(time.perf_counter() - t0)
        app_metrics.PARTIAL_SECONDS.observe(self.partial_latency_s[-1])
        delta = self._agreement.update(out.get("text") or "")
        if delta:
            with contextlib.suppress(Exception):
                await self.listener.partial(delta, self._agreement.text)
