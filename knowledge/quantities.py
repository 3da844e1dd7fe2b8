"""Quantities in clinical text: a number with a unit, dose form, frequency or duration ("500 mg", "7–10 days",
"3 times", "每日3次", "10 毫克"), as (value, canonical unit) pairs so that two spellings compare equal.

The answer checks use them: a number an answer states must come from the passage sentence it rests on, and
a quantity the question names ("a 20 kg child") picks the table row that answers it.
"""

from __future__ import annotations

import re

# unit spelling → canonical unit. Longer spellings first so the regex prefers them.
UNITS: dict[str, str] = {}


def _unit(canonical: str, *spellings: str) -> None:
    for s in (canonical, *spellings):
        UNITS[s.lower()] = canonical


_unit("mg/kg", "mg/kg/day", "mg per kg", "mg per kilogram", "毫克/公斤", "毫克/千克")
_unit("ml/min", "mL/min", "毫升/分钟")
_unit("mg/dl", "mg/dL")
_unit("mmol/l", "mmol/L", "mmol")
_unit("mmhg", "mm hg", "mmHg")
_unit("mcg", "µg", "μg", "ug", "microgram", "micrograms", "微克")
_unit("mg", "milligram", "milligrams", "mgs", "毫克")
_unit("g", "gram", "grams", "克")
_unit("kg", "kilogram", "kilograms", "kilo", "kilos", "kgs", "公斤", "千克")
_unit("ml", "mL", "millilitre", "milliliter", "millilitres", "milliliters", "毫升")
_unit("l", "litre", "liter", "litres", "liters", "升")
_unit("iu", "IU", "IUs", "i.u.", "international units", "international unit", "units", "unit", "单位")
_unit("%", "percent", "per cent")
_unit("tablet", "tablets", "tab", "tabs", "pill", "pills", "片")
_unit("capsule", "capsules", "caps", "粒", "胶囊")
_unit("drop", "drops", "滴")
_unit("puff", "puffs", "喷")
_unit("dose", "doses", "剂")
_unit("times", "time", "x", "次")
_unit("min", "minute", "minutes", "mins", "分钟")
_unit("h", "hour", "hours", "hr", "hrs", "小时")
_unit("d", "day", "days", "天", "日")
_unit("wk", "week", "weeks", "周", "星期")
_unit("mo", "month", "months", "个月", "月")
_unit("y", "year", "years", "yr", "yrs", "year-old", "years-old", "year old", "years old", "年", "岁")
_unit("bpm", "beats per minute")
_unit("°c", "°C", "degrees", "度")

# Units that describe the patient rather than the treatment: a question that names one asks about that
# patient, and only a passage line with the same value (or none of that unit) may answer it.
PATIENT_UNITS = frozenset({"kg", "y", "mo", "ml/min"})

_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_NUM = r"\d+(?:[.,]\d+)?"
# Written-out counts a dose or a frequency often uses ("twice daily", "两次"): value 1..4.
_WORD_COUNTS = {"once": 1, "twice": 2, "thrice": 3, "一次": 1, "两次": 2, "二次": 2, "三次": 3, "四次": 4}
_COUNT_RE = re.compile(r"(?<![A-Za-z])(once|twice|thrice)(?![A-Za-z])|(一次|两次|二次|三次|四次)", re.IGNORECASE)
_SPELLED = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "fourteen": 14,
    "twenty": 20,
}
_SPELLED_RE = re.compile(
    r"(?<![A-Za-z])(" + "|".join(_SPELLED) + r")(?=\s+(?:times|days|weeks|months|hours|years))", re.IGNORECASE
)
_QUANTITY = re.compile(
    rf"(?<![A-Za-z0-9.])({_NUM})(?:\s*(?:-|–|—|to|~|至|到)\s*({_NUM}))?\s*(?:-\s*)?({_UNIT_ALT})(?![A-Za-z])",
    re.IGNORECASE,
)


