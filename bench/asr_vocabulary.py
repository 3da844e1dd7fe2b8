"""Does the knowledge base's vocabulary teach the ear? Whisper with and without KB hotwords.

    python bench/asr_vocabulary.py                  # 24 medical questions, 3 conditions
    python bench/asr_vocabulary.py --docs 40 --json out.json

A knowledge base of --docs MedQuAD topics (../shared/eval-data/rag/medquad: the passages, titled by their
focus, e.g. "Hairy Cell Leukemia") gives its vocabulary exactly as the product builds it
(knowledge/vocabulary.py, bounded by MEDVOICE_ASR_KB_VOCABULARY_CHARS as the asr pool does). One question
per topic ("What is hairy cell leukemia?") is spoken by the Piper voice and transcribed by faster-whisper
(the configured model, in-process) three ways: no prompt, KB vocabulary as hotwords (what the product
does), and the same text as initial_prompt. Printed per condition:

- term accuracy: questions whose focus term comes through intact (case and punctuation ignored), split into
  terms that fit in the bounded vocabulary and terms that did not;
- WER on the other words of the questions (errors on reference words outside the focus term, plus insertions);
- "the rest": WER/CER on ../shared/eval-data/speech (JFK; FunASR Chinese clips) with the vocabulary in place
  as the product applies it (only terms in the speech's script: English terms pulled Chinese speech towards
  English, CER 0.16 → 0.42, before that filter), i.e. speech that has nothing to do with the knowledge base.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval-data"


def norm_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def focus_hit(focus: str, hyp: str) -> bool:
    return f" {' '.join(norm_words(focus))} " in f" {' '.join(norm_words(hyp))} "


def other_word_errors(question: str, focus: str, hyp: str) -> tuple[int, int]:
    """(errors, reference words) over the question's words outside the focus term."""
    import jiwer

    ref, fw = norm_words(question), norm_words(focus)
    span = next((range(i, i + len(fw)) for i in range(len(ref) - len(fw) + 1) if ref[i : i + len(fw)] == fw), range(0))
    out = jiwer.process_words(" ".join(ref), " ".join(norm_words(hyp)) or "<empty>")
    errors = 0
    for chunk in out.alignments[0]:
        if chunk.type == "insert":
            errors += chunk.hyp_end_idx - chunk.hyp_start_idx
        elif chunk.type in ("substitute", "delete"):
            errors += sum(1 for i in range(chunk.ref_start_idx, chunk.ref_end_idx) if i not in span)
    return errors, len(ref) - len(span)


