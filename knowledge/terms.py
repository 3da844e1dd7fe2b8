"""What a clinical question is about, and whether a text speaks of it.

A question's *terms* are its content words (English words, jieba words for Chinese) less the words every
clinical question uses ("what", "dose", "treatment", "patient", "多少", "剂量"); quantities are left to
knowledge/quantities.py. Each term carries:

- its alternatives: the word itself, and for a clinician's everyday words the words a guideline uses
  ("ear infection" → otitis; "blood pressure" → hypertension; "baby" → infant, child);
- whether it is *specific*: rare in general language (wordfreq's Zipf scale, below `SPECIFIC_ZIPF`) or shaped
  like a drug or disease name. A specific word the knowledge base never mentions ("metformin") means the
  question is about something it does not cover; a common one ("leg") counts towards how much is covered.

`TextIndex` holds a text's stems (Snowball English; British spellings folded to American) and its raw
lower-cased text for Chinese, so `covers(term)` is one set or substring look-up.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from knowledge import frequencies
from knowledge.quantities import is_child, question_bands
from knowledge.text import CJK_RUN, EN_STOP, ZH_STOP
from knowledge.vocabulary import NAME_ENDINGS

SPECIFIC_ZIPF = {"en": 4.0, "zh": 4.1}

# Words of the question's frame rather than its topic: how it asks, not what about.
FRAME_EN = frozenset(
    """
about above after again against all also any anything answer anyone around ask asked available based
before below best between both case cases common commonly correct could current currently daily day days
describe different do does doing dosage dosages dose doses dosing drug drugs each else enough every
exactly give given giving max go good guideline guidelines help how however just kind know known like line
long look main make manage managed management many maximum may maybe me mean means medication medications
medicine medicines might minimum more most much must need needed new normal now often ok okay one only other
our ought over patient patients people per person please possible prescribe prescribed prescribing
recommend recommended recommendation right safe same say see should show some someone something start
started starting still suggest suitable take taken taking tell than thank thanks then there these they
thing things think those time times treat treated treating treatment treatments therapy try type typical
typically under until us usual usually very want way we well what whats when where whether which while who
whom whose why would yes yet first second third choice option options first-line second-line regimen amount
information info explain there's it's i'm i'd can't don't many recommended much often appropriate standard
use used using administer administered
symptom symptoms sign signs cause causes caused diagnose diagnosed diagnosis diagnosing prognosis outlook
inherited inheritance risk risks prevent prevention complication complications stage stages research trials
affected affect affects related
if but so because since unless although though nor not no any every get got gets has had having
been being am let lets into onto upon within without via
inject injected injecting injection infuse infused taper titrate dilute reconstitute swallow chew crush apply
""".split()
)
FRAME_ZH = frozenset(
    """
什么 怎么 怎样 如何 多少 多久 几次 几天 哪些 哪种 哪个 为什么 请问 一下 一个 可以 能 会 要 想 知道 应该 需要
剂量 用量 用药 药物 药 吃 服用 使用 用 给 开 治疗 处理 方案 建议 推荐 首选 患者 病人 病患 病 医生 时候 情况 一般
每天 每日 一天 日 次 多长 时间 多长时间 标准 常规 正确 最好 注意 哪 呢 吗 是 有 没有 的 得 了 和 与 及 或 对 在
如果 那么 还 又 再 该 请 告诉 我们 我 你 他 她 它 其 这个 那个 这种 起始 开始 最大 最多
""".split()
)

# The same clinical word in the other language, so that a Chinese question finds and is answered from an English
# page and the reverse. Unlike everyday words these keep the word's own weight and specificity.
TRANSLATIONS: dict[str, tuple[str, ...]] = {
    "发热": ("发热", "发烧", "fever"),
    "中耳炎": ("中耳炎", "otitis media", "ear infection"),
    "急性中耳炎": ("急性中耳炎", "中耳炎", "otitis media"),
    "抗生素": ("抗生素", "antibiotic"),
    "肺炎": ("肺炎", "pneumonia"),
    "高血压": ("高血压", "hypertension", "blood pressure"),
    "血压": ("血压", "blood pressure"),
    "流感": ("流感", "influenza", "flu"),
    "成人": ("成人", "adult"),
    "儿童": ("儿童", "child", "children"),
    "孕妇": ("孕妇", "pregnancy", "pregnant"),
    "咳嗽": ("咳嗽", "cough"),
    "过敏": ("过敏", "allergy", "allergic"),
    "青霉素": ("青霉素", "penicillin"),
    "influenza": ("influenza", "flu", "流感"),
    "otitis": ("otitis", "中耳炎"),
    "pneumonia": ("pneumonia", "肺炎"),
    "hypertension": ("hypertension", "高血压"),
    "fever": ("fever", "发热", "发烧"),
}

# Patients a guideline speaks of separately: a question about one is not answered from a text about adults in
# general ("amoxicillin for otitis in a child" from the adult page), so such a term must be covered like a drug.
POPULATION = frozenset(
    """
