"""Text helpers shared by every layer: the CJK character class, language detection, sentence and clause
splitting of passages (English and Chinese), and lexical tokens for BM25.

- `CJK` is the one spelling of "a Chinese character" (CJK Unified Ideographs, Extension A and the
  compatibility ideographs): f-string it into a character class (`rf"[{CJK}]"`), or use `is_cjk(ch)`,
  `CJK_CHAR` and `CJK_RUN`.
- `detect_language` is the one language detector for text ('zh' or 'en').
- `split_sentences` is the splitter for whole passages (stored text, read at once); `split_clauses` cuts
  its sentences again at semicolons (guidelines pack two rules into one sentence). The streaming splitter
  for LLM output, which cuts early for speech, is workers/engines/splitter.py.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata

# A Chinese character: CJK Unified Ideographs Extension A, the Unified Ideographs, the compatibility ideographs.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_CHAR = re.compile(f"[{CJK}]")
CJK_RUN = re.compile(f"[{CJK}]+")
_LATIN_TOKEN = re.compile(r"[a-z0-9]+")
_TOKEN_SPLIT = re.compile(f"([{CJK}]+)")

# Sentence ends: Chinese 。！？ (and ；… full stops) need no space after them; Latin . ! ? need a space or
# end of text after them (and not an abbreviation such as "e.g." or "Dr.").
_ABBREV = {"e.g", "i.e", "dr", "mr", "mrs", "ms", "vs", "etc", "fig", "no", "approx", "st", "jr", "sr", "al"}
_SENT_RE = re.compile(
    r"(?<=[。！？!?])[\"'”’」』）)]*\s*"  # after CJK/any ! ? : split, swallow closing quotes and spaces
    rf"|(?<=[.])[\"'”’)]*\s+(?=[A-Z0-9\"“(\[{CJK}])"  # after '.' only before a capital/digit/CJK
    r"|\n\s*\n+"  # blank lines
    r"|\n(?=\s*(?:[-*•]|\d+[.)])\s)"  # list items
)

# A small stop list: function words that only dilute BM25 (English) and question particles (Chinese).
EN_STOP = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to was what "
    "when where which who why will with do does can could should would my me you your am were been".split()
)
ZH_STOP = frozenset(
    "的 了 吗 呢 吧 啊 是 在 和 与 及 或 我 你 他 她 它 们 这 那 有 也 就 都 而 之 于 什么 怎么 怎样 如何 "
    "哪些 为什么 请问 一下 一个 可以 能 会 要 想 知道 应该 需要 ， 。 ？ ！ 、".split()
)

_jieba_lock = threading.Lock()
_jieba_ready = False


def is_cjk(ch: str) -> bool:
    """Whether the character `ch` is a Chinese character (of the `CJK` class)."""
    return CJK_CHAR.match(ch) is not None


def cjk_ratio(text: str) -> float:
    """The share of Chinese characters among the letters of `text` (0.0 when it has none)."""
    letters = [c for c in text if c.isalpha() or is_cjk(c)]
    if not letters:
        return 0.0
    return sum(1 for c in letters if is_cjk(c)) / len(letters)


def detect_language(text: str) -> str:
    """'zh' when CJK characters are at least a fifth of the letters, else 'en' (the two we serve)."""
    return "zh" if cjk_ratio(text) >= 0.2 else "en"


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of English and Chinese text (。！？ end a Chinese sentence with or without a space)."""
    # NFKC maps full-width ！？ to ASCII; keep CJK full stops as they are.
    out: list[str] = []
    for piece in _SENT_RE.split(text):
        if piece is None:
            continue
        s = piece.strip()
        if not s:
            continue
        # Re-join splits after an abbreviation ("e.g. The") that the regex could not see.
        if out and out[-1].rsplit(" ", 1)[-1].rstrip(".").lower() in _ABBREV and out[-1].endswith("."):
            out[-1] = f"{out[-1]} {s}"
        else:
            out.append(s)
    return out


_CLAUSE = re.compile(r"(?<=[;；])\s*")


def split_clauses(text: str) -> list[str]:
    """The sentences of `split_sentences`, each cut again after every ; or ； (stripped, none empty)."""
    return [c.strip() for s in split_sentences(text) for c in _CLAUSE.split(s) if c.strip()]


def _jieba():  # noqa: ANN202
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_ready = True
    return jieba


def lexical_tokens(text: str) -> list[str]:
    """BM25 tokens: lower-cased [a-z0-9]+ for Latin script, jieba search-mode words for Chinese."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    for part in _TOKEN_SPLIT.split(text):
        if not part:
            continue
        if CJK_RUN.fullmatch(part):
            for w in _jieba().lcut_for_search(part):
                w = w.strip()
                if w and w not in ZH_STOP:
                    tokens.append(w)
        else:
            tokens.extend(t for t in _LATIN_TOKEN.findall(part) if t not in EN_STOP)
    return tokens
