"""What query-focused passages (knowledge/focus.py) save and what they cost, on real questions.

PubMedQA (../shared/eval-data/rag/pubmedqa): each question gets its gold abstract plus the next three that
BM25 retrieves from the 1,000 abstracts, as the consultation prompt would (top 4). The same real llama.cpp
model then answers with the whole passages and with passages focused to a token budget, runs alternating.

Printed per condition: prompt tokens, time to the first token and to the first sentence (median, p95),
how much of the gold conclusion (`long_answer`) the answer's words cover, the yes/no/maybe decision against
the gold `final_decision` (the 0.5B model says "yes" to nearly everything: read it as agreement only); plus,
without the model, how much of the gold abstract's words shared with the gold conclusion the focused text
keeps, against cutting each passage to its leading sentences. Figures, not assertions:

    .venv/bin/python bench/context_focus.py --questions 30 --budget 320
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "eval-data" / "rag" / "pubmedqa"
ASK = " Answer yes, no or maybe, then say why in one sentence."


def load(n: int) -> tuple[list[dict], dict[str, str]]:
    corpus = {d["doc_id"]: d["text"] for d in map(json.loads, (DATA / "corpus.jsonl").open(encoding="utf-8"))}
    questions = [q for q in map(json.loads, (DATA / "questions.jsonl").open(encoding="utf-8"))][:n]
    return questions, corpus


def retrieve(questions: list[dict], corpus: dict[str, str], k: int) -> list[list[str]]:
    """Gold abstract first, then BM25's best others: the passages a top-k retrieval would hand the LLM."""
    import bm25s

    from knowledge.text import lexical_tokens

    ids = list(corpus)
    index = bm25s.BM25()
    index.index([lexical_tokens(corpus[i]) for i in ids], show_progress=False)
    out = []
    for q in questions:
        gold = q["gold_doc_ids"][0]
        found, _scores = index.retrieve([lexical_tokens(q["question"])], k=k + 1, show_progress=False)
        others = [ids[int(j)] for j in found[0] if ids[int(j)] != gold][: k - 1]
        out.append([gold, *others])
    return out


def decision(answer: str) -> str | None:
    m = re.search(r"\b(yes|no|maybe)\b", answer.lower())
    return m.group(1) if m else None


def covered(answer: str, conclusion: str) -> float:
    """The share of the gold conclusion's words that the answer uses."""
    from knowledge.text import lexical_tokens

    wanted = set(lexical_tokens(conclusion))
    return len(wanted & set(lexical_tokens(answer))) / len(wanted) if wanted else 0.0


def kept_share(focused: str, gold_text: str, conclusion: str) -> float | None:
    """Of the gold abstract's words that the conclusion also uses, the share the focused text still holds."""
    from knowledge.text import lexical_tokens

    wanted = set(lexical_tokens(gold_text)) & set(lexical_tokens(conclusion))
    return len(wanted & set(lexical_tokens(focused))) / len(wanted) if wanted else None