def load_topics(n: int, seed: int) -> list[dict]:
    passages: dict[str, dict] = {}
    for line in (EVAL / "rag" / "medquad" / "subset_passages.jsonl").open(encoding="utf-8"):
        p = json.loads(line)
        topic = passages.setdefault(p["focus"], {"focus": p["focus"], "doc_id": p["doc_id"], "texts": []})
        topic["texts"].append(p["text"])
    # Spoken questions name the focus plainly: skip focus strings with parentheses, digits or abbreviations.
    names = sorted(f for f in passages if re.fullmatch(r"[A-Za-z' -]{4,40}", f) and not re.search(r"\b[A-Z]{2,}\b", f))
    random.Random(seed).shuffle(names)
    return [passages[f] for f in names[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=24, help="MedQuAD topics in the knowledge base (one question each)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not (EVAL / "rag" / "medquad").is_dir():
        sys.exit(f"needs ../shared/eval-data (MedQuAD passages and speech clips), not found at {EVAL}")

    import jiwer

    from knowledge.vocabulary import VocabularyBuilder
    from workers import engines
    from workers.core.settings import get_settings
    from workers.engines import asr as _asr  # noqa: F401 - registers the engines
    from workers.engines import tts as _tts  # noqa: F401
    from workers.engines.vocabulary import bounded, in_language

    s = get_settings()
    topics = load_topics(args.docs, args.seed)
    words = VocabularyBuilder()
    for t in topics:
        words.add([t["doc_id"]] * len(t["texts"]), t["texts"])
    records = [SimpleNamespace(title=t["focus"], tags=[], date="") for t in topics]
    terms = words.finish(records)
    vocab = bounded(in_language(terms, "en"), s.asr_kb_vocabulary_chars) or ""
    in_vocab = {t["focus"] for t in topics if t["focus"].lower() in vocab.lower()}

    asr, tts = engines.get("asr"), engines.get("tts")
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-vocab-"))
    clips = []
    for i, t in enumerate(topics):
        question = f"What is {t['focus'].lower()}?"
        wav, _timings = tts.synthesize(question, speed=1.0)
        path = tmp / f"q{i:03d}.wav"
        tts.write_wav(wav, path)
        clips.append({"focus": t["focus"], "question": question, "audio": asr.decode(path)})
    speech = []
    for line in (EVAL / "speech" / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        name, lang, _dur, _sr, ref, _kind = line.split("\t")
        if (EVAL / "speech" / name).exists():
            lang = lang.split("+")[0]  # a code-switched clip: its main language
            speech.append({"name": name, "lang": lang, "ref": ref, "audio": asr.decode(EVAL / "speech" / name)})

    conditions = {
        "no prompt": {},
        "KB hotwords (product)": {"hotwords": vocab},
        "KB initial_prompt": {"initial_prompt": vocab},
    }
    asr.transcribe(clips[0]["audio"], language="en")  # warm-up
    results = {}
    for label, opts in conditions.items():
        hits = {"in": [0, 0], "out": [0, 0]}
        errors = refs = 0
        rtfs, misheard = [], []
        for c in clips:
            r = asr.transcribe(
                c["audio"],
                language="en",
                hotwords=opts.get("hotwords", ""),
                initial_prompt=opts.get("initial_prompt", ""),
            )
            rtfs.append(r["timings"]["rtf"])
            ok = focus_hit(c["focus"], r["text"])
            bucket = hits["in" if c["focus"] in in_vocab else "out"]
            bucket[0] += ok
            bucket[1] += 1
            if not ok:
                misheard.append(f"{c['focus']} → {r['text']}")
            e, n = other_word_errors(c["question"], c["focus"], r["text"])
            errors, refs = errors + e, refs + n
        rest = {}
        for sp in speech:
            # as the product does: only the terms written in the speech's script (none here for Chinese)
            own = (bounded(in_language(terms, sp["lang"]), s.asr_kb_vocabulary_chars) or "") if opts else ""
            r = asr.transcribe(
                sp["audio"],
                language=sp["lang"],
                hotwords=own if "hotwords" in opts else "",
                initial_prompt=own if "initial_prompt" in opts else "",
            )
            if sp["lang"] == "zh":
                strip = lambda x: re.sub(r"[^\w]", "", x)  # noqa: E731 - CER over characters only
                rest[sp["name"]] = ("CER", jiwer.cer(strip(sp["ref"]), strip(r["text"]) or "-"))
            else:
                rest[sp["name"]] = ("WER", jiwer.wer(" ".join(norm_words(sp["ref"])), " ".join(norm_words(r["text"]))))
        results[label] = {
            "term_in_vocab": hits["in"],
            "term_not_in_vocab": hits["out"],
            "other_word_wer": errors / max(refs, 1),
            "rtf_median": statistics.median(rtfs),
            "rest": rest,
            "misheard": misheard,
        }

    print(
        f"# bench/asr_vocabulary.py  {time.strftime('%Y-%m-%d %H:%M')}  cores={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    print(
        f"ASR model dir {asr.model_dir.name}, beam {s.asr_beam_size}, {asr.compute_type}, {s.asr_threads} threads; "
        f"{len(topics)} MedQuAD topics, one Piper-spoken question each"
    )
    print(
        f"KB vocabulary ({s.asr_kb_vocabulary_chars} chars, {len(in_vocab)}/{len(topics)} focus terms fit): "
        f"{vocab[:160]}…\n"
    )
    head = (
        f"{'condition':24} {'term acc (in vocab)':>20} {'term acc (not in)':>18} {'other-word WER':>15} {'RTF p50':>8}"
    )
    rest_names = [sp["name"] for sp in speech]
    print(head + "".join(f" {n[:22]:>23}" for n in rest_names))
    for label, r in results.items():
        (hi, ni), (ho, no) = r["term_in_vocab"], r["term_not_in_vocab"]
        row = (
            f"{label:24} {f'{hi}/{ni} = {hi / max(ni, 1):.0%}':>20} {f'{ho}/{no}' if no else '-':>18} "
            f"{r['other_word_wer']:>15.3f} {r['rtf_median']:>8.3f}"
        )
        print(row + "".join(f" {f'{k} {v:.3f}':>23}" for k, v in r["rest"].values()))
    print("\nstill misheard with KB hotwords:")
    for m in results["KB hotwords (product)"]["misheard"]:
        print("  " + m)
    if args.json:
        args.json.write_text(json.dumps({"vocabulary": vocab, "results": results}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
