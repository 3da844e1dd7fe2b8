"""Answering a clinical question from retrieved passages, safely: one path for every place answers are made
(consultation turns today; live sessions and chat completions use the same two functions).

    select(question, passages, settings)   → the passages that cover the question, and the gate's verdict
    answer(question, passages, ...)        → the spoken, cited sentences, and what every check decided

`select` (on the rag pool, right after retrieval): passages far below the best one go (stale editions sink by
their decay), then the answerability gate (knowledge/answerability.py) keeps the documents that cover what
the question is about. None left: the reply names what the knowledge base lacks, and no citation is claimed.

`answer` (on the llm pool):
- *extractive* (the default mode, for dose, frequency, duration, threshold, how-many, which-drug and may-I
  questions): the passage line that answers the question for this patient (knowledge/support.py), quoted with
  its [n] (and the line after it where that adds what the first lacks). Exact, and instant: the LLM is not
  asked to decide a number. When no line states the fact asked for, the reply says so by name. A descriptive
  question that one line plainly answers ("What is acute otitis media?") is quoted too, with the next line.
- *generated* (other questions, or `consult_answer_mode=generative`): the LLM streams sentences; each is put
  into spoken style (knowledge/spoken.py) and must be supported by one passage line: its numbers with their
  qualifiers, its drug and condition words, its polarity. A sentence that is not supported, echoes the
  question or is a fragment is replaced by the line that answers the question (quoted, cited) or dropped.
  Generation stops after `consult_max_sentences`.

With `consult_safety` off, the earlier behaviour (numbers guard only) is kept for comparison (bench/answer_safety.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from knowledge.answerability import assess
from knowledge.spoken import clean, is_echo, is_fragment, pieces
from knowledge.support import Pick, Support, quote
from workers.grounding import NO_FACT, answer_language, attribute, no_answer
from workers.pipeline.contracts import Passage, State

_MARKERS = re.compile(r"\s*\[\d{1,3}\]")

NO_ENTRY = {
    "en": "The knowledge base has no entry for exactly {patient}; it gives this general rule.",
    "zh": "知识库中没有 {patient} 的对应条目，以下是一般规则。",
}
FACTS = {
    "dose": ("dose", "剂量"),
    "frequency": ("frequency", "用药频次"),
    "duration": ("duration", "疗程"),
    "threshold": ("target or limit", "目标值或上限"),
    "count": ("number", "次数或数量"),
}


@dataclass
class Selection:
    passages: list[Passage]
    verdict: dict[str, Any]  # the answerability gate's, stored with the turn

    @property
    def answerable(self) -> bool:
        return bool(self.verdict.get("answerable", True))


def select(question: str, passages: list[Passage], settings: Any) -> Selection:
    """The passages an answer may use, renumbered [1]..[k], and the answerability verdict."""
    if not getattr(settings, "consult_safety", True):
        return Selection(passages, {"answerable": bool(passages), "reason": "safety off"})
    top = max((float(p.get("score") or 0.0) for p in passages), default=0.0)
    near = [p for p in passages if float(p.get("score") or 0.0) >= settings.consult_relative_floor * top]
    gate = assess(question, near, settings.consult_min_coverage)
    keep = [p for p in near if p["n"] in gate.keep]
    renumbered = [{**p, "n": i} for i, p in enumerate(keep, 1)]
    verdict = {**gate.as_dict(), "keep": [p["n"] for p in renumbered], "dropped_far": len(passages) - len(near)}
    return Selection(renumbered, verdict)


@dataclass(frozen=True)
class Claim:
    """What the checks decided for one generated sentence."""

    index: int
    action: str  # kept | replaced | dropped
    reason: str  # supported | style | echo | fragment | numbers | patient | terms | polarity | no support


@dataclass
class Answer:
    sentences: list[str] = field(default_factory=list)
    mode: str = "generated"  # no_answer | extractive | generated | unverified
    claims: list[Claim] = field(default_factory=list)  # one per generated sentence
    style: dict[str, int] = field(default_factory=lambda: {"cleaned": 0, "dropped": 0, "echo": 0, "fragment": 0})
    generation: State | None = None  # the LLM's own result (timings, finish_reason), when it ran
    attributed: int = 0

    @property
    def guard_fired(self) -> bool:
        return any(c.action != "kept" for c in self.claims)

    def count(self, action: str) -> int:
        return sum(c.action == action for c in self.claims)

    def verdicts(self) -> dict[str, Any]:
        return {"mode": self.mode, "claims": [asdict(c) for c in self.claims], "style": self.style}


Generate = Callable[[Callable[[str], bool], Callable[[], bool]], State]
"""generate(on_sentence, stop) runs the LLM: on_sentence(text) for each streamed sentence, stop() asked between
tokens; returns the engine's result dict."""


