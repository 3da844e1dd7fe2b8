"""Which language a sentence is in, for choosing its voice: the script decides.

Chinese vs English is knowledge.text.detect_language (Chinese characters at least a fifth of the letters).
Other scripts are told apart only so that no voice is handed text it cannot read: kana is Japanese (with
or without Chinese characters), Hangul Korean, Cyrillic Russian, and so on. Latin text is English: the
only Latin-script language a voice here is made for.
"""

from __future__ import annotations

import re

from knowledge.text import CJK, detect_language

_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ja", re.compile("[\u3040-\u30ff\u31f0-\u31ff]")),  # hiragana, katakana
    ("ko", re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")),
    ("ru", re.compile("[\u0400-\u04ff]")),
    ("el", re.compile("[\u0370-\u03ff]")),
    ("ar", re.compile("[\u0600-\u06ff\u0750-\u077f]")),
    ("he", re.compile("[\u0590-\u05ff]")),
    ("th", re.compile("[\u0e00-\u0e7f]")),
    ("hi", re.compile("[\u0900-\u097f]")),
)
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_HAN = re.compile(f"[{CJK}]")
ALIASES = {"cmn": "zh", "chinese": "zh", "mandarin": "zh", "english": "en"}


def canonical(language: str) -> str:
    """'zh-CN' → 'zh', 'en_US' → 'en', 'Chinese' → 'zh': the primary subtag, lower case."""
    code = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    return ALIASES.get(code, code)


def detect(text: str) -> str:
    """The language of `text` as a voice sees it: 'zh', 'en', or the code of another script."""
    counts = {code: len(p.findall(text)) for code, p in _SCRIPTS}
    if counts["ja"]:
        return "ja"
    han, latin = len(_HAN.findall(text)), len(_LATIN.findall(text))
    other, n = max(counts.items(), key=lambda kv: kv[1])
    if n > max(han, latin):
        return other
    return detect_language(text)