def _number(raw: str) -> float:
    if raw.count(",") == 1 and len(raw.split(",")[1]) == 3:
        return float(raw.replace(",", ""))  # 1,000
    return float(raw.replace(",", "."))


def quantities(text: str) -> set[tuple[float, str]]:
    """Every (value, canonical unit) in `text`; a range gives both ends; "twice" counts as (2, times)."""
    text = _SPELLED_RE.sub(lambda m: str(_SPELLED[m.group(1).lower()]), text or "")
    out: set[tuple[float, str]] = set()
    for m in _QUANTITY.finditer(text):
        unit = UNITS.get(m.group(3).lower())
        if unit is None:
            continue
        out.add((_number(m.group(1)), unit))
        if m.group(2):
            out.add((_number(m.group(2)), unit))
    for m in _COUNT_RE.finditer(text):
        out.add((float(_WORD_COUNTS[(m.group(1) or m.group(2)).lower()]), "times"))
    return out


_ANY_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)?(?![\d])")
_MARKERS = re.compile(r"\[\d{1,3}\]")


def numbers(text: str) -> set[float]:
    """Every number in `text`, with or without a unit ("800 IUs", "CRB-65", "140/90"), citation markers aside:
    a number an answer states that its passage line does not is a claim nothing supports."""
    text = _SPELLED_RE.sub(lambda m: str(_SPELLED[m.group(1).lower()]), _MARKERS.sub(" ", text or ""))
    out = {_number(m.group(0)) for m in _ANY_NUMBER.finditer(text)}
    out |= {float(_WORD_COUNTS[(m.group(1) or m.group(2)).lower()]) for m in _COUNT_RE.finditer(text)}
    return out


def label(q: tuple[float, str]) -> str:
    return f"{q[0]:g} {q[1]}"


# ---- the patient a question or a passage line is about: weight, age and renal-function bands ----------
_BP = re.compile(r"(?<![\d.])(\d{2,3})\s*/\s*(\d{2,3})(?![\d.])(?=\s*(?:mm\s*hg|mmhg|毫米汞柱)?)", re.IGNORECASE)
_PATIENT_UNIT = (
    r"(kg|kgs|kilograms?|kilos?|公斤|千克|years?(?:[- ]old)?|yrs?|岁|months?(?:[- ]old)?|个月"
    r"|ml/min|毫升/分钟)"
)
_BAND_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # 30 to 60 mL/min, 5-10 kg, 30 至 60 mL/min
    (re.compile(rf"({_NUM})\s*(?:-|–|—|to|至|到|~)\s*({_NUM})\s*{_PATIENT_UNIT}", re.IGNORECASE), "range"),
    # "under 3 months", "低于 30 mL/min": the bound itself is not in the band
    (
        re.compile(
            rf"(?:under|below|less than|younger than|lighter than|低于|小于|不足|少于)\s*({_NUM})\s*-?\s*"
            rf"{_PATIENT_UNIT}?",
            re.IGNORECASE,
        ),
        "below",
    ),
    (
        re.compile(
            rf"(?:over|above|more than|older than|heavier than|高于|大于|超过|多于)\s*({_NUM})\s*-?\s*"
            rf"{_PATIENT_UNIT}?",
            re.IGNORECASE,
        ),
        "above",
    ),
    # "aged 80 or over", "65 岁及以上": the bound is in the band
    (re.compile(rf"({_NUM})\s*{_PATIENT_UNIT}?\s*(?:or|and)\s+(?:over|above|more|older)", re.IGNORECASE), "from"),
    (re.compile(rf"({_NUM})\s*{_PATIENT_UNIT}\s*(?:及以上|以上)"), "from"),
    (re.compile(rf"({_NUM})\s*{_PATIENT_UNIT}\s*(?:及以下|以下)"), "to"),
    (re.compile(rf"(?<![\d.])({_NUM})\s*-?\s*{_PATIENT_UNIT}(?![A-Za-z])", re.IGNORECASE), "point"),
]
_EDGE = 1e-6  # "below 30" does not hold 30
_AGE_WORD = re.compile(r"\b(?:aged?|age of|ages)\b|年龄|岁", re.IGNORECASE)