def answer(
    question: str,
    language: str | None,
    passages: list[Mapping[str, Any]],
    settings: Any,
    emit: Callable[[str], None],
    generate: Generate | None,
    missing: str = "",
) -> Answer:
    """Answer `question` from `passages` (already selected), calling emit(sentence) as each sentence is final."""
    speaker = _Speaker(question, answer_language(language), list(passages), settings, emit)
    out = speaker.out
    route = speaker.route()
    if route == "no_answer":
        out.mode = "no_answer"
        speaker.say(no_answer(speaker.lang, missing))
    elif route == "extractive":
        out.mode = "extractive"
        speaker.quote_lines()
    elif route == "no_fact":
        out.mode = "no_answer"
        speaker.say(speaker.no_fact())
    elif generate is None:
        out.mode = "unverified"
    else:
        out.generation = generate(speaker.on_sentence, lambda: len(out.sentences) >= settings.consult_max_sentences)
        stopped_early = out.generation.get("cancelled") and len(out.sentences) < settings.consult_max_sentences
        if not out.sentences and not stopped_early:
            if speaker.picks:  # nothing the model said held: the line that answers the question
                speaker.quote(speaker.picks[0])
            else:
                out.mode = "unverified"
    return out


def will_generate(question: str, language: str | None, passages: list[Mapping[str, Any]], settings: Any) -> bool:
    """Whether `answer` would ask the LLM (no quote or "the knowledge base has no ..." answers first)."""
    return _Speaker(question, answer_language(language), list(passages), settings, lambda _t: None).route() == "llm"


class _Speaker:
    """One answer as it is spoken: each sentence said once, in spoken style, checked against the passages."""

    def __init__(
        self, question: str, lang: str, passages: list[Mapping[str, Any]], settings: Any, emit: Callable[[str], None]
    ) -> None:
        self.question, self.lang, self.passages, self.settings, self.emit = question, lang, passages, settings, emit
        self.out = Answer()
        self.support = Support(question, passages) if passages else None
        self.picks = self.support.best_lines() if self.support else []
        self._quoted: set[str] = set()  # lines said
        self._headings: set[str] = set()  # headings said before a line

    def say(self, text: str) -> None:
        for piece in pieces(text, self.settings.tts_max_chars):  # each one is spoken as it comes
            self.out.sentences.append(piece)
            self.emit(piece)

    def quote(self, pick: Pick) -> bool:
        """Say the passage line, cited; False when it was said already."""
        if pick.line.text in self._quoted:
            return False
        self._quoted.add(pick.line.text)
        text = quote(pick, self.support.question, self._headings)
        self.say(text)
        return True

    def quote_lines(self) -> None:
        """The extractive answer: the lines for this patient (first, when the table has no row for them, say so)."""
        patient = self.support.unmatched_patient()
        if patient:
            self.say(NO_ENTRY[self.lang].format(patient=patient))
        for pick in self.picks:
            self.quote(pick)

    def route(self) -> str:
        """What answers: no_answer (no passages), extractive (a quote), no_fact (no line states it), or llm."""
        if not self.passages:
            return "no_answer"
        if self.settings.consult_answer_mode == "extractive":
            if self.picks and (self.support.question.factual or self.support.plainly_answers(self.picks[0])):
                return "extractive"
            if self.no_fact():
                return "no_fact"
        return "llm"

    def no_fact(self) -> str | None:
        """That no line gives the fact a factual question asks for; None when it is not that case."""
        q = self.support.question
        kinds = [w.split(":", 1)[0] for w in q.wants]
        if self.picks or not kinds or not all(k in FACTS for k in kinds):
            return None
        named = [t.surface for t in q.terms if t.required] or [t.surface for t in q.terms]
        if not named:
            return None
        zh = self.lang == "zh"
        fact = (
            "、".join(dict.fromkeys(FACTS[k][1] for k in kinds))
            if zh
            else " or ".join(dict.fromkeys(FACTS[k][0] for k in kinds))
        )
        topic = ("、" if zh else " and ").join(named)
        return NO_FACT[self.lang].format(fact=fact, topic=topic)

    def on_sentence(self, raw: str) -> bool:
        """One streamed sentence: cleaned, checked, then spoken, replaced by the line that answers, or dropped."""
        out = self.out
        index = len(out.claims)
        text = clean(raw)
        if text is None:
            out.style["dropped"] += 1
            out.claims.append(Claim(index, "dropped", "style"))
            return False
        out.style["cleaned"] += text != raw.strip()
        problem = "echo" if is_echo(text, self.question) else "fragment" if is_fragment(text) else None
        if problem:
            out.style[problem] += 1
            reason = problem
        else:
            verdict = self.support.check(text)
            if verdict.supported:
                self._say_supported(text, verdict.line)
                out.claims.append(Claim(index, "kept", "supported"))
                return True
            reason = verdict.reason
        replaced = bool(self.picks) and self.quote(self.picks[0])
        out.claims.append(Claim(index, "replaced" if replaced else "dropped", reason))
        return replaced

    def _say_supported(self, text: str, line: Any) -> None:
        if self.settings.consult_attribute_citations:
            marked = attribute(text, self.passages) if line is None else _cite(text, line.n)
            self.out.attributed += marked != text
            text = marked
        self.say(text)


def _cite(sentence: str, n: int) -> str:
    """The sentence citing the passage whose line supports it (the model's own markers may name another)."""
    body = _MARKERS.sub("", sentence).rstrip()
    end = len(body)
    while end and body[end - 1] in ".!?。！？;；":
        end -= 1
    return f"{body[:end]} [{n}]{body[end:]}"
