"""Does the knowledge base cover what a question is about? Decided before anything is generated.

Retrieval always returns its nearest passages, so a question about metformin against a knowledge base
without it still gets "relevant" hits (the hypertension page shares "dose" and "once daily"). The similarity
of those hits does not separate the cases well; what does is whether the passages speak of the question's
*topic terms* (knowledge/terms.py):

- every specific term (a drug, a disease, a rare word: "metformin", "warfarin", "二甲双胍") and every special
  population ("child", "pregnancy", "孕妇") must be covered, by one document's passages (title, section
  heading and text);
- and the covered terms must carry at least `min_coverage` of the question's term weight (so "broken leg",
  two common words neither of which the passages use, is not covered either).

A question passes when one retrieved document covers it; only that document's passages (those of every
document that does) go on to the answer. Otherwise the reply names what is missing, in the question's words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from knowledge.terms import POPULATION, Term, TextIndex, missing_phrase, names, question_terms

MIN_COVERAGE = 0.6


@dataclass
class Answerability:
    answerable: bool
    missing: str = ""  # what the knowledge base lacks, as the question words it ("metformin", "broken leg")
    keep: list[int] = field(default_factory=list)  # passage numbers [n] of the documents that cover the question
    coverage: float = 0.0  # best document's covered share of the question's term weight
    terms: int = 0
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        # The missing words come from the question: a verdict is stored with the turn, not logged.
        return {
            "answerable": self.answerable,
            "missing": self.missing,
            "keep": self.keep,
            "coverage": round(self.coverage, 3),
            "terms": self.terms,
            "reason": self.reason,
        }


def passage_index(passages: Iterable[Mapping[str, Any]]) -> TextIndex:
    texts: list[str] = []
    for p in passages:
        texts += [p.get("title") or "", p.get("context") or "", p.get("text") or ""]
    return TextIndex(*texts)


def assess(question: str, passages: list[Mapping[str, Any]], min_coverage: float = MIN_COVERAGE) -> Answerability:
    """Whether the passages (rag hits as numbered passages: n, doc_id, title, context, text) cover the question."""
    terms = question_terms(question, patient=True)
    if not passages:
        return Answerability(
            False, missing_phrase(_to_name(terms, []), question), [], 0.0, len(terms), "nothing retrieved"
        )
    if not terms:
        # Nothing to check the passages against ("what is the dose?"): the claim check still holds the answer.
        return Answerability(True, "", [int(p["n"]) for p in passages], 1.0, 0, "no topic terms")
    by_doc: dict[str, list[Mapping[str, Any]]] = {}
    for p in passages:
        by_doc.setdefault(str(p.get("doc_id") or p["n"]), []).append(p)
    total = sum(t.weight for t in terms)
    phrases = names(terms, question)
    best: tuple[float, list[Term]] | None = None
    keep: list[int] = []
    for group in by_doc.values():
        index = passage_index(group)
        covered = [t for t in terms if index.covers(t)]
        share = sum(t.weight for t in covered) / total
        # "chronic lymphocytic leukemia" is not covered by a page on hairy cell leukemia that mentions lymphocytes
        named = all(index.has(p) for p in phrases)
        if named and all(t in covered for t in terms if t.required) and share >= min_coverage:
            keep += [int(p["n"]) for p in group]
        if best is None or share > best[0]:
            best = (share, covered if named else [t for t in covered if not any(t.surface in p for p in phrases)])
    assert best is not None
    share, covered = best
    if keep:
        return Answerability(True, "", sorted(keep), share, len(terms), "covered")
    missing = _to_name(terms, covered)
    phrase = missing_phrase(missing, question)
    if missing and not missing[0].zh and all(t.surface in POPULATION for t in missing) and len(missing) < len(terms):
        phrase = f"this for {phrase}"  # the topic is there, just not for this patient
    return Answerability(False, phrase, [], share, len(terms), "not covered")


def _to_name(terms: list[Term], covered: list[Term]) -> list[Term]:
    """What to name as missing: the uncovered terms that must be covered, else every uncovered term."""
    uncovered = [t for t in terms if t not in covered]
    specific = [t for t in uncovered if t.required]
    return specific or uncovered
