"""The OpenAI Realtime protocol on the streaming core: a live voice consultation any Realtime client can hold.

One `RealtimeSession` per WebSocket. Client events are those of OpenAI's Realtime API (`session.update`,
`input_audio_buffer.append|commit|clear`, `conversation.item.create|truncate`, `response.create|cancel`); server
events carry the fields the official clients' types carry, in the dialect the client speaks: the beta API
(`OpenAI-Beta: realtime=v1`: `response.audio.delta`, `conversation.item.created`, flat session fields) or the GA
API (`response.output_audio.delta`, `conversation.item.added`, `session.audio.input...`).

Each committed utterance becomes a Turn exactly like a REST upload (stored audio, the asr → rag → llm → tts
pipeline, citations, timings, audit); its transcript is made on the live pool. The reply streams back as the
pipeline produces it: each answer sentence as a transcript delta when the llm stage emits it, each sentence's
clip as audio deltas (PCM16 24 kHz) once synthesized, paced no more than `live_audio_lead_s` ahead of playback so
that speech over the answer (barge-in) or `response.cancel` stops it: the turn's cancel flag stops generation at
the next token and drops queued synthesis, no further delta is sent, and `response.done` says `cancelled` with
`turn_detected` or `client_cancelled`. The turn records that it was interrupted and how much was heard.

What the clinic's grounding adds rides in fields clients ignore: `response.metadata` (string values, as the API
types them: turn id, citations as JSON, answer mode, whether a check replaced a sentence) and `response.medvoice`
(the same, structured). Session `instructions` are kept but never reach the model: answers come from the
knowledge base and its checks only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fastapi import WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import metrics as app_metrics
from app.live import records
from app.live.audio import from_base64, read_wav, to_rate, wav_bytes
from app.live.core import Listener, LiveAudio, Utterance, VadConfig
from app.live.follow import STALLED, follow
from app.live.prefill import Prefiller
from workers.core import events
from workers.core.errors import BrokerUnavailable, InputError, MedvoiceError
from workers.core.refs import resolve_ref
from workers.core.settings import Settings
from workers.pipeline import STAGES

log = logging.getLogger("medvoice.live.realtime")
OUT_RATE = 24000  # the Realtime API's PCM16 rate, both ways
CHUNK_S = 0.2  # one audio delta
MODEL = "medvoice-realtime"

# The GA name of each server event whose beta name differs.
_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}


class Dialect(StrEnum):
    beta = "beta"
    ga = "ga"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


class ClientError(Exception):
    """A client event that cannot be honoured: an `error` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


# ---- session configuration ---------------------------------------------------------------------------------
@dataclass
class Config:
    language: str | None = None
    vad: VadConfig | None = None
    create_response: bool = True
    interrupt_response: bool = True
    audio_out: bool = True
    voice: str = "alloy"
    instructions: str = ""
    transcription_model: str = "whisper-1"


def default_config(settings: Settings) -> Config:
    return Config(vad=VadConfig(settings.live_vad_threshold, settings.live_silence_ms, settings.live_prefix_padding_ms))