def lead(texts: list[str], budget: int, count) -> list[str]:
    """The naive alternative: each passage cut to its leading sentences, an equal share of the budget each."""
    from knowledge.text import split_sentences

    out = []
    for text in texts:
        kept, used = [], 0
        for sentence in split_sentences(text):
            used += count(sentence) + 1
            if used > budget // len(texts) and kept:
                break
            kept.append(sentence)
        out.append(" ".join(kept))
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--budget", type=int, default=320, help="focused context budget, LLM tokens")
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"skipped: {DATA} is absent (../shared/eval-data is not part of a user's clone)")

    from knowledge.focus import focus_passages
    from workers.core.settings import Settings
    from workers.engines.llm import build_messages
    from workers.engines.llm import load as load_llm

    s = Settings(llm_n_ctx=4096)
    engine = load_llm(s)
    count = lambda text: len(engine.llm.tokenize(text.encode("utf-8"), add_bos=False))  # noqa: E731
    questions, corpus = load(args.questions)
    picks = retrieve(questions, corpus, args.top_k)

    rows: dict[str, dict[str, list]] = {
        c: {"prompt": [], "first_token": [], "first_sentence": [], "decision": [], "covered": []}
        for c in ("whole", "focused")
    }
    kept, kept_lead, focus_ms = [], [], []
    for n, (q, ids) in enumerate(zip(questions, picks)):
        texts = [corpus[i] for i in ids]
        t0 = time.perf_counter()
        focused = focus_passages(q["question"], texts, args.budget, count)
        focus_ms.append((time.perf_counter() - t0) * 1000)
        share = kept_share(focused[0], texts[0], q["long_answer"])
        if share is not None:
            kept.append(share)
            kept_lead.append(kept_share(lead(texts, args.budget, count)[0], texts[0], q["long_answer"]))
        order = ("whole", "focused") if n % 2 == 0 else ("focused", "whole")  # alternate: neither runs warmer
        for cond in order:
            ctx = texts if cond == "whole" else focused
            msgs = build_messages(s.llm_system_prompt, q["question"] + ASK, context=ctx, language="en")
            out = engine.generate(msgs, max_tokens=args.max_tokens, first_chunk_comma=False)
            t = out["timings"]
            row = rows[cond]
            row["prompt"].append(t["prompt_tokens"])
            row["first_token"].append(t["first_token_s"])
            if t["first_sentence_s"] is not None:
                row["first_sentence"].append(t["first_sentence_s"])
            row["decision"].append(decision(out["text"]))
            row["covered"].append(covered(out["text"], q["long_answer"]))
        print(
            f"{n + 1:3d}/{len(questions)}  gold={q['final_decision']:5s}  whole={rows['whole']['decision'][-1]!s:5s}"
            f"  focused={rows['focused']['decision'][-1]!s:5s}  prompt {rows['whole']['prompt'][-1]}"
            f" → {rows['focused']['prompt'][-1]} tokens",
            flush=True,
        )

    gold = [q["final_decision"] for q in questions]
    print(
        f"\nPubMedQA, {len(questions)} questions, top {args.top_k} (gold + BM25), budget {args.budget} tokens,"
        f" max {args.max_tokens} new tokens, {s.llm_threads} threads"
    )
    print(
        f"{'condition':10s} {'prompt tok p50':>15s} {'first token p50/p95':>22s} {'first sentence p50/p95':>24s}"
        f" {'conclusion covered':>19s} {'decision acc':>13s}"
    )
    for cond, row in rows.items():
        acc = sum(d == g for d, g in zip(row["decision"], gold)) / len(gold)
        fs = row["first_sentence"] or [float("nan")]
        print(
            f"{cond:10s} {statistics.median(row['prompt']):15.0f} "
            f"{statistics.median(row['first_token']):10.2f}s /{pct(row['first_token'], 0.95):6.2f}s "
            f"{statistics.median(fs):12.2f}s /{pct(fs, 0.95):6.2f}s {statistics.mean(row['covered']):19.3f}"
            f" {acc:13.2f}"
        )
    agree = sum(a == b for a, b in zip(rows["whole"]["decision"], rows["focused"]["decision"])) / len(gold)
    ratio = statistics.median(rows["focused"]["first_token"]) / statistics.median(rows["whole"]["first_token"])
    print(
        f"first token, focused / whole: {ratio:.2f}x;  decisions agree: {agree:.2f};"
        f"  focusing took p50 {statistics.median(focus_ms):.1f} ms"
    )
    print(
        f"gold abstract's words shared with its conclusion, kept within the budget: focused "
        f"{statistics.mean(kept):.2f} (median {statistics.median(kept):.2f}) vs leading sentences "
        f"{statistics.mean(kept_lead):.2f} (median {statistics.median(kept_lead):.2f}); whole passages 1.00"
    )


if __name__ == "__main__":
    main()