child children kid kids baby babies infant infants toddler newborn neonate neonates son daughter boy girl
pregnant pregnancy breastfeeding lactating elderly paediatric pediatric adolescent teenager
儿童 小孩 孩子 宝宝 婴儿 新生儿 小朋友 孕妇 怀孕 妊娠 哺乳 老人 老年人 青少年
""".split()
)

# What about the patient changes the answer (an allergy, the kidneys, the liver): like a population, a line
# must name it to answer for it.
QUALIFIERS = frozenset(
    """
allergy allergies allergic intolerance intolerant renal kidney kidneys hepatic liver impairment
过敏 肾功能 肝功能 肾 肝 肾功能不全 肝功能不全
""".split()
) | {"kidney function"}

# A clinician's everyday words and the words guidelines use for them. Each entry: the phrase as asked →
# alternatives any of which covers it. General clinical synonymy, not tuned to one knowledge base.
LAY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "ear infection": ("otitis", "ear infection", "infection of the middle ear", "middle ear"),
    "middle ear infection": ("otitis", "middle ear"),
    "blood pressure": ("blood pressure", "hypertension", "hypertensive"),
    "high blood pressure": ("hypertension", "blood pressure"),
    "chest infection": ("pneumonia", "chest infection", "respiratory infection", "bronchitis"),
    "lung infection": ("pneumonia", "lung infection"),
    "flu": ("influenza", "flu", "流感"),
    "heart attack": ("myocardial infarction", "heart attack"),
    "stroke": ("stroke", "cerebrovascular"),
    "sugar": ("diabetes", "glucose", "sugar"),
    "blood sugar": ("glucose", "diabetes", "blood sugar"),
    "water pill": ("diuretic", "water pill"),
    "painkiller": ("analgesic", "painkiller", "pain relief"),
    "painkillers": ("analgesic", "painkiller", "pain relief"),
    "pain killer": ("analgesic", "pain relief"),
    "sore throat": ("pharyngitis", "tonsillitis", "sore throat", "咽痛"),
    "urine infection": ("urinary tract infection", "cystitis", "urine infection"),
    "bladder infection": ("cystitis", "urinary tract infection"),
    "kidney": ("kidney", "renal", "肾"),
    "kidneys": ("kidney", "renal", "肾"),
    "kidney function": ("renal function", "kidney function", "creatinine clearance", "肾功能"),
    "pregnant": ("pregnant", "pregnancy", "孕妇", "妊娠"),
    "baby": ("baby", "infant", "child", "newborn", "neonate"),
    "babies": ("baby", "infant", "child", "newborn"),
    "kid": ("child", "children", "kid", "paediatric", "infant"),
    "kids": ("child", "children", "kid", "paediatric", "infant"),
    "toddler": ("child", "toddler", "infant"),
    "little one": ("child", "infant"),
    "son": ("child", "son"),
    "daughter": ("child", "daughter"),
    "boy": ("child", "boy"),
    "girl": ("child", "girl"),
    "infant": ("infant", "baby", "child"),
    "child": ("child", "infant", "paediatric"),
    "children": ("child", "infant", "paediatric"),
    "elderly": ("elderly", "older", "aged", "age", "80", "65"),
    "old": ("age", "aged", "older", "old"),
    "older": ("age", "aged", "older", "elderly"),
    "allergic": ("allergy", "allergic"),
    "temperature": ("temperature", "fever", "°c"),
    "high temperature": ("fever", "temperature"),
    "febrile": ("fever", "febrile"),
    "feverish": ("fever", "feverish", "febrile", "temperature"),
    "unwell": ("unwell", "ill", "systemically"),
    "poorly": ("unwell", "ill"),
    "tummy": ("abdominal", "stomach", "tummy"),
    "antibiotics": ("antibiotic",),
    "jab": ("vaccine", "vaccination", "injection"),
    "shot": ("vaccine", "injection"),
    "runny nose": ("rhinitis", "runny nose", "coryza"),
    "weight": ("weight", "kg"),
    "weigh": ("weight", "kg"),
    "weighs": ("weight", "kg"),
    "weighing": ("weight", "kg"),
    "liquid": ("suspension", "liquid", "syrup", "oral"),
    "syrup": ("suspension", "syrup", "liquid"),
    "发烧": ("发热", "发烧", "高热", "fever"),
    "高烧": ("高热", "发热"),
    "小孩": ("儿童", "小孩", "孩子", "婴儿", "child", "children"),
    "孩子": ("儿童", "孩子", "小孩", "child", "children"),
    "宝宝": ("儿童", "婴儿", "宝宝", "child", "infant", "baby"),
    "小朋友": ("儿童",),
    "老人": ("老人", "老年", "65 岁", "岁及以上"),
    "老年人": ("老人", "老年"),
    "肾不好": ("肾功能不全", "肾"),
    "肾功能差": ("肾功能不全",),
    "血压高": ("高血压", "血压"),
    "嗓子疼": ("咽痛", "嗓子"),
    "喉咙痛": ("咽痛",),
    "怀孕": ("孕妇", "妊娠", "怀孕", "pregnancy", "pregnant"),
    "感冒": ("感冒", "上呼吸道感染"),
    "退烧": ("退烧", "热退", "退热", "发热退"),
    "上班": ("上班", "工作"),
    "上学": ("上学", "学校"),
}
_PARTICLES = frozenset("的 了 吗 呢 吧 啊 是 在 和 与 及 或 也 就 都 而 之 于 得 着 过 把 被 让 给 用 吃".split())
# The same drug by another name: US and UK names, and common brands. Unlike everyday words these stay specific.
DRUG_SYNONYMS: dict[str, tuple[str, ...]] = {}
for _names in (
    ("paracetamol", "acetaminophen", "tylenol", "panadol", "calpol", "对乙酰氨基酚", "扑热息痛"),
    ("ibuprofen", "advil", "nurofen", "motrin", "布洛芬"),
    ("amoxicillin", "amoxycillin", "amoxil", "阿莫西林"),
    ("co-amoxiclav", "augmentin", "amoxicillin-clavulanate", "阿莫西林克拉维酸"),
    ("clarithromycin", "klacid", "biaxin", "克拉霉素"),
    ("azithromycin", "zithromax", "阿奇霉素"),
    ("erythromycin", "红霉素"),
    ("doxycycline", "多西环素"),
    ("oseltamivir", "tamiflu", "奥司他韦", "达菲"),
    ("amlodipine", "norvasc", "氨氯地平"),
    ("losartan", "cozaar", "氯沙坦"),
    ("ramipril", "tritace", "altace", "雷米普利"),
    ("metformin", "glucophage", "二甲双胍"),
    ("atorvastatin", "lipitor", "阿托伐他汀"),
    ("salbutamol", "albuterol", "ventolin", "沙丁胺醇"),
    ("warfarin", "coumadin", "华法林"),
    ("adrenaline", "epinephrine", "肾上腺素"),
    ("furosemide", "frusemide", "lasix", "呋塞米"),
    ("lidocaine", "lignocaine", "利多卡因"),
    ("aspirin", "acetylsalicylic acid", "阿司匹林"),
):
    for _name in _names:
        DRUG_SYNONYMS[_name] = _names
_PHRASES = sorted((p for p in [*LAY_SYNONYMS, *DRUG_SYNONYMS] if " " in p), key=lambda p: -len(p.split()))

# Endings of drug (INN stems) and disease names: such a word is specific however common its spelling.
_TECHNICAL = re.compile(rf"(?:{NAME_ENDINGS})$")
_EN_WORD = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*")
_MARKER = re.compile(r"\[\d{1,3}\]")
# Units and number words are the quantities' business, not the topic's.
_NOT_TOPIC = frozenset(
    """