def _check(value: Any, kind: type | tuple[type, ...], param: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ClientError("invalid_value", f"{param} has the wrong type", param)
    return value


def _format(fmt: Any, param: str) -> None:
    """pcm16 at 24 kHz only: the beta's "pcm16", the GA's {"type": "audio/pcm", "rate": 24000}."""
    if fmt is None or fmt == "pcm16":
        return
    if isinstance(fmt, dict) and fmt.get("type", "audio/pcm") == "audio/pcm" and fmt.get("rate", OUT_RATE) == OUT_RATE:
        return
    raise ClientError(
        "unsupported_audio_format", "only PCM16 mono at 24000 Hz is supported (pcm16 / audio/pcm rate 24000)", param
    )


def _turn_detection(td: Any, current: Config, settings: Settings, param: str) -> None:
    if td is None:
        current.vad = None  # push-to-talk: the client commits
        return
    _check(td, dict, param)
    if td.get("type", "server_vad") not in ("server_vad", "semantic_vad"):
        raise ClientError("invalid_value", "turn_detection.type must be server_vad or semantic_vad", f"{param}.type")
    vad = current.vad or VadConfig(
        settings.live_vad_threshold, settings.live_silence_ms, settings.live_prefix_padding_ms
    )
    if td.get("threshold") is not None:
        t = _check(td["threshold"], (int, float), f"{param}.threshold")
        if not 0 < t < 1:
            raise ClientError("invalid_value", "threshold must be between 0 and 1", f"{param}.threshold")
        vad.threshold = float(t)
    for key, attr, low, high in (
        ("silence_duration_ms", "silence_ms", 100, 5000),
        ("prefix_padding_ms", "prefix_ms", 0, 2000),
    ):
        if td.get(key) is not None:
            v = _check(td[key], int, f"{param}.{key}")
            if not low <= v <= high:
                raise ClientError("invalid_value", f"{key} must be from {low} to {high}", f"{param}.{key}")
            setattr(vad, attr, v)
    for key in ("create_response", "interrupt_response"):
        if td.get(key) is not None:
            setattr(current, key, bool(_check(td[key], bool, f"{param}.{key}")))
    current.vad = vad


def _language(tr: Any, current: Config, param: str) -> None:
    if tr is None:
        return
    _check(tr, dict, param)
    lang = tr.get("language")
    if lang is not None and lang != "":
        if not isinstance(lang, str) or not re.fullmatch(r"[a-z]{2,3}", lang.strip().lower()):
            raise ClientError("invalid_value", 'language must be a code such as "en" or "zh"', f"{param}.language")
        current.language = lang.strip().lower()
    elif "language" in tr:
        current.language = None  # detect
    if isinstance(tr.get("model"), str):
        current.transcription_model = tr["model"]


def apply_update(session: Any, current: Config, settings: Settings) -> Config:
    """`session.update`'s session, in either dialect's shape; unknown fields are ignored as OpenAI does."""
    _check(session, dict, "session")
    if "type" in session and session["type"] not in ("realtime", None):
        raise ClientError("invalid_value", 'session.type must be "realtime"', "session.type")
    audio = session.get("audio")
    if audio is not None:  # GA shape
        _check(audio, dict, "session.audio")
        inp = _check(audio.get("input") or {}, dict, "session.audio.input")
        out = _check(audio.get("output") or {}, dict, "session.audio.output")
        _format(inp.get("format"), "session.audio.input.format")
        _format(out.get("format"), "session.audio.output.format")
        _language(inp.get("transcription"), current, "session.audio.input.transcription")
        if "turn_detection" in inp:
            _turn_detection(inp["turn_detection"], current, settings, "session.audio.input.turn_detection")
        if isinstance(out.get("voice"), str):
            current.voice = out["voice"]
    _format(session.get("input_audio_format"), "session.input_audio_format")
    _format(session.get("output_audio_format"), "session.output_audio_format")
    _language(session.get("input_audio_transcription"), current, "session.input_audio_transcription")
    if "turn_detection" in session:
        _turn_detection(session["turn_detection"], current, settings, "session.turn_detection")
    modalities = session.get("output_modalities", session.get("modalities"))
    if modalities is not None:
        if not isinstance(modalities, list) or not set(modalities) <= {"audio", "text"} or not modalities:
            raise ClientError("invalid_value", 'modalities must be ["audio"], ["text"] or both', "session.modalities")
        current.audio_out = "audio" in modalities
    if isinstance(session.get("voice"), str):
        current.voice = session["voice"]
    if isinstance(session.get("instructions"), str):
        current.instructions = session["instructions"][:4000]
    return current


def session_object(config: Config, dialect: Dialect, session_id: str, settings: Settings) -> dict[str, Any]:
    td = (
        None
        if config.vad is None
        else {
            "type": "server_vad",
            "threshold": config.vad.threshold,
            "prefix_padding_ms": config.vad.prefix_ms,
            "silence_duration_ms": config.vad.silence_ms,
            "create_response": config.create_response,
            "interrupt_response": config.interrupt_response,
        }
    )
    transcription = {"model": config.transcription_model, "language": config.language}
    common = {
        "id": session_id,
        "object": "realtime.session",
        "model": MODEL,
        "instructions": config.instructions,
        "tools": [],
        "tool_choice": "auto",
        "expires_at": int(time.time() + settings.live_max_session_s),
    }
    if dialect is Dialect.beta:
        return {
            **common,
            "modalities": ["audio", "text"] if config.audio_out else ["text"],
            "voice": config.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": transcription,
            "turn_detection": td,
            "max_response_output_tokens": "inf",
        }
    pcm = {"type": "audio/pcm", "rate": OUT_RATE}
    return {
        "type": "realtime",
        **common,
        "output_modalities": ["audio"] if config.audio_out else ["text"],
        "audio": {
            "input": {"format": pcm, "transcription": transcription, "turn_detection": td},
            "output": {"format": pcm, "voice": config.voice},
        },
        "max_output_tokens": "inf",
    }


def _user_item(item_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [content],
    }


# ---- conversation state --------------------------------------------------------------------------------------
@dataclass
class UserItem:
    id: str
    turn_id: str
    kind: str  # audio | text
    # When the speech ended (audio items): the utterance's audio itself is not kept, it is in the turn's record and
    # a long session remembers its last 50 items.
    stopped_at: float | None = None
    answered: bool = False
    transcript: str | None = None
    transcribed: asyncio.Event = field(default_factory=asyncio.Event)
    stream_after: str = "0-0"  # the turn's events already relayed (a transcript-only follower's)
    made_s: float | None = None  # endpoint → its turn recorded and sent to the pools


@dataclass
class Reply:
    id: str
    item_id: str
    user: UserItem
    audio_out: bool
    task: asyncio.Task | None = None
    created: bool = False  # response.created was sent
    finished: bool = False
    cancelling: bool = False
    text: list[str] = field(default_factory=list)
    clips: dict[int, str] = field(default_factory=dict)
    next_clip: int = 0
    sentences: int | None = None
    sent_s: float = 0.0
    play_start: float | None = None
    first_text_s: float | None = None
    first_audio_s: float | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    answered: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def heard_s(self) -> float:
        if self.play_start is None:
            return 0.0
        return round(min(self.sent_s, time.perf_counter() - self.play_start), 3)


class RealtimeSession(Listener):
    def __init__(
        self,
        ws: WebSocket,
        settings: Settings,
        user_id: str,
        consultation_id: str,
        session_id: str,
        dialect: Dialect,
        config: Config | None = None,
    ) -> None:
        self.ws = ws
        self.settings = settings
        self.user_id = user_id
        self.consultation_id = consultation_id
        self.id = session_id
        self.dialect = dialect
        self.config = config or default_config(settings)
        self.audio = LiveAudio(
            settings,
            self,
            rate=OUT_RATE,
            vad=self.config.vad,
            language=lambda: self.config.language,
            speculate=settings.live_speculate,
        )
        self._send_lock = asyncio.Lock()
        self._items: list[UserItem] = []
        self._replies: dict[str, Reply] = {}  # by assistant item id
        self._speech_item: str | None = None
        self._last_committed: str | None = None  # the newest user item's id (previous_item_id of the next)
        self._taking: asyncio.Task | None = None  # the newest utterance's turn being made
        self._superseded: set[str] = set()  # user items whose question went on in the next utterance
        self._background: set[asyncio.Task] = set()
        self.prefiller = Prefiller(settings, consultation_id, lambda: self.config.language)
        self.closed = False
        self.turns = 0
        self.barge_ins = 0

    # ---- sending ---------------------------------------------------------------------------------------------
    async def send(self, type_: str, **fields: Any) -> None:
        if self.closed:
            return
        if self.dialect is Dialect.beta:
            type_ = _BETA.get(type_, type_)
        event = {"type": type_, "event_id": new_id("event"), **fields}
        async with self._send_lock:
            if self.ws.client_state != WebSocketState.CONNECTED:
                self.closed = True
                return
            try:
                await self.ws.send_text(json.dumps(event, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True  # the client went away: the turn goes on in the workers and is recorded

    async def error(self, code: str, message: str, param: str | None = None, event_id: str | None = None) -> None:
        await self.send(
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    async def _content(self, type_: str, reply: Reply, **fields: Any) -> None:
        """An event about the reply's one content part (output 0, content 0)."""
        await self.send(type_, response_id=reply.id, item_id=reply.item_id, output_index=0, content_index=0, **fields)

    async def _item_added(self, item: dict[str, Any], previous: str | None) -> None:
        if self.dialect is Dialect.beta:
            await self.send("conversation.item.created", previous_item_id=previous, item=item)
        else:
            await self.send("conversation.item.added", previous_item_id=previous, item=item)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ---- client events ---------------------------------------------------------------------------------------
    def _session(self) -> dict[str, Any]:
        # Which consultation the session writes to, in a field clients ignore (a client that let the server open
        # the consultation learns its id here).
        obj = session_object(self.config, self.dialect, self.id, self.settings)
        return {**obj, "medvoice": {"consultation_id": self.consultation_id}}

    async def start(self) -> None:
        await self.send("session.created", session=self._session())

    async def handle(self, event: dict[str, Any]) -> None:
        type_ = event.get("type")
        handler = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._response_cancel,
        }.get(type_ if isinstance(type_, str) else "")
        if handler is None:
            raise ClientError("unknown_event", f"unknown or unsupported event type: {str(type_)[:80]!r}", "type")
        await handler(event)

    async def _session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise ClientError("missing_required_parameter", "session.update needs a session object", "session")
        session = event["session"]
        if (
            isinstance(session, dict)
            and self.dialect is Dialect.ga
            and "input_audio_format" in session
            and "type" not in session
        ):
            self.dialect = Dialect.beta  # a beta-shaped client that did not send the beta header
        self.config = apply_update(session, self.config, self.settings)
        self.audio.configure(self.config.vad)
        await self.send("session.updated", session=self._session())

    async def _append(self, event: dict[str, Any]) -> None:
        if "audio" not in event:
            raise ClientError("missing_required_parameter", "input_audio_buffer.append needs audio", "audio")
        try:
            await self.audio.feed(from_base64(event["audio"]))
        except InputError as exc:
            raise ClientError(exc.code, exc.message, "audio") from None

    async def _commit(self, _event: dict[str, Any]) -> None:
        utterance = self.audio.commit()
        if utterance is None or utterance.duration_s < 0.1:
            raise ClientError(
                "input_audio_buffer_commit_empty", "the input audio buffer holds less than 100 ms of audio"
            )
        await self.utterance(utterance)

    async def _clear(self, _event: dict[str, Any]) -> None:
        self.audio.clear()
        self._speech_item = None
        await self.send("input_audio_buffer.cleared")

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            raise ClientError("missing_required_parameter", "conversation.item.create needs an item", "item")
        if item.get("type", "message") != "message" or item.get("role") not in ("user", "system"):
            raise ClientError("unsupported_item", "only user (and system) message items are supported", "item.type")
        if item.get("role") == "system":
            system_id = item.get("id") if isinstance(item.get("id"), str) and len(item["id"]) <= 64 else new_id("item")
            previous, self._last_committed = self._last_committed, system_id
            await self._item_added({**item, "id": system_id, "status": "completed"}, previous)
            return  # accepted and kept out of the answer: grounding is the knowledge base's
        content = item.get("content")
        texts = [
            c.get("text")
            for c in content or []
            if isinstance(c, dict) and c.get("type") in ("input_text", "text") and isinstance(c.get("text"), str)
        ]
        text = " ".join(t.strip() for t in texts if t.strip())
        if not text:
            raise ClientError("missing_required_parameter", "the item needs input_text content", "item.content")
        item_id = item.get("id") if isinstance(item.get("id"), str) and len(item["id"]) <= 64 else new_id("item")
        if self._taking is not None:  # an utterance spoken before this item is made first
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._taking)
        previous, self._last_committed = self._last_committed, item_id
        turn_id = await self._add_turn({"kind": "text", "text": text, "language": self.config.language}, None, item_id)
        if turn_id is None:
            return
        user = UserItem(item_id, turn_id, "text", transcript=text)
        user.transcribed.set()
        self._remember(user)
        await self._item_added(_user_item(item_id, {"type": "input_text", "text": text}), previous)

    async def _response_create(self, _event: dict[str, Any]) -> None:
        if self._taking is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._taking)
        pending = next((u for u in reversed(self._items) if not u.answered), None)
        if pending is None:
            raise ClientError("no_input", "there is no new user input to answer")
        await self._respond(pending, send_stages=True)

    async def _response_cancel(self, _event: dict[str, Any]) -> None:
        open_replies = self._open_replies()
        if not open_replies:
            raise ClientError("response_cancel_not_active", "no response is in progress")
        for reply in open_replies:
            await self._cancel(reply, "client_cancelled")

    async def _truncate(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        reply = self._replies.get(item_id) if isinstance(item_id, str) else None
        if reply is None:
            raise ClientError("item_not_found", "no assistant item with that id", "item_id")
        end_ms = event.get("audio_end_ms")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ClientError("invalid_value", "audio_end_ms must be a non-negative integer", "audio_end_ms")
        if not reply.finished:
            await self._cancel(reply, "client_cancelled")
        heard = min(end_ms / 1000, reply.sent_s)
        await self._record(reply, interrupted=True, heard_s=round(heard, 3), truncated=True)
        await self.send(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=event.get("content_index", 0),
            audio_end_ms=end_ms,
        )

    # ---- the core's events (server VAD) ----------------------------------------------------------------------
    async def speech_started(self, at_ms: int) -> None:
        self._speech_item = new_id("item")
        await self.send("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=self._speech_item)
        open_replies = self._open_replies()
        taking = self._taking is not None and not self._taking.done()  # the last utterance's turn is being made
        if (open_replies or taking) and self.config.interrupt_response:
            # Nothing of the answer could be heard yet and the pause was short: the clinician had not finished the
            # question. Its first part's reply is cancelled and the new utterance carries the whole question.
            # Speech is only detected after min_speech_ms of it: speech that began before the reply's first audio
            # (or just as it began) cannot be a reaction to the answer.
            onset_s = self.settings.live_min_speech_ms / 1000 + 0.3
            # A transcript-only session (create_response off) has no reply to take back: joining the utterances
            # would only repeat the first part's text in the next item's transcript.
            continued = (
                self.config.create_response
                and all(r.heard_s() <= onset_s for r in open_replies)
                and self.audio.continue_previous(self.settings.live_continuation_ms)
            )
            if continued and taking and self._last_committed:
                self._superseded.add(self._last_committed)
            if not continued:
                self.barge_ins += 1
                app_metrics.BARGE_INS.inc()
            for reply in open_replies:
                await self._cancel(reply, "turn_detected", continued=continued)

    async def paused(self, text: str) -> None:
        if self.config.create_response:
            self.prefiller.offer(text)

    async def partial(self, delta: str, text: str) -> None:
        if self.config.create_response:
            self.prefiller.offer(text)
        if self._speech_item:
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=self._speech_item,
                content_index=0,
                delta=delta,
            )

    async def utterance(self, utterance: Utterance) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        previous, self._last_committed = self._last_committed, item_id
        if utterance.reason != "commit":
            await self.send("input_audio_buffer.speech_stopped", audio_end_ms=utterance.end_ms, item_id=item_id)
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        # The turn is made off the receive loop (it may wait for the transcript started at the first pause), so the
        # session goes on listening; turns are still made in the order they were spoken.
        self._taking = self._spawn(self._take(utterance, item_id, previous, self._taking))

    async def _take(self, utterance: Utterance, item_id: str, previous: str | None, prior: asyncio.Task | None) -> None:
        if prior is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(prior)
        body = {
            "kind": "audio",
            "data": wav_bytes(utterance.audio),
            "filename": "live.wav",
            "language": self.config.language,
        }
        # The transcript made at the speaker's first pause is of this very audio: the turn records it (asr.turn_heard)
        # instead of transcribing again, which is most of the wait after an endpoint.
        heard = await self._heard(utterance)
        prefills = self.prefiller.endpoint(heard["text"] if heard else None)
        first = "asr.turn_heard" if heard else STAGES[0]
        stages = (first, *STAGES[1:]) if self.config.create_response else (first,)
        state = {"heard": {**heard, "timings": {**heard["timings"], "speculative": True}}} if heard else None
        live = {
            "session_id": self.id,
            "item_id": item_id,
            "speech_start_ms": utterance.start_ms,
            "speech_end_ms": utterance.end_ms,
            "endpoint": utterance.reason,
            "utterance_s": round(utterance.duration_s, 3),
            "partial_chars": len(utterance.partial_text),
            "speculative_transcript": heard is not None,
            "speculations_discarded": utterance.discarded,
            "prefills_sent": prefills,
            "heard_wait_s": round(time.perf_counter() - utterance.stopped_at, 3) if heard else None,
        }
        turn_id = await self._add_turn(body, stages, item_id, live, state)
        if turn_id is None:
            return
        user = UserItem(item_id, turn_id, "audio", stopped_at=utterance.stopped_at)
        user.made_s = round(time.perf_counter() - utterance.stopped_at, 3)
        self._remember(user)
        await self._item_added(_user_item(item_id, {"type": "input_audio", "transcript": None}), previous)
        if self.config.create_response:
            reply = await self._respond(user, send_stages=False)
            if item_id in self._superseded:  # the clinician went on speaking: the whole question comes next
                self._superseded.discard(item_id)
                await self._cancel(reply, "turn_detected", continued=True)
        else:
            self._spawn(self._transcript_only(user))

    async def _heard(self, utterance: Utterance) -> dict[str, Any] | None:
        """The transcript started at the speaker's pause, waited for as long as a busy live pool takes while every
        pool is up (asr.turn would only queue the same work again behind it, in the full window: under load that
        doubled the backlog); None when there is none, or a pool is down (the turn's own stages then say so)."""
        waiting = asyncio.ensure_future(utterance.heard())
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=self.settings.live_reply_idle_s)
            if done:
                return waiting.result()
            if not await self._pools_alive():
                waiting.cancel()  # revokes it: asr.turn makes the transcript when a worker is back
                return None

    # ---- turns and replies -----------------------------------------------------------------------------------
    def _open_replies(self) -> list[Reply]:
        return [r for r in self._replies.values() if not r.finished and not r.cancelling]

    def _remember(self, user: UserItem) -> None:
        self._items.append(user)
        del self._items[:-50]  # a long session keeps only what a response or truncate can still name

    async def _add_turn(
        self,
        body: dict[str, Any],
        stages: tuple[str, ...] | None,
        item_id: str,
        live: dict[str, Any] | None = None,
        first_state: dict[str, Any] | None = None,
    ) -> str | None:
        try:
            turn_id, _index = await run_in_threadpool(
                records.add_turn,
                self.settings,
                self.user_id,
                self.consultation_id,
                body,
                live or {"session_id": self.id, "item_id": item_id},
                stages,
                "live" if stages and stages[0].startswith("asr.") else None,  # live questions: the live pool
                first_state,
            )
        except MedvoiceError as exc:
            await self.error(exc.code, exc.message)
            return None
        self.turns += 1
        return turn_id

    async def _transcript_only(self, user: UserItem) -> None:
        """create_response off: relay the transcript; the answer waits for response.create."""
        async for seen in follow(
            self.settings.redis_url,
            user.turn_id,
            timeout_s=self.settings.consult_sse_timeout_s,
            idle_s=self.settings.live_reply_idle_s,
            alive=self._pools_alive,
        ):
            user.stream_after = seen.id
            if seen.type == STALLED:
                message = f"no worker transcribed the question within {self.settings.live_reply_idle_s:g}s"
                await self.error("pool_unavailable", message)
                await self._transcription_failed(user, {"code": "pool_unavailable", "message": message})
                user.transcribed.set()
                return
            if seen.type == "transcribed":
                await self._transcribed(user, seen.data)
                return
            if seen.type in ("error", "cancelled"):
                await self._transcription_failed(user, seen.data)
                user.transcribed.set()
                return

    async def _transcribed(self, user: UserItem, data: dict[str, Any]) -> None:
        if user.transcribed.is_set():
            return
        user.transcript = data.get("text") or ""
        user.transcribed.set()
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=user.id,
            content_index=0,
            transcript=user.transcript,
            language=data.get("language"),
        )

    async def _transcription_failed(self, user: UserItem, data: dict[str, Any]) -> None:
        if user.kind != "audio" or user.transcribed.is_set():
            return
        await self.send(
            "conversation.item.input_audio_transcription.failed",
            item_id=user.id,
            content_index=0,
            error={"type": "transcription_error", "code": data.get("code"), "message": data.get("message")},
        )

    async def _respond(self, user: UserItem, send_stages: bool) -> Reply:
        user.answered = True
        previous = next(reversed(self._replies.values()), None)
        reply = Reply(new_id("resp"), new_id("item"), user, self.config.audio_out)
        self._replies[reply.item_id] = reply
        for old in [k for k, r in self._replies.items() if r.finished][:-50]:
            del self._replies[old]  # a long session keeps the replies a truncate can still name
        reply.task = self._spawn(self._run_reply(reply, previous, send_stages))
        return reply

    async def _run_reply(self, reply: Reply, previous: Reply | None, send_stages: bool) -> None:
        if previous is not None and previous.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous.task)  # replies are heard in order
        user = reply.user
        await self._created(reply)
        item = self._assistant_item(reply, "in_progress")
        await self.send("response.output_item.added", response_id=reply.id, output_index=0, item=item)
        await self._item_added(item, user.id)
        part = {"type": "audio", "transcript": ""} if reply.audio_out else {"type": "text", "text": ""}
        await self._content("response.content_part.added", reply, part=part)
        if send_stages:
            await user.transcribed.wait()
            if user.transcript is None:  # the transcript failed (and was reported): nothing to answer
                await self._finish(
                    reply, "failed", error={"type": "server_error", "code": "no_transcript", "message": "no transcript"}
                )
                return
            try:
                await run_in_threadpool(records.send_stages, self.settings, user.turn_id, STAGES[1:])
            except MedvoiceError as exc:
                await self._finish(
                    reply, "failed", error={"type": "server_error", "code": exc.code, "message": exc.message}
                )
                return
        await self._relay(reply, user.stream_after)

    async def _created(self, reply: Reply) -> None:
        if reply.created:
            return
        reply.created = True
        await self.send(
            "response.created",
            response={
                "id": reply.id,
                "object": "realtime.response",
                "status": "in_progress",
                "status_details": None,
                "output": [],
                "metadata": {"turn_id": reply.user.turn_id, "consultation_id": self.consultation_id},
                "usage": None,
            },
        )

    async def _relay(self, reply: Reply, after: str) -> None:
        user = reply.user
        outcome: dict[str, Any] | None = None
        async for seen in follow(
            self.settings.redis_url,
            user.turn_id,
            after,
            timeout_s=self.settings.consult_sse_timeout_s,
            idle_s=self.settings.live_reply_idle_s,
            alive=self._pools_alive,
        ):
            t, data = seen.type, seen.data
            if t == STALLED:
                outcome = await self._stalled(reply)
            elif t == "transcribed":
                await self._transcribed(user, data)
            elif t == "retrieved":
                reply.citations = list(data.get("citations") or [])
            elif t == "sentence":
                await self._sentence(reply, str(data.get("text") or ""))
            elif t == "audio" and reply.audio_out and isinstance(data.get("index"), int) and data.get("audio_ref"):
                reply.clips[data["index"]] = data["audio_ref"]
                await self._play(reply, flush=False)
            elif t == "answered":
                reply.answered = data
                reply.sentences = data.get("sentences")
            elif t == "done":
                outcome = {"status": "completed"}
            elif t == "cancelled":  # stopped by this session, or by the turn's owner over REST
                outcome = {"status": "cancelled", "reason": "client_cancelled"}
            elif t == "error":
                if data.get("code") == BrokerUnavailable.code:  # not the turn's failure: the session's broker
                    await self.error(BrokerUnavailable.code, str(data.get("message")))
                await self._transcription_failed(user, data)
                outcome = {
                    "status": "failed",
                    "error": {"type": "server_error", "code": data.get("code"), "message": data.get("message")},
                }
        if reply.cancelling:
            return  # the session's own cancel ends the reply, with its reason
        if outcome is None:
            outcome = {
                "status": "failed",
                "error": {"type": "server_error", "code": "timeout", "message": "no reply in time"},
            }
        if outcome["status"] == "completed" and reply.audio_out:
            await self._play(reply, flush=True)
        # Shielded: a barge-in arriving now must not cut the closing events of a reply already complete.
        await asyncio.shield(
            self._finish(reply, outcome["status"], reason=outcome.get("reason"), error=outcome.get("error"))
        )

    async def _pools_alive(self) -> bool:
        """Whether every pool has a worker up with its models loaded (the /readyz check): a turn with no event
        for live_reply_idle_s is then waiting in a busy queue, not lost, and is followed on."""
        from app.readiness import check_pools

        try:
            return bool((await run_in_threadpool(check_pools, self.settings))["ok"])
        except Exception:  # noqa: BLE001 - unknown is not alive: the session is told
            return False

    async def _stalled(self, reply: Reply) -> dict[str, Any]:
        """No worker moved the turn on: tell the client why, and drop the turn so a pool that comes back later
        does not answer a question nobody waits for."""
        message = f"no worker took the turn within {self.settings.live_reply_idle_s:g}s: a worker pool is down"
        with contextlib.suppress(Exception):
            await run_in_threadpool(events.cancel, reply.user.turn_id)
            await run_in_threadpool(
                records.fail_turn, self.settings, reply.user.turn_id, f"live: pool_unavailable: {message}"
            )
        await self.error("pool_unavailable", message)
        await self._transcription_failed(reply.user, {"code": "pool_unavailable", "message": message})
        return {"status": "failed", "error": {"type": "server_error", "code": "pool_unavailable", "message": message}}

    async def _sentence(self, reply: Reply, text: str) -> None:
        if not text:
            return
        sep = "" if not reply.text or re.match(r"[\u3400-\u9fff]", text) else " "
        delta = sep + text
        reply.text.append(delta)
        if reply.first_text_s is None:
            reply.first_text_s = self._since_endpoint(reply)
        kind = "response.output_audio_transcript.delta" if reply.audio_out else "response.output_text.delta"
        await self._content(kind, reply, delta=delta)

    async def _play(self, reply: Reply, flush: bool) -> None:
        """Send the clips that are next in order (all that remain, at the end), paced against playback."""
        while True:
            if reply.next_clip in reply.clips:
                ref = reply.clips.pop(reply.next_clip)
            elif flush and reply.clips:
                ref = reply.clips.pop(min(reply.clips))
            else:
                return
            reply.next_clip += 1
            await self._send_clip(reply, ref)

    async def _send_clip(self, reply: Reply, ref: str) -> None:
        try:
            path = resolve_ref(self.settings, ref)
            samples, rate = await run_in_threadpool(read_wav, str(path))
        except (MedvoiceError, OSError, RuntimeError) as exc:
            log.warning("session=%s turn=%s clip unreadable: %s", self.id, reply.user.turn_id, type(exc).__name__)
            return
        samples = await run_in_threadpool(to_rate, samples, rate, OUT_RATE)
        step = int(OUT_RATE * CHUNK_S)
        for i in range(0, samples.shape[0], step):
            chunk = samples[i : i + step]
            if reply.play_start is None:
                reply.play_start = time.perf_counter()
                reply.first_audio_s = self._since_endpoint(reply)
            ahead = reply.sent_s - (time.perf_counter() - reply.play_start)
            if ahead > self.settings.live_audio_lead_s:
                await asyncio.sleep(ahead - self.settings.live_audio_lead_s)
            await self._content(
                "response.output_audio.delta",
                reply,
                delta=base64.b64encode(chunk.astype("<i2").tobytes()).decode("ascii"),
            )
            reply.sent_s += chunk.shape[0] / OUT_RATE

    def _since_endpoint(self, reply: Reply) -> float:
        stopped = reply.user.stopped_at
        return round(time.perf_counter() - (stopped if stopped is not None else reply.started), 3)

    def _assistant_item(self, reply: Reply, status: str) -> dict[str, Any]:
        text = "".join(reply.text)
        part = {"type": "audio", "transcript": text} if reply.audio_out else {"type": "text", "text": text}
        return {
            "id": reply.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part] if text or status == "completed" else [],
        }

    async def _cancel(self, reply: Reply, reason: str, continued: bool = False) -> None:
        if reply.finished or reply.cancelling:
            return
        reply.cancelling = True  # from here on nothing more is sent for it but its end
        with contextlib.suppress(Exception):
            await run_in_threadpool(events.cancel, reply.user.turn_id)  # generation and queued synthesis stop
        if reply.task is not None and reply.task is not asyncio.current_task():
            reply.task.cancel()
            with contextlib.suppress(BaseException):
                await reply.task
        await self._finish(reply, "cancelled", reason=reason, continued=continued)

    async def _finish(
        self,
        reply: Reply,
        status: str,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
        continued: bool = False,
    ) -> None:
        if reply.finished:
            return
        reply.finished = True
        if reply.first_audio_s is not None:
            app_metrics.LIVE_FIRST_AUDIO_SECONDS.observe(reply.first_audio_s)
        await self._created(reply)  # a reply cancelled before it began still opens before it closes
        text = "".join(reply.text)
        item_status = "completed" if status == "completed" else "incomplete"
        if status == "completed":
            if reply.audio_out:
                await self._content("response.output_audio.done", reply)
                await self._content("response.output_audio_transcript.done", reply, transcript=text)
            else:
                await self._content("response.output_text.done", reply, text=text)
            part = {"type": "audio", "transcript": text} if reply.audio_out else {"type": "text", "text": text}
            await self._content("response.content_part.done", reply, part=part)
        item = self._assistant_item(reply, item_status)
        await self.send("response.output_item.done", response_id=reply.id, output_index=0, item=item)
        if self.dialect is Dialect.ga:
            await self.send("conversation.item.done", previous_item_id=reply.user.id, item=item)
        extras = self._extras(reply)
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason}
        elif status == "failed":
            details = {"type": "failed", "error": error}
        await self.send(
            "response.done",
            response={
                "id": reply.id,
                "object": "realtime.response",
                "status": status,
                "status_details": details,
                "output": [item],
                "metadata": {
                    "turn_id": reply.user.turn_id,
                    "consultation_id": self.consultation_id,
                    "citations": json.dumps(extras["citations"], ensure_ascii=False),
                    "mode": str(extras["mode"] or ""),
                    "guard_fired": json.dumps(bool(extras["guard_fired"])),
                },
                "medvoice": extras,
                "usage": None,
            },
        )
        await self._record(
            reply,
            interrupted=status == "cancelled",
            status=status,
            reason=reason,
            sent_audio_s=round(reply.sent_s, 3),
            heard_s=reply.heard_s() if status == "cancelled" else round(reply.sent_s, 3),
            sentences_sent=len(reply.text),
            first_text_s=reply.first_text_s,
            first_audio_s=reply.first_audio_s,
            turn_made_s=reply.user.made_s,
            **({"continued_by_next_utterance": True} if continued else {}),
        )

    def _extras(self, reply: Reply) -> dict[str, Any]:
        cited = set(reply.answered.get("citations") or [])
        return {
            "turn_id": reply.user.turn_id,
            "consultation_id": self.consultation_id,
            "citations": [{**c, "cited": c.get("n") in cited} for c in reply.citations],
            "mode": reply.answered.get("mode"),
            "guard_fired": bool(reply.answered.get("guard_fired")),
            "disclaimer": reply.answered.get("disclaimer"),
        }

    async def _record(self, reply: Reply, interrupted: bool, **live: Any) -> None:
        try:
            await run_in_threadpool(records.record_reply, self.settings, reply.user.turn_id, interrupted, **live)
        except Exception as exc:  # noqa: BLE001 - the reply was delivered; its bookkeeping must not end the session
            log.warning("session=%s turn=%s reply not recorded: %s", self.id, reply.user.turn_id, type(exc).__name__)

    async def close(self) -> None:
        """The client went away: stop sending; turns already queued finish in the workers and are recorded."""
        self.closed = True
        await self.audio.close()
        await self.prefiller.close()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        for reply in self._replies.values():
            if not reply.finished:
                reply.finished = True
                await self._record(reply, False, status="client_gone", sent_audio_s=round(reply.sent_s, 3))
