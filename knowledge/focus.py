"""Query-focused passages: the sentences of the retrieved passages that bear on the question, within a token
budget. On CPU the LLM's prompt evaluation is most of the time between the end of a question and the first
spoken word (four 200-token passages take ~5 s on two cores), and most sentences of a passage do not bear on
the question; bench/context_focus.py measures both the time saved and what of the answer is kept.

Each passage keeps at least its best sentence (so [1]..[k] still name every citation), then the best of the
rest go in by score while they fit, and each passage's sentences are put back in their own order with "…"
where something was left out. A sentence scores the idf-weighted question words it holds (English words and
jieba words, as BM25 reads them); a passage's earlier sentences win ties, since they usually say what it is
about."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

from knowledge.text import is_cjk, lexical_tokens, split_sentences

GAP = " … "
_SUFFIX = re.compile(r"(?:ments?|ing|ed|es|s)$")


def focus_passages(
    question: str, texts: list[str], budget_tokens: int, count_tokens: Callable[[str], int]
) -> list[str]:
    """The passages, trimmed to the sentences that matter most to `question` within `budget_tokens`
    (as `count_tokens` counts); returned unchanged when they fit already."""
    if sum(count_tokens(t) for t in texts) <= budget_tokens:
        return list(texts)
    asked = _terms(question)
    sentences = [split_sentences(t) or [t] for t in texts]
    words = [[_terms(s) for s in group] for group in sentences]
    df = Counter(w for group in words for ws in group for w in ws)
    n = sum(len(group) for group in words)
    idf = {w: math.log(1 + n / df[w]) for w in asked if df[w]}

    def score(i: int, j: int) -> float:
        return sum(idf.get(w, 0.0) for w in words[i][j] & asked)

    ranked = {i: sorted(range(len(sentences[i])), key=lambda j, i=i: (-score(i, j), j)) for i in range(len(texts))}
    # Every passage's best sentence first, in retrieval order; then the rest, best first.
    order = [(i, ranked[i][0]) for i in range(len(texts))]
    order += sorted(
        ((i, j) for i in range(len(texts)) for j in ranked[i][1:]), key=lambda ij: (-score(*ij), ij[0], ij[1])
    )
    chosen: dict[int, set[int]] = {i: set() for i in range(len(texts))}
    used = 0
    for i, j in order:
        cost = count_tokens(sentences[i][j]) + 1  # (+1: the space or mark between sentences)
        if used + cost <= budget_tokens or not chosen[i]:  # a passage is never left empty
            chosen[i].add(j)
            used += cost
    out = []
    for i, group in enumerate(sentences):
        picked = sorted(chosen[i])
        text = ""
        for k, j in enumerate(picked):
            if k:
                text += GAP if j != picked[k - 1] + 1 else ("" if _wide(group[j]) else " ")
            text += group[j]
        if picked and picked[-1] != len(group) - 1:
            text += GAP.rstrip()
        out.append(f"{GAP.lstrip()}{text}" if picked and picked[0] != 0 else text)
    return out


def _terms(text: str) -> set[str]:
    """BM25's words, English ones with a crude suffix cut so that "treated" meets "treatment", "adults" "adult"."""
    return {_SUFFIX.sub("", w) if w.isascii() and len(w) > 4 else w for w in lexical_tokens(text)}


def _wide(sentence: str) -> bool:
    """Chinese sentences follow one another without a space."""
    return bool(sentence) and is_cjk(sentence[0])