mg mcg ml kg g l mmhg iu mmol mmol/l mg/kg kilogram kilograms kilo kilos gram grams milligram milligrams
millilitre millilitres milliliter milliliters tablet tablets pill pills capsule capsules drop drops puff puffs
hour hours week weeks month months year years old min mins year-old years-old minute minutes once twice thrice
half quarter one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
""".split()
)


@lru_cache(maxsize=1)
def _stemmer():  # noqa: ANN202
    import snowballstemmer

    return snowballstemmer.stemmer("english")


_IRREGULAR = {
    "children": "child",
    "women": "woman",
    "men": "man",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "lice": "louse",
    "people": "person",
}


@lru_cache(maxsize=20000)
def stem(word: str) -> str:
    word = word.lower()
    s = _stemmer().stemWord(_IRREGULAR.get(word, word))
    # British spellings: paediatric/pediatric, anaemia/anemia, oesophagus/esophagus, haem/hem.
    return s.replace("ae", "e").replace("oe", "e") if len(s) >= 5 else s


@lru_cache(maxsize=20000)
def zipf(word: str, language: str) -> float:
    return frequencies.zipf(word, language)


def _lemmas(word: str) -> set[str]:
    """The word and its likely base forms: an inflection is as common as its base ("lowers" as "lower")."""
    out = {word}
    for suffix, repl in (
        ("ies", "y"),
        ("es", ""),
        ("s", ""),
        ("ed", ""),
        ("ed", "e"),
        ("ing", ""),
        ("ing", "e"),
        ("ly", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            out.add(word[: len(word) - len(suffix)] + repl)
    return out


@lru_cache(maxsize=1)
def _jieba_with_names():  # noqa: ANN202
    """jieba, told the Chinese drug names and everyday words above so that it does not cut them apart."""
    from knowledge.text import _jieba

    jieba = _jieba()
    for word in [*DRUG_SYNONYMS, *LAY_SYNONYMS, *TRANSLATIONS, *POPULATION]:
        if CJK_RUN.fullmatch(word):
            jieba.add_word(word, freq=2000)
    return jieba


def _cjk_words(run: str, offset: int) -> list[tuple[str, int]]:
    """Jieba's words of a run of Chinese characters, less the frame, with their offsets. A drug name jieba
    does not know comes out in pieces (二甲 双 胍; 用奥司 他 韦): single characters are glued back onto the
    word before them, and coverage is then judged on character pairs (TextIndex.has)."""
    jieba = _jieba_with_names()
    out: list[list] = []
    at = offset
    prev_end = -1
    for w in jieba.lcut(run):
        start, at = at, at + len(w)
        if len(w) == 1 and w not in _PARTICLES and out and prev_end == start and zipf(out[-1][0], "zh") < 4.1:
            out[-1][0] += w  # inside a word jieba does not know (奥司 他 韦)
            prev_end = at
            continue
        if not w.strip() or w in ZH_STOP or w in FRAME_ZH:
            continue
        if len(w) == 1 and w not in LAY_SYNONYMS:
            if out and prev_end == start:
                out[-1][0] += w
                prev_end = at
            continue
        if out and prev_end == start and len(out[-1][0]) == 1:
            out[-1][0] += w
        else:
            out.append([w, start])
        prev_end = at
    return [(w, pos) for w, pos in out if len(w) >= 2 or w in LAY_SYNONYMS]


@dataclass(frozen=True)
class Term:
    surface: str  # as the question has it
    alternatives: tuple[str, ...]  # any of these in a text covers the term
    specific: bool
    weight: float  # rarer words weigh more
    position: int  # order in the question (to rebuild phrases of adjacent missing terms)
    zh: bool

    @property
    def required(self) -> bool:
        """A text that does not speak of this term does not answer the question."""
        return self.specific or self.surface in POPULATION or self.surface in QUALIFIERS


def _weight(z: float) -> float:
    return max(0.5, 7.0 - z)


# How a symptom or a manner is described ("nagging", "wheezy", "bloated", "painful"): such a word may be rare
# without naming what the question is about, so it weighs in the coverage but does not decide it alone.
_DESCRIPTOR = re.compile(r"(?:ing|ish|ful|less|ed|en|ly|[^aeiour]y)$")


def _is_name(word: str, z: float) -> bool:
    """A rare word that names a drug, a disease or a thing (rather than describing one)."""
    if word in DRUG_SYNONYMS or _TECHNICAL.search(word):
        return True
    if word in LAY_SYNONYMS or z >= SPECIFIC_ZIPF["en"]:
        return False
    return not (_DESCRIPTOR.search(word) and z >= 2.0)


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", _MARKER.sub(" ", text or "")).lower()


def prepare() -> None:
    """Read now what judging terms reads on first use: jieba's dictionary (with the names above) and wordfreq's
    English and Chinese lists, ~1 s that a pool's first question would otherwise wait."""
    question_terms("paracetamol 对乙酰氨基酚")


