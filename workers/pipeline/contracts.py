"""What the pipeline's stages hand each other, named for what it carries.

Celery carries JSON between the tasks, so each contract has `to_state()` (the dict a task returns) and
`from_state()` (the dict the next task receives, checked). The keys are the wire format: a task re-delivered
from before an upgrade still reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from workers.core.errors import InputError

State = dict[str, Any]
"""What a pipeline task receives and returns: JSON, as Celery carries it."""

# A chat turn's chain by task name (workers/tasks/chat.py): no asr, and it ends without speech.
CHAT_STAGES = ("rag.turn", "llm.chat_turn", "llm.chat_done")


class Passage(TypedDict, total=False):
    """One retrieved passage as the answer sees it and cites it: [n]."""

    n: int
    chunk_id: str
    doc_id: str
    title: str | None
    source: str | None
    score: float
    context: str | None  # "title — section heading"
    text: str


def _turn_id(state: Any) -> str:
    from workers.core.events import check_turn_id

    if not isinstance(state, dict):
        raise InputError("a pipeline stage takes {turn_id, ...}", {"field": "state"})
    return check_turn_id(state.get("turn_id") or "")


@dataclass(frozen=True)
class TurnRef:
    """The start of the chain (and what asr hands rag): the turn, whose record holds the rest."""

    turn_id: str

    def to_state(self) -> State:
        return {"turn_id": self.turn_id}

    @classmethod
    def from_state(cls, state: Any) -> TurnRef:
        return cls(_turn_id(state))


Transcribed = TurnRef  # asr records transcript and language on the turn; rag reads them from there


@dataclass(frozen=True)
class Piece:
    """One piece of a long recording, for one asr process: {turn_id, piece: {audio_ref, index, offset_s, ...}}."""

    turn_id: str
    spec: State

    def to_state(self) -> State:
        return {"turn_id": self.turn_id, "piece": self.spec}

    @classmethod
    def from_state(cls, state: Any) -> Piece:
        turn_id = _turn_id(state)
        if not isinstance(state.get("piece"), dict):
            raise InputError("a piece needs {audio_ref, index, offset_s, ...}", {"field": "piece"})
        return cls(turn_id, state["piece"])


@dataclass(frozen=True)
class Heard:
    """A live utterance's final transcript, made by the session on the live pool: {turn_id, heard: the asr
    engine's result for exactly the turn's stored audio}."""

    turn_id: str
    result: State

    def to_state(self) -> State:
        return {"turn_id": self.turn_id}

    @classmethod
    def from_state(cls, state: Any) -> Heard:
        turn_id = _turn_id(state)
        heard = state.get("heard")
        if (
            not isinstance(heard, dict)
            or not isinstance(heard.get("text"), str)
            or not isinstance(heard.get("timings"), dict)
            or not isinstance(heard.get("duration_s"), (int, float))
        ):
            raise InputError("heard needs {text, language, duration_s, timings, segments}", {"field": "heard"})
        return cls(turn_id, heard)


@dataclass(frozen=True)
class PieceTranscript:
    """A piece's transcription, as the join collects it (segments already on the whole recording's clock)."""

    turn_id: str
    result: State

    def to_state(self) -> State:
        return self.result


@dataclass(frozen=True)
class Skipped:
    """The turn was already finished when a late or re-delivered stage came: every later stage passes it on."""

    turn_id: str

    def to_state(self) -> State:
        return {"turn_id": self.turn_id, "skipped": True}


@dataclass(frozen=True)
class Retrieved:
    """rag → llm: the passages that cover the question, renumbered [1]..[k]; what is missing when none do.

    A chat turn (POST /v1/chat/completions) adds two keys on its way to the llm stage: `speak` false (the
    answer is read, not spoken: no sentence goes to the tts pool) and `history`, the conversation's earlier
    messages as the client sent them (user, assistant, user, assistant..., oldest first), used instead of the
    consultation's earlier turns."""

    turn_id: str
    language: str | None
    passages: list[Passage] = field(default_factory=list)
    missing: str = ""
    speak: bool = True
    history: list[dict[str, str]] | None = None

    def to_state(self) -> State:
        state: State = {
            "turn_id": self.turn_id,
            "language": self.language,
            "passages": list(self.passages),
            "missing": self.missing,
        }
        if not self.speak:
            state["speak"] = False
        if self.history is not None:
            state["history"] = list(self.history)
        return state

    @classmethod
    def from_state(cls, state: Any) -> Retrieved:
        turn_id = _turn_id(state)
        passages = state.get("passages") or []
        if not isinstance(passages, list) or not all(isinstance(p, dict) and "n" in p for p in passages):
            raise InputError("passages must be a list of {n, text, ...}", {"field": "passages"})
        speak = state.get("speak", True)
        if not isinstance(speak, bool):
            raise InputError("speak must be true or false", {"field": "speak"})
        history = state.get("history")
        if history is not None and (
            not isinstance(history, list)
            or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                for m in history
            )
        ):
            raise InputError("history must be a list of {role: user|assistant, content}", {"field": "history"})
        return cls(turn_id, state.get("language"), passages, str(state.get("missing") or ""), speak, history)


@dataclass(frozen=True)
class Answered:
    """llm → tts: the answer's sentences, and the tts.synthesize task already speaking each (None: not sent)."""

    turn_id: str
    sentences: list[str] = field(default_factory=list)
    clips: list[str | None] = field(default_factory=list)

    def to_state(self) -> State:
        return {"turn_id": self.turn_id, "sentences": list(self.sentences), "clips": list(self.clips)}

    @classmethod
    def from_state(cls, state: Any) -> Answered:
        turn_id = _turn_id(state)
        sentences = state.get("sentences") or []
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise InputError("sentences must be a list of strings", {"field": "sentences"})
        return cls(turn_id, sentences, list(state.get("clips") or []))


@dataclass(frozen=True)
class Spoken:
    """The end: the reply WAV (None when nothing was speakable)."""

    turn_id: str
    reply_audio_ref: str | None

    def to_state(self) -> State:
        return {"turn_id": self.turn_id, "reply_audio_ref": self.reply_audio_ref}