def _band_unit(raw: str | None, text: str, at: int) -> str | None:
    if raw:
        unit = UNITS.get(raw.lower()) or ("y" if raw.lower().startswith(("year", "yr")) or raw == "岁" else None)
        if unit is None and raw.lower().startswith("month"):
            unit = "mo"
        return unit if unit in PATIENT_UNITS else None
    # "aged 80 or over", "Age under 55": a bare number after an age word is years
    return "y" if _AGE_WORD.search(text[max(0, at - 12) : at]) else None


# A question may give an age as a bare number: "my patient is 82", "she's 7".
_BARE_AGE = re.compile(
    r"\b(?:patient|he|she|they|child|kid|son|daughter|mother|father|man|woman|boy|girl|baby)"
    r"(?:\s+is|\s+was|'s|\s+aged)\s+(\d{1,3})\b(?!\s*(?:[a-zA-Z%/°]|\.\d))",
    re.IGNORECASE,
)


def question_bands(text: str) -> list[tuple[float, float, str]]:
    """The patient a question is about: patient_bands, plus an age given as a bare number."""
    bands = patient_bands(text)
    if not any(u == "y" for _, _, u in bands):
        bands += [
            (float(m.group(1)), float(m.group(1)), "y")
            for m in _BARE_AGE.finditer(text or "")
            if 0 < int(m.group(1)) <= 120
        ]
    return bands


def is_child(bands: list[tuple[float, float, str]]) -> bool:
    """An age under 16, or one given in months: a child, whom adult guidance does not cover."""
    return any((u == "y" and hi < 16) or u == "mo" for lo, hi, u in bands)


def patient_bands(text: str) -> list[tuple[float, float, str]]:
    """The weight, age and renal-function bands a text names, as (low, high, unit) with open ends as ±inf:
    "20 kg" → (20, 20, kg); "aged 80 or over" → (80, inf, y); "30 至 60 mL/min" → (30, 60, ml/min)."""
    text = text or ""
    out: list[tuple[float, float, str]] = []
    used: list[tuple[int, int]] = []
    for pattern, kind in _BAND_PATTERNS:
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in used):
                continue
            groups = m.groups()
            if kind == "range":
                lo, hi, raw = _number(groups[0]), _number(groups[1]), groups[2]
            else:
                lo = hi = _number(groups[0])
                raw = groups[1] if len(groups) > 1 else None
            unit = _band_unit(raw, text, m.start())
            if unit is None:
                continue
            if kind == "below":
                lo, hi = float("-inf"), hi - _EDGE
            elif kind == "above":
                lo, hi = lo + _EDGE, float("inf")
            elif kind == "from":
                hi = float("inf")
            elif kind == "to":
                lo = float("-inf")
            out.append((lo, hi, unit))
            used.append((m.start(), m.end()))
    return out


def blood_pressures(text: str) -> set[str]:
    """Blood-pressure pairs ("140/90"): the two numbers belong together, so they compare as one."""
    return {f"{a}/{b}" for a, b in _BP.findall(text or "") if 50 <= int(a) <= 260 and 30 <= int(b) <= 160}


def consistent(question_bands: list[tuple[float, float, str]], bands: list[tuple[float, float, str]]) -> bool:
    """A line fits the question's patient when, for each unit the question names, the line names none of that
    unit or one that overlaps it ("20 kg" fits "20 kg" and "over 5 kg", not "5 kg")."""
    for lo, hi, unit in question_bands:
        same = [(a, b) for a, b, u in bands if u == unit]
        if same and not any(a <= hi and lo <= b for a, b in same):
            return False
    return True


def matches(question_bands: list[tuple[float, float, str]], bands: list[tuple[float, float, str]]) -> int:
    """How many of the question's bands the line names explicitly (a line for exactly this patient)."""
    return sum(1 for lo, hi, unit in question_bands if any(u == unit and a <= hi and lo <= b for a, b, u in bands))
