"""Answer sentences that are meant to be heard: no markdown, no lists, no "Based on the context provided",
no reasoning out loud, no echo of the question, no fragments.

`clean(sentence)` returns the sentence as it should be spoken, or None when nothing of it should be (a
chain-of-thought step, a heading). `is_echo` and `is_fragment` tell the caller that a sentence says nothing
the clinician did not already say, so it falls back to quoting the passage.
"""

from __future__ import annotations

import re

from knowledge.quantities import quantities
from knowledge.terms import stem
from knowledge.text import CJK, CJK_CHAR, EN_STOP

_MD = [
    (re.compile(r"\*\*(.+?)\*\*|__(.+?)__"), lambda m: m.group(1) or m.group(2)),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), lambda m: m.group(1)),
    (re.compile(r"`([^`]*)`"), lambda m: m.group(1)),
]
_LEADING = re.compile(r"^\s*(?:#{1,6}\s+|[-*•·]\s+|\d{1,2}[.)、]\s*(?=\D)|[（(]\d{1,2}[)）]\s*|>\s*)+")
_LEAD_IN = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|yes|great question)[,!.:]\s*)?"
    r"(?:(?:based on|according to|from|as (?:stated|mentioned|described) in|per|using|in)\s+"
    r"(?:the\s+)?(?:provided\s+|given\s+|above\s+)?(?:context|passages?|information|knowledge base|sources?|documents?|"
    r"guidelines?|text)(?:\s+(?:provided|given|above))?(?:\s*\[\d{1,3}\](?:\s*,?\s*\[\d{1,3}\])*)?\s*[,:]\s*"
    r"|(?:the\s+)?answer(?:\s+is)?\s*:\s*|response\s*:\s*)",
    re.IGNORECASE,
)
_LEAD_IN_ZH = re.compile(
    r"^\s*(?:根据|依据|按照|参考)(?:所?提供的|上述|以上)?"
    r"(?:上下文|资料|内容|信息|知识库|文献|指南)"
    r"(?:\s*\[\d{1,3}\])*\s*[，,:：]\s*|^\s*(?:回答|答案)\s*[:：]\s*"
)
_THINKING = re.compile(
    r"^\s*(?:let'?s|let us|let me|first,? (?:we|i|let)|step \d|to answer (?:this|the)|we need to|i need to|i will|"
    r"i'll|we can see|looking at|the (?:question|user) (?:asks|is asking|wants)|the context (?:says|states|mentions|"
    r"provides|does)|in (?:the )?context|now,? (?:we|let)|therefore,? we|so,? we|note:|analysis)\b"
    r"|^\s*(?:首先|让我们|我们需要|分析|问题是|根据问题)",
    re.IGNORECASE,
)
_WORD = re.compile(rf"[a-z][a-z0-9]*|[{CJK}]", re.IGNORECASE)
_MARKER = re.compile(r"\s*\[\d{1,3}\]")


def clean(sentence: str) -> str | None:
    """The sentence as it should be spoken; None for one that should not be spoken at all."""
    text = sentence.strip()
    for rx, repl in _MD:
        text = rx.sub(repl, text)
    text = _LEADING.sub("", text)
    if _THINKING.search(text):
        return None
    text = _LEAD_IN.sub("", text)
    text = _LEAD_IN_ZH.sub("", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    if not text or not re.search(rf"[A-Za-z0-9{CJK}]", _MARKER.sub("", text)):
        return None
    if text.endswith(":") or text.endswith("："):
        return None  # a heading or the lead into a list
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def _content(text: str) -> list[str]:
    return [stem(w) if w.isascii() else w for w in _WORD.findall(_MARKER.sub(" ", text.lower())) if w not in EN_STOP]


def is_echo(sentence: str, question: str) -> bool:
    """The sentence only says back what the question said: nearly all its words are the question's, and it
    states no quantity the question did not."""
    words = _content(sentence)
    if not words:
        return True
    asked = set(_content(question))
    new = [w for w in words if w not in asked]
    return len(new) <= len(words) // 6 and quantities(sentence) <= quantities(question)


def is_fragment(sentence: str) -> bool:
    """Too short to be an answer on its own ("Penicillin allergy.")."""
    body = _MARKER.sub("", sentence).strip()
    cjk = len(CJK_CHAR.findall(body))
    if cjk:
        return cjk < 6
    return len(re.findall(r"[A-Za-z0-9]+", body)) < 4


_CLAUSE_CUTS = [re.compile(r"(?<=[;；])\s*"), re.compile(r"(?<=[,，、:：])\s*|\s+-\s+"), re.compile(r"\s+")]


def pieces(sentence: str, max_chars: int) -> list[str]:
    """A sentence too long to speak in one go (a quoted passage line of a bullet list) as pieces of at most
    max_chars, cut at semicolons, then commas, then spaces; the words and their order are kept."""
    if len(sentence) <= max_chars:
        return [sentence]
    for cut in _CLAUSE_CUTS:
        parts = [p for p in cut.split(sentence) if p.strip()]
        if len(parts) > 1:
            out: list[str] = []
            for part in parts:
                if out and len(out[-1]) + 1 + len(part) <= max_chars:
                    out[-1] = f"{out[-1]} {part}" if cut.pattern == r"\s+" or not _wide(out[-1]) else out[-1] + part
                else:
                    out.append(part)
            return [q for p in out for q in pieces(p, max_chars)]
    return [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]


_WIDE_END = re.compile(rf"[{CJK}][，、：；。,:;]?$")


def _wide(text: str) -> bool:
    """The text ends in Chinese (a Chinese piece joins the next without a space)."""
    return _WIDE_END.search(text) is not None