CHILD = Term("child", ("child", "children", "paediatric", "infant", "儿童", "小儿"), False, 1.7, 10_000, False)


def question_terms(text: str, patient: bool = False) -> list[Term]:
    """The topic terms of a question (or of an answer sentence), in order. `patient`: a question whose patient
    is a child by age ("a 10-year-old", "8 months") also asks about children."""
    low = normalise(text)
    terms: list[Term] = []
    # English everyday phrases first ("ear infection"), then the words left.
    taken = low
    for phrase in _PHRASES:
        for m in re.finditer(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", taken):
            drug = phrase in DRUG_SYNONYMS
            alts = DRUG_SYNONYMS[phrase] if drug else LAY_SYNONYMS[phrase]
            z = min(zipf(w, "en") for w in phrase.split())
            terms.append(Term(phrase, alts, drug, _weight(z) + 1.0, m.start(), False))
            taken = taken[: m.start()] + " " * len(phrase) + taken[m.end() :]
    for m in _EN_WORD.finditer(taken):
        w = m.group(0).strip("'-")
        if len(w) < 2 or w in EN_STOP or w in FRAME_EN or w in _NOT_TOPIC or w.isdigit():
            continue
        if re.fullmatch(r"\d+[a-z]*", w):
            continue  # "2nd", "500mg"
        z = max(zipf(v, "en") for v in _lemmas(w))
        alts = DRUG_SYNONYMS.get(w) or LAY_SYNONYMS.get(w) or TRANSLATIONS.get(w, (w,))
        specific = _is_name(w, z)
        weight = _weight(z) if specific or not _DESCRIPTOR.search(w) else _weight(z) / 2
        terms.append(Term(w, alts, specific, weight, m.start(), False))
    for run in CJK_RUN.finditer(low):
        for w, at in _cjk_words(run.group(0), run.start()):
            z = zipf(w, "zh")
            alts = DRUG_SYNONYMS.get(w) or LAY_SYNONYMS.get(w) or TRANSLATIONS.get(w, (w,))
            # A two-character piece wordfreq has never seen is usually jieba cutting an unknown name apart.
            specific = w in DRUG_SYNONYMS or (
                z < SPECIFIC_ZIPF["zh"] and w not in LAY_SYNONYMS and (z > 0 or len(w) >= 3)
            )
            terms.append(Term(w, alts, specific, _weight(z), at, True))
    terms.sort(key=lambda t: t.position)
    # The same word twice counts once.
    seen: set[str] = set()
    out = []
    for t in terms:
        if t.surface not in seen:
            seen.add(t.surface)
            out.append(t)
    if patient and is_child(question_bands(text)) and not any(t.surface in POPULATION for t in out):
        out.append(CHILD)
    return out


def other_script_words(text: str) -> str:
    """The question's terms as the other language writes them (流感 → influenza, flu → 流感, 阿莫西林 → amoxicillin):
    a Chinese question finds an English page and the reverse, whose words alone it does not share."""
    out: list[str] = []
    for term in question_terms(text):
        out += [a for a in term.alternatives if bool(CJK_RUN.search(a)) != term.zh and a not in out]
    return " ".join(out)


class TextIndex:
    """A text's stems (English) and its normalised characters (Chinese), for coverage look-ups."""

    def __init__(self, *texts: str) -> None:
        self.raw = normalise(" \n ".join(t for t in texts if t))
        # "low-severity" and "low severity", "co-amoxiclav" and "co amoxiclav" read the same
        words = [w.strip("'") for w in _EN_WORD.findall(self.raw.replace("-", " "))]
        self.stems = [stem(w) for w in words if w]
        self.stem_set = frozenset(self.stems)
        self._joined = " " + " ".join(self.stems) + " "

    def has(self, alternative: str) -> bool:
        alt = normalise(alternative)
        if CJK_RUN.search(alt) or not re.search(r"[a-z]", alt):
            if alt in self.raw:
                return True
            # A word jieba cut differently here and in the text: most of its character pairs are there.
            pairs = [alt[i : i + 2] for i in range(len(alt) - 1)]
            return len(alt) >= 3 and sum(p in self.raw for p in pairs) >= 0.75 * len(pairs)
        parts = [stem(w) for w in _EN_WORD.findall(alt.replace("-", " "))]
        if not parts:
            return False
        if len(parts) == 1:
            p = parts[0]
            if p in self.stem_set:
                return True
            # allergic/allergy, hypertensive/hypertension: a shared stem prefix of 5 or more letters
            return len(p) >= 5 and any(
                s.startswith(p) or (len(s) >= 5 and p.startswith(s)) for s in self.stem_set if abs(len(s) - len(p)) <= 2
            )
        return f" {' '.join(parts)} " in self._joined

    def covers(self, term: Term) -> bool:
        return any(self.has(a) for a in term.alternatives)

    def pair_share(self, text: str) -> float:
        """The share of a Chinese text's character pairs found here (how a jieba-independent check reads it)."""
        pairs = chinese_pairs(text)
        return sum(p in self.raw for p in pairs) / len(pairs) if pairs else 1.0


def chinese_pairs(text: str) -> list[str]:
    """Adjacent Chinese character pairs of each run, less those made only of particles."""
    out = []
    for run in CJK_RUN.findall(normalise(text)):
        out += [run[i : i + 2] for i in range(len(run) - 1) if not (run[i] in _PARTICLES and run[i + 1] in _PARTICLES)]
    return out


def adjacent(terms: list[Term], question: str) -> list[list[Term]]:
    """The terms in runs of words that stand next to each other in the question ("hairy cell leukemia")."""
    low = normalise(question)
    groups: list[list[Term]] = []
    for t in sorted(terms, key=lambda t: t.position):
        if groups:
            prev = groups[-1][-1]
            gap = low[prev.position + len(prev.surface) : t.position]
            if not gap.strip() or (not t.zh and re.fullmatch(r"[\s-]*", gap)):
                groups[-1].append(t)
                continue
        groups.append([t])
    return groups


def names(terms: list[Term], question: str) -> list[str]:
    """A rare word followed by another names one thing ("lymphocytic leukemia", "adrenal gland cancer"): each
    such pair of plain English words standing together in the question, which a text must hold together too.
    Everyday words (they have their alternatives) and hyphenated compounds are left to the term check."""

    def plain(t: Term) -> bool:
        return not t.zh and t.alternatives == (t.surface,) and "-" not in t.surface and " " not in t.surface

    out = []
    for run in adjacent(terms, question):
        for a, b in zip(run, run[1:]):
            if a.specific and plain(a) and plain(b):
                out.append(f"{a.surface} {b.surface}")
    return out


def missing_phrase(terms: list[Term], question: str) -> str:
    """The uncovered terms as the question words them: adjacent ones joined ("broken leg"), the rest listed."""
    if not terms:
        return ""
    low = normalise(question)
    groups = adjacent(terms, question)
    phrases = []
    for g in groups:
        start, end = g[0].position, g[-1].position + len(g[-1].surface)
        # a term the question implies (a child, from the age it gives) is named by its own word
        phrases.append(question_slice(question, low, start, end) or " ".join(t.surface for t in g))
    if any(t.zh for t in terms):
        return "、".join(phrases)
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def question_slice(question: str, low: str, start: int, end: int) -> str:
    """The question's own spelling of low[start:end] (NFKC keeps lengths for the text we see)."""
    if start >= len(low):
        return ""
    text = unicodedata.normalize("NFKC", _MARKER.sub(" ", question or ""))
    piece = text[start:end] if len(text) == len(low) else low[start:end]
    return piece.strip()
