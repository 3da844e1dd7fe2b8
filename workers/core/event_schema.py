"""Every event a turn's stream carries, defined once: its type name and its fields.

Producers (the pipeline stages, the tts and llm tasks, the reaper) build one of these models and hand it to
`workers.core.events.emit`; consumers (the SSE route, the demo printer, the live-session encoders) read a stream
entry back with `decode`. An entry is stored as `type` + `data` (the model's fields as JSON), so a client
that knows nothing of this module still reads it.

    type          fields                                                      sent by
    status        status                                                      each stage as it starts
    restart       stage                                                       a re-run stage: drop its earlier events
    transcribed   language, text, duration_s, timings, segments               asr.turn / asr.turn_join
    retrieved     count, nothing_relevant, answerable, citations[n,title,..]   rag.turn
    sentence      index, text                                                 llm.turn / llm.generate, as each is final
    answered      sentences, guard_fired, disclaimer, mode, citations, timings llm.turn
    llm_done      sentences, cancelled, finish_reason, timings                llm.generate (no turn record)
    audio         index, audio_ref, duration_s, sample_rate                   tts.synthesize, per sentence clip
    text_only     index, language, code, message                              tts.turn: no voice speaks this sentence
    audio_ready   audio_ref, duration_s                                       tts.turn: the joined reply
    done          status, timings                                             tts.turn: the turn is finished
    error         stage, code, message, http_status                           a failed stage, the reaper
    cancelled     stage, code, message, http_status                           a stage that saw the cancel flag
    timeout       message                                                     the SSE route, when its time is up
    segment       index, start, end, text, language                           asr.transcribe with a stream_id, as
                                                                              each segment is decoded (no turn)

Light module (pydantic + stdlib): the API process imports it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EventType(StrEnum):
    status = "status"
    restart = "restart"
    transcribed = "transcribed"
    retrieved = "retrieved"
    sentence = "sentence"
    answered = "answered"
    llm_done = "llm_done"
    audio = "audio"
    text_only = "text_only"
    audio_ready = "audio_ready"
    done = "done"
    error = "error"
    cancelled = "cancelled"
    timeout = "timeout"
    segment = "segment"


Timings = dict[str, Any]  # a stage's figures (seconds, counts) as recorded on the turn and sent with its event

TERMINAL = frozenset({EventType.done, EventType.error, EventType.cancelled})


class Event(BaseModel):
    """One stream event; `type` is the class's, the fields are the event's data."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    type: ClassVar[EventType]

    def data(self) -> dict[str, Any]:
        """The fields as sent: JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Status(Event):
    type: ClassVar[EventType] = EventType.status
    status: str


class Restart(Event):
    type: ClassVar[EventType] = EventType.restart
    stage: str


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: float
    end: float
    text: str


class Transcribed(Event):
    type: ClassVar[EventType] = EventType.transcribed
    language: str | None
    text: str
    duration_s: float
    timings: Timings
    segments: list[Segment] = []


class RetrievedCitation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int
    title: str | None
    source: str | None
    score: float


class Retrieved(Event):
    type: ClassVar[EventType] = EventType.retrieved
    count: int
    nothing_relevant: bool
    answerable: bool = True
    citations: list[RetrievedCitation] = []


class Sentence(Event):
    type: ClassVar[EventType] = EventType.sentence
    index: int
    text: str


class Answered(Event):
    type: ClassVar[EventType] = EventType.answered
    sentences: int
    guard_fired: bool
    disclaimer: str | None = None
    mode: str | None = None  # extractive | generated | no_answer | unverified
    citations: list[int] = []  # the [n] the answer uses
    timings: Timings = {}


class LlmDone(Event):
    type: ClassVar[EventType] = EventType.llm_done
    sentences: int
    cancelled: bool
    finish_reason: str | None
    timings: Timings


class Audio(Event):
    type: ClassVar[EventType] = EventType.audio
    index: int | None
    audio_ref: str
    duration_s: float | None = None
    sample_rate: int | None = None


class TextOnly(Event):
    """A sentence left unspoken because no voice here speaks its language: it stays text."""

    type: ClassVar[EventType] = EventType.text_only
    index: int
    language: str | None = None
    code: str = "no_voice_for_language"
    message: str | None = None


class AudioReady(Event):
    type: ClassVar[EventType] = EventType.audio_ready
    audio_ref: str
    duration_s: float


class Done(Event):
    type: ClassVar[EventType] = EventType.done
    status: str = "done"
    timings: Timings | None = None
    source: str | None = Field(default=None, alias="from")  # "record": the stream expired, the record tells


class Failed(Event):
    """A stage that failed (`error`) or stopped on the cancel flag (`cancelled`)."""

    type: ClassVar[EventType] = EventType.error
    stage: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None
    status: str | None = None  # told from the record: the turn's status
    source: str | None = Field(default=None, alias="from")


class Cancelled(Failed):
    type: ClassVar[EventType] = EventType.cancelled


class Timeout(Event):
    type: ClassVar[EventType] = EventType.timeout
    message: str


class TranscriptSegment(Event):
    type: ClassVar[EventType] = EventType.segment
    index: int
    start: float
    end: float
    text: str
    language: str | None = None


MODELS: dict[EventType, type[Event]] = {
    m.type: m
    for m in (
        Status,
        Restart,
        Transcribed,
        Retrieved,
        Sentence,
        Answered,
        LlmDone,
        Audio,
        TextOnly,
        AudioReady,
        Done,
        Failed,
        Cancelled,
        Timeout,
        TranscriptSegment,
    )
}


def decode(type_: str, data: dict[str, Any]) -> Event | None:
    """The event a stream entry holds; None for a type or fields this version does not know."""
    try:
        model = MODELS[EventType(type_)]
    except ValueError:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None
