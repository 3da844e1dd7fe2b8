"""Claims against passage lines: which passage line answers a question, and does one support an answer sentence.

A passage is read as *lines*: its sentences, cut again at semicolons (guidelines pack two rules into one
sentence: "below 140/90 mmHg; below 150/90 mmHg in patients aged 80 or over"). Each line keeps its section
heading and document title, since a table row ("20 kg: 300 mg, which is 12.5 mL.") names its drug only there.

- `Question` reads what is asked: topic terms, the patient it is about (weight, age, renal-function bands:
  knowledge/quantities.py) and what kind of fact it wants (dose, frequency, duration, threshold, drug).
- `Support.best_lines()` ranks the lines that answer the question (the extractive answer): lines about
  another patient (the 5 kg row for a 20 kg child) never qualify, and a line that names this patient beats
  a general one.
- `Support.check(sentence)` accepts an answer sentence only if one line supports all of it: every number it
  states (blood-pressure pairs as pairs), its drug and condition words (in the line, its heading or title),
  the same patient as the question, and the same polarity ("do not give" is not "give").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from knowledge.quantities import (
    UNITS,
    blood_pressures,
    consistent,
    matches,
    numbers,
    patient_bands,
    quantities,
    question_bands,
)
from knowledge.terms import CHILD, DRUG_SYNONYMS, POPULATION, QUALIFIERS, Term, TextIndex, question_terms, stem
from knowledge.text import CJK, EN_STOP, cjk_ratio, split_clauses

DOSE_UNITS = frozenset({"mg", "g", "mcg", "ml", "mg/kg", "tablet", "capsule", "iu", "drop", "puff", "l"})
THRESHOLD_UNITS = frozenset({"mmhg", "°c", "mmol/l", "%", "mg/dl", "ml/min", "bpm"})

_WANTS = {
    "dose": re.compile(
        r"\b(?:dose|doses|dosage|dosing|how much|how many (?:mg|ml|milligrams?|tablets?)|strength"
        r"|mg|ml)\b"
        r"|剂量|用量|多少毫克|多少毫升|吃多少|用多少|服多少|多大量",
        re.IGNORECASE,
    ),
    "frequency": re.compile(
        r"\b(?:how often|how many times|frequency|times a day|a day|per day|daily)\b"
        r"|几次|多久一次|间隔|每天|每日",
        re.IGNORECASE,
    ),
    "duration": re.compile(
        r"\b(?:how long|how many days|how many weeks|duration|for how long|course)\b"
        r"|多久|几天|疗程|多长时间|连用",
        re.IGNORECASE,
    ),
    "threshold": re.compile(
        r"\b(?:target|threshold|goal|aim|cut-?off|limit|maximum|max|no more than|at most|level)\b"
        r"|目标|标准|上限|不超过|最多|最大",
        re.IGNORECASE,
    ),
    "drug": re.compile(
        r"\b(?:which|what)\b[^?]*\b(?:drug|medicine|medication|antibiotic|antiviral|treatment|option|"
        r"alternative|choice|tablet|pill|give|prescribe|use|start)\b|first[- ]line|first choice|"
        r"\balternative\b|\binstead\b|\bswitch\b|\bwhat next\b|\bnext step\b|\bthen what\b"
        r"|什么药|哪种药|哪些药|用什么|吃什么|首选|替代|换用|换成",
        re.IGNORECASE,
    ),
}
_PERMISSION = re.compile(
    r"^\s*(?:can|could|may|should|is it safe|is it ok(?:ay)?|are .* safe|is .* safe)\b"
    r"|可以.*吗|能不能|能否|要不要|是否可以|可不可以|能.*吗",
    re.IGNORECASE,
)
_HOW_MANY = re.compile(r"\bhow many\s+([a-z]+)|几(次|片|粒|剂)|多少(片|粒|剂|次)", re.IGNORECASE)
_FREQUENCY_WORDS = re.compile(
    r"\bevery\b|\bonce\b|\btwice\b|\bdaily\b|\ba day\b|每日|每天|一次|两次|每\s*\d+\s*小时", re.IGNORECASE
)
_THRESHOLD_WORDS = re.compile(
    r"\b(?:below|above|under|over|less than|more than|at least|no more than|target)\b"
    r"|不超过|以上|以下|低于|高于",
    re.IGNORECASE,
)
# Beginnings of the words for the sides of a condition a question may ask about (stems cut at 5 letters).
ASPECTS = frozenset(
    {
        "sympt",
        "signs",
        "cause",
        "treat",
        "thera",
        "manag",
        "diagn",
        "test",
        "preve",
        "outlo",
        "progn",
        "risk",
        "compl",
        "inher",
        "genet",
        "stage",
        "dosag",
        "side",
    }
)
_NEGATION = re.compile(
    r"\b(?:not|never|avoid|don't|do not|must not|should not|contraindicated)\b"
    r"|不要|不宜|不应|不可|禁用|禁止|避免|勿",
    re.IGNORECASE,
)
# Drug names and classes by their endings (INN stems; Chinese transliterations and classes).
_DRUG_EN = re.compile(
    r"(?:cillin|mycin|micin|cycline|oxacin|azole|prazole|tidine|pril|sartan|olol|dipine|statin|formin|gliptin"
    r"|gliflozin|glutide|mab|tinib|vir|zepam|azolam|triptan|parin|xaban|gatran|olone|sone|profen|fenac|coxib"
    r"|oxetine|pramine|thiazide|semide|caine|amol|clav|inhibitor|blocker|antagonist|diuretic|steroid|vaccine)$"
    r"|^(?:vitamin|supplement|supplements|iron|calcium|zinc|folic|magnesium|potassium)$"
    r"|^(?:paracetamol|acetaminophen|ibuprofen|aspirin|insulin|codeine|morphine|heparin|warfarin|salbutamol)$"
)
_DRUG_ZH = re.compile(
    r"(?:韦|林|素|星|酚|芬|沙坦|普利|地平|洛尔|霉素|西林|他汀|双胍|唑|松|嗪"
    r"|抑制剂|阻滞剂|拮抗剂|利尿剂|疫苗)$"
)
_WORD = re.compile(rf"[a-z][a-z0-9]*|[{CJK}]", re.IGNORECASE)
_MARKER = re.compile(r"\s*\[\d{1,3}\]")


def _words(text: str) -> set[str]:
    return {stem(w) if w.isascii() else w for w in _WORD.findall(_MARKER.sub(" ", text.lower())) if w not in EN_STOP}


def negated(text: str) -> bool:
    # "no more than 4 g" limits a dose rather than forbids a drug
    return bool(_NEGATION.search(re.sub(r"no (?:more|less|longer) than", " ", text, flags=re.IGNORECASE)))


@dataclass
class Question:
    text: str
    terms: list[Term]
    bands: list[tuple[float, float, str]]
    given: set[tuple[float, str]]  # quantities the question itself states ("20 kg"): not the answer's claims
    wants: set[str]
    words: set[str]

    @property
    def aspects(self) -> set[str]:
        """The side of the topic the question asks about, as word beginnings ("treat", "sympt", "cause")."""
        return {w[:5] for w in self.words} & ASPECTS

    @classmethod
    def read(cls, text: str) -> Question:
        wants = {kind for kind, rx in _WANTS.items() if rx.search(text)}
        # "how many doses", "几片": a count in that unit; "can I give X in Y?": a line that speaks of X and Y
        for m in _HOW_MANY.finditer(text):
            unit = UNITS.get((m.group(1) or m.group(2) or m.group(3) or "").lower())
            if unit:
                wants = (wants - {"dose", "frequency"}) | {f"count:{unit}"}
        if _PERMISSION.search(text):
            wants.add("permission")
        return cls(
            text, question_terms(text, patient=True), question_bands(text), quantities(text), wants, _words(text)
        )

    @property
    def factual(self) -> bool:
        """A dose, frequency, duration, threshold or which-drug question: a passage line can answer it as is."""
        return bool(self.wants)


@dataclass
class Line:
    n: int  # the passage's citation number
    rank: float  # the passage's retrieval score relative to the best one (0..1]
    text: str
    heading: str
    title: str
    own: TextIndex
    full: TextIndex  # the line with its heading and title
    quantities: set[tuple[float, str]]
    pressures: set[str]
    bands: list[tuple[float, float, str]]
    negated: bool
    words: set[str]
    passage: TextIndex  # the whole passage: a line may speak of its section's condition without naming it
    head: TextIndex  # the line with its heading
    claimable: set[tuple[float, str]]  # the quantities of the line and its heading (a table row's heading)
    stated: set[float]  # every number of the line and its heading, with or without a unit
    drugs: set[str] = field(default_factory=set)
    previous: TextIndex | None = None  # the line before, in the same passage: it may name the line's drug

    def satisfies(self, want: str, question: Question) -> bool:
        units = {u for _, u in self.quantities}
        if want == "dose":
            return bool(units & DOSE_UNITS)
        if want == "frequency":
            return bool(units & {"times", "h"}) or bool(_FREQUENCY_WORDS.search(self.text))
        if want == "duration":
            return bool(units & {"d", "wk", "mo", "h"})
        if want == "threshold":
            return (
                bool(units & THRESHOLD_UNITS)
                or bool(self.pressures)
                or bool(self.quantities and _THRESHOLD_WORDS.search(self.text))
            )
        if want == "drug":  # names a drug the question did not
            return bool(self.drugs - {t.surface for t in question.terms})
        if want.startswith("count:"):
            return want.split(":", 1)[1] in units
        if want == "permission":  # speaks of the drug and the patient asked about, on the line itself
            asked = [t for t in question.terms if is_drug(t) or is_population(t)]
            return bool(asked) and all(self.head.covers(t) for t in asked)
        return False

    def names_other_drug(self, question: Question) -> bool:
        """The line is about another drug: it names one, and not the one asked about (in itself or its heading)."""
        asked = [t for t in question.terms if t.specific]
        return bool(self.drugs - {t.surface for t in question.terms}) and any(not self.head.covers(t) for t in asked)


def _named_drug(term: Term) -> bool:
    """A drug or drug class by its ending (INN stems; Chinese transliterations and classes)."""
    return bool(_DRUG_ZH.search(term.surface)) if term.zh else any(_DRUG_EN.search(w) for w in term.surface.split())


def is_drug(term: Term) -> bool:
    return term.surface in DRUG_SYNONYMS or _named_drug(term)


def is_population(term: Term) -> bool:
    """Who the patient is, or what about them changes the answer (a child, pregnancy, an allergy, the kidneys)."""
    return term.surface in POPULATION or term.surface in QUALIFIERS or term is CHILD


def drug_names(text: str) -> set[str]:
    return {t.surface for t in question_terms(text) if _named_drug(t)}


def passage_lines(passages: list[Mapping[str, Any]]) -> list[Line]:
    top = max((float(p.get("score") or 0.0) for p in passages), default=0.0) or 1.0
    lines: list[Line] = []
    for p in passages:
        context = str(p.get("context") or "")
        title = str(p.get("title") or "")
        heading = context.split(" — ", 1)[1] if " — " in context else ""
        rank = max(0.05, float(p.get("score") or 0.0) / top) if top else 1.0
        whole = TextIndex(str(p.get("text") or ""), context, title)
        previous = None
        for clause in split_clauses(str(p.get("text") or "")):
            # a question in the passage (FAQ-style pages ask before they answer) states nothing
            if len(clause) < 2 or clause in ("…", "...") or clause.rstrip().endswith(("?", "？")):
                continue
            lines.append(
                Line(
                    n=int(p["n"]),
                    rank=rank,
                    text=clause,
                    heading=heading,
                    title=title,
                    own=TextIndex(clause),
                    full=TextIndex(clause, heading, title),
                    quantities=quantities(clause),
                    pressures=blood_pressures(clause),
                    bands=patient_bands(clause),
                    negated=negated(clause),
                    words=_words(clause),
                    passage=whole,
                    head=TextIndex(clause, heading),
                    claimable=quantities(clause) | quantities(heading),
                    stated=numbers(f"{clause} {heading}"),
                    drugs=drug_names(clause),
                    previous=previous,
                )
            )
            previous = lines[-1].own
    return lines


@dataclass
class Verdict:
    supported: bool
    reason: str  # supported | numbers | patient | terms | polarity | no support
    line: Line | None = None


@dataclass
class Pick:
    line: Line
    score: float


class Support:
    def __init__(self, question: str | Question, passages: list[Mapping[str, Any]]) -> None:
        self.question = question if isinstance(question, Question) else Question.read(question)
        self.lines = passage_lines(passages)
        q = self.question
        self._fits = [consistent(q.bands, ln.bands) for ln in self.lines]
        self._total = sum(t.weight for t in q.terms) or 1.0
        # A term few lines state is what tells them apart (a qualifier such as renal impairment, beside the
        # drug every line of the section is about): own coverage is weighted by that rarity as well.
        # The drug asked about is usually what the whole section is about, stated once in its heading or first
        # sentence; the qualifiers are what a line must state itself.
        n = max(1, len(self.lines))
        drugs = drug_names(q.text)
        self._own_weight = {
            t.surface: t.weight
            * math.log(1 + n / (1 + sum(ln.own.covers(t) for ln in self.lines)))
            * (0.3 if t.surface in drugs else 1.0)
            for t in q.terms
        }
        self._own_total = sum(self._own_weight.values()) or 1.0

    # -- which line answers the question --------------------------------------------------------------------
    def _score(self, ln: Line) -> float | None:
        q = self.question
        if not self._about_the_question(ln):
            return None
        if "drug" not in q.wants and ln.names_other_drug(q):
            return None
        own = sum(self._own_weight[t.surface] for t in q.terms if ln.own.covers(t)) / self._own_total
        ctx = sum(t.weight for t in q.terms if ln.full.covers(t) or ln.passage.covers(t)) / self._total
        if q.terms and ctx < 0.5:
            return None
        wants = [w for w in q.wants if ln.satisfies(w, q)]
        if q.wants and not wants:
            return None
        overlap = len(q.words & ln.words) / max(1, len(q.words))
        # What about the topic a descriptive question asks (its symptoms, its treatment): a line that speaks of it
        aspect = bool(q.aspects) and bool(q.aspects & {w[:5] for w in ln.words})
        score = (
            0.4 * own
            + 0.2 * ctx
            + 0.3 * len(wants) / max(1, len(q.wants))
            + 0.4 * matches(q.bands, ln.bands)
            + 0.2 * overlap
            + 0.3 * aspect
        )
        return score * (0.6 + 0.4 * ln.rank)

    def _about_the_question(self, ln: Line) -> bool:
        """Every drug, condition and patient the question names is on the line, in its heading or title, with
        two exceptions a guideline's layout needs: the drug asked about may be named on the line before ("Start
        ramipril..." then "If the ACE inhibitor causes cough, switch to losartan"; "成人剂量：奥司他韦 75 mg"
        then the renal row), and the section's condition anywhere in the passage. The patient never: a child's
        question is not answered from the adults' line. And a line about another drug does not answer a
        question about this one, unless a drug is what is asked for. So "amoxicillin 500 mg" does not answer a
        question about penicillin allergy, nor "clarithromycin 500 mg" one about pregnancy, nor a vitamin D
        line on the insulin page a question about insulin."""
        q = self.question
        other_drug = bool(ln.drugs - {t.surface for t in q.terms}) and "drug" not in q.wants
        for t in q.terms:
            if not t.required or ln.full.covers(t):
                continue
            if is_population(t) or other_drug:
                return False
            if is_drug(t):
                if not (ln.previous is not None and ln.previous.covers(t)):
                    return False
            elif ln.drugs or not ln.passage.covers(t):
                return False
        return True

    def plainly_answers(self, pick: Pick) -> bool:
        """The line states what a non-factual question asks about on its own (with its heading or title): every
        term of the question is there, not just in the passage around it ("What is acute otitis media?" →
        "Acute otitis media is an infection of the middle ear..."). Then quoting it beats paraphrasing it."""
        terms = self.question.terms
        return (
            bool(terms)
            and all(pick.line.full.covers(t) for t in terms)
            and pick.line.words & self.question.words
            and len(pick.line.text) >= 24
        )

    def best_lines(self, limit: int = 2) -> list[Pick]:
        """The lines that answer the question, best first: the best one, then one that adds a kind of fact it
        lacks (a duration to a dose), from the same passage."""
        scored = [
            Pick(ln, s) for ln, fits in zip(self.lines, self._fits) if fits for s in [self._score(ln)] if s is not None
        ]
        if not scored:
            return []
        if self.question.bands and any(matches(self.question.bands, p.line.bands) for p in scored):
            # A line for exactly this patient beats the general rule.
            scored = [p for p in scored if matches(self.question.bands, p.line.bands)]
        scored.sort(key=lambda p: -p.score)
        picks = [scored[0]]
        lacking = {w for w in self.question.wants if not scored[0].line.satisfies(w, self.question)}
        # A guideline states a rule, then its dose on the next line ("...: a calcium-channel blocker." "Start
        # amlodipine 5 mg..."): what the best line lacks is looked for on the lines that follow it first.
        first = self.lines.index(scored[0].line)
        following = [
            ln
            for ln, fits in zip(self.lines[first + 1 : first + 3], self._fits[first + 1 : first + 3])
            if fits and ln.n == scored[0].line.n
        ]
        if not self.question.wants:
            # A descriptive question ("what is", "what are the treatments for"): the line that says it and the
            # one after it, which usually goes on about the same thing.
            return picks + [Pick(ln, scored[0].score) for ln in following[:1] if len(ln.text) >= 24][: limit - 1]
        if "permission" in self.question.wants and not scored[0].line.drugs:
            # "May she take an antiviral?" answered by the line that puts her in a group: the line beside it
            # (same passage) that names the drug for that group says the rest.
            beside = [
                ln
                for ln in (self.lines[first - 1] if first else None, *following[:1])
                if ln is not None and ln.n == scored[0].line.n and ln.drugs
            ]
            return picks + [Pick(ln, scored[0].score) for ln in beside[:1]]
        candidates = [Pick(ln, scored[0].score) for ln in following] + scored[1:]
        for p in candidates:
            if len(picks) >= limit or not lacking:
                break
            adds = {w for w in lacking if p.line.satisfies(w, self.question)}
            if (
                adds
                and p.line.n == picks[0].line.n
                and p.score >= 0.5 * picks[0].score
                and all(p.line is not q.line for q in picks)
            ):
                picks.append(p)
                lacking -= adds
        return picks

    def unmatched_patient(self) -> str | None:
        """The question's patient when the passages have lines for other patients of that kind but none for this
        one (a weight with no row in the table): what to say before quoting the general rule."""
        q = self.question
        for lo, hi, unit in q.bands:
            rows = [ln for ln in self.lines if any(u == unit and a == b for a, b, u in ln.bands)]
            if rows and not any(matches([(lo, hi, unit)], [b for b in ln.bands if b[0] == b[1]]) for ln in rows):
                value = lo if lo == hi else None
                return f"{value:g} {unit}" if value is not None else None
        return None

    # -- does a line support an answer sentence ------------------------------------------------------------
    def check(self, sentence: str) -> Verdict:
        q = self.question
        claims = quantities(sentence) - q.given
        stated = numbers(sentence) - numbers(q.text)  # with or without a unit the checks know
        pressures = blood_pressures(sentence)
        if pressures:  # "140/90 mmHg" is one claim, not a claim of 90 mmHg
            claims = {c for c in claims if c[1] != "mmhg"}
        terms = [t for t in question_terms(sentence) if t.required]
        zh = cjk_ratio(sentence) >= 0.2
        neg = negated(sentence)
        if not claims and not pressures and not stated and not terms and not zh:
            words = _words(sentence)
            best = max((len(words & ln.words) / max(1, len(words)) for ln in self.lines), default=0.0)
            return Verdict(best >= 0.5, "supported" if best >= 0.5 else "no support")
        reason = "numbers"
        for ln, fits in zip(self.lines, self._fits):
            # the heading counts as part of a table row ("Paracetamol by weight (120 mg in 5 mL suspension)")
            if not (claims <= ln.claimable and pressures <= ln.pressures and stated <= ln.stated):
                continue
            if not fits:
                reason = "patient"  # the numbers are there, on another patient's line
                continue
            # A drug or condition word: on the line or in its heading; or, for a line that names no drug of its
            # own (a renal-dose row after the sentence that names the drug), anywhere in its passage. Chinese is
            # read by character pairs, since jieba cuts unknown drug names differently in each sentence.
            if zh:
                share = max(ln.full.pair_share(sentence), 0.0 if ln.drugs else ln.passage.pair_share(sentence))
                words_ok = share >= 0.75
            else:
                words_ok = all(ln.full.covers(t) or (not ln.drugs and ln.passage.covers(t)) for t in terms)
            if not words_ok or not self._about_the_question(ln):
                reason = "terms" if reason != "patient" else reason
                continue
            if (claims or pressures) and self._overridden(ln, claims, pressures):
                reason = "patient"
                continue
            if ln.negated != neg:
                reason = "polarity"
                continue
            return Verdict(True, "supported", ln)
        return Verdict(False, reason)

    def _overridden(self, ln: Line, claims: set[tuple[float, str]], pressures: set[str]) -> bool:
        """A general line does not support a number when the same passage has a line for exactly this patient
        stating a number of the same kind (the under-80 target for an 80-year-old)."""
        q = self.question
        if not q.bands or matches(q.bands, ln.bands):
            return False
        kinds = {u for _, u in claims} | ({"mmhg"} if pressures else set())
        for other, fits in zip(self.lines, self._fits):
            stated = {u for _, u in other.quantities} | ({"mmhg"} if other.pressures else set())
            if other.n == ln.n and fits and matches(q.bands, other.bands) and kinds & stated:
                return True
        return False


def quote(pick: Pick, question: Question, said: set[str] | None = None) -> str:
    """The line as a spoken, cited answer sentence; its heading goes first when the line needs it to make sense
    (a table row, or a line that names the question's drug only in its heading) and it was not said already
    (`said`: the headings spoken so far, updated)."""
    ln = pick.line
    text = ln.text.strip()
    lead = ln.heading or ln.title
    if said is not None and lead in said:
        lead = ""
    # A table row or a fragment needs its heading; so does a line whose heading names what the question asks
    # about and the line does not ("Paracetamol dose:" before "15 mg per kg"). The document's title is not said.
    heading = TextIndex(ln.heading)
    needs = bool(lead) and (
        text[:1].islower()
        or text[:1].isdigit()
        or any(not ln.own.covers(t) and heading.covers(t) for t in question.terms)
    )
    if needs:
        sep = "：" if cjk_ratio(lead) >= 0.2 else ": "  # a quote keeps its own script's punctuation
        text = f"{lead.rstrip('.:：')}{sep}{text}"
        if said is not None:
            said.add(lead)
    text = text.rstrip(".。!！?？;；")
    return f"{text} [{ln.n}]{'。' if cjk_ratio(text) >= 0.2 else '.'}"
