"""LLM engine: a GGUF model through llama-cpp-python, streaming sentences, cancellable between tokens.

- The chat template comes from the GGUF itself (`tokenizer.chat_template`), rendered with llama-cpp's
  Jinja2ChatFormatter; a GGUF without one falls back to ChatML.
- The fixed system prompt is the same prefix of every prompt. With `llm_prefix_cache` it is evaluated
  once per process at load and its KV cache kept: before a turn whose prompt does not already
  share that prefix with the context's KV cache, the state is restored, and llama.cpp's prefix match then
  evaluates only the rest (bench/engines.py measures the gain on time to first sentence).
- A prompt's tokens up to its question (system prompt, history, context: `question_prefix`) can be evaluated
  ahead of the question (`prefill`, while a clinician is still speaking); llama.cpp's prefix match then
  evaluates only the question. The KV cache of such a prefix can be exported and imported (`export_kv`,
  `import_kv`: llama.cpp's per-sequence state, ~12 KB a token here), so another llm process can use it.
- Text is split into sentences as it streams (workers/engines/splitter.py) and handed to `on_sentence`.
- `cancel()` is asked between tokens; a cancelled turn stops at once and reports `cancelled`.

`llama_cpp` is imported only when the engine is built (in a worker process).
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knowledge.text import detect_language
from workers import engines
from workers.core.errors import EngineUnavailable, InputTooLarge
from workers.core.settings import Settings
from workers.engines.splitter import SentenceSplitter

log = logging.getLogger("medvoice.engines.llm")

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


LANGUAGE_HINT = {"zh": "请用中文回答。", "en": "Answer in English."}
QUESTION_LABEL = "Question:"  # the last words of a prompt before the question (build_messages)
PREFILL_BATCH = 64  # tokens a prefill evaluates between asking whether to stop (~0.2 s on 2 cores)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two token lists share from the start."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def build_messages(
    system_prompt: str,
    question: str,
    context: list[str] | None = None,
    history: list[dict[str, str]] | None = None,
    language: str | None = None,
) -> list[dict[str, str]]:
    """The chat for one RAG turn: fixed system prompt first (the cached prefix), then history, then the
    numbered context passages and the question in the user message."""
    language = language or detect_language(question)
    parts = []
    if context:
        parts.append("Context:\n" + "\n\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(context, 1)))
    parts.append(f"{QUESTION_LABEL} {question.strip()}")
    hint = LANGUAGE_HINT.get(language[:2].lower()) if language else None
    if hint:
        parts.append(hint)
    return [
        {"role": "system", "content": system_prompt},
        *(history or []),
        {"role": "user", "content": "\n\n".join(parts)},
    ]


class LlmEngine:
    def __init__(self, settings: Settings, model_path: Path) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EngineUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        self.settings = settings
        self.model_path = Path(model_path)
        t0 = time.perf_counter()
        self.llm = Llama(
            model_path=str(self.model_path),
            n_ctx=settings.llm_n_ctx,
            n_threads=settings.llm_threads,
            n_threads_batch=settings.llm_threads,
            n_gpu_layers=settings.llm_n_gpu_layers,
            use_mlock=settings.llm_use_mlock,
            seed=settings.llm_seed,
            verbose=False,
        )
        self.load_s = time.perf_counter() - t0
        md = self.llm.metadata or {}
        template = md.get("tokenizer.chat_template") or CHATML
        self.template_source = "gguf" if md.get("tokenizer.chat_template") else "chatml-fallback"
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        eos = self.llm._model.token_get_text(eos_id) if eos_id != -1 else ""  # noqa: SLF001
        bos = self.llm._model.token_get_text(bos_id) if bos_id != -1 else ""  # noqa: SLF001
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
        )
        self._prefix_formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False
        )
        self._add_bos = bos_id != -1 and bool(md.get("tokenizer.ggml.add_bos_token", "true") != "false")
        self.prefix_tokens: list[int] = []
        self._prefix_state: bytes | None = None
        self.prefix_eval_s = 0.0
        if settings.llm_prefix_cache:
            self._evaluate_prefix(settings.llm_system_prompt)

    # -- prompt ------------------------------------------------------------------------------------
    def tokens_for(self, messages: list[dict[str, str]]) -> list[int]:
        prompt = self._formatter(messages=messages).prompt
        return self._tokenize(prompt)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no BOS, no chat template), as a budget counts them."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _tokenize(self, text: str) -> list[int]:
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self.llm.token_bos()
        if self._add_bos and bos != -1 and (not tokens or tokens[0] != bos):
            tokens = [bos, *tokens]
        return tokens

    def _evaluate_prefix(self, system_prompt: str) -> None:
        """Evaluate the rendered system message once; keep llama.cpp's state for later turns."""
        rendered = self._prefix_formatter(messages=[{"role": "system", "content": system_prompt}]).prompt
        prefix = self._tokenize(rendered)
        # Keep only the part that really is a prefix of a full prompt (templates may differ at the end).
        probe = self.tokens_for([{"role": "system", "content": system_prompt}, {"role": "user", "content": "x"}])
        prefix = prefix[: common_prefix(prefix, probe)]
        if len(prefix) < 2:
            return
        t0 = time.perf_counter()
        self.llm.reset()
        self.llm.eval(prefix)
        # Its KV cache only (~12 KB a token): llama-cpp-python's save_state also copies its logits buffer and the
        # whole context state (measured: the engine's RSS 728 → 663 MB with this instead).
        self._prefix_state = self.export_kv(prefix)
        self.prefix_eval_s = time.perf_counter() - t0
        self.prefix_tokens = prefix
        log.info("llm system prefix: %d tokens evaluated in %.3fs", len(prefix), self.prefix_eval_s)

    def _restore_prefix(self, tokens: list[int]) -> bool:
        p = self.prefix_tokens
        if not p or self._prefix_state is None or tokens[: len(p)] != p:
            return False
        if self.held(p) == len(p):
            return False  # the KV cache already starts with the prefix: llama.cpp reuses it
        return self.import_kv(p, self._prefix_state)

    # -- prefill -----------------------------------------------------------------------------------
    def question_prefix(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens up to its question: the same for every question asked with this system prompt,
        history and context. Empty when the prompt has no question label, or its tokens would not start so."""
        prompt = self._formatter(messages=messages).prompt
        cut = prompt.rfind(QUESTION_LABEL)
        if cut < 0:
            return []
        prefix = self._tokenize(prompt[: cut + len(QUESTION_LABEL)])
        # The question's first word must not merge with the label into one token.
        return prefix if self._tokenize(prompt)[: len(prefix)] == prefix else []

    def held(self, tokens: list[int]) -> int:
        """How many of `tokens` the KV cache holds already, from the start."""
        return common_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)

    def prefill(
        self, tokens: list[int], stop: Callable[[], bool] | None = None, batch: int = PREFILL_BATCH
    ) -> dict[str, Any]:
        """Make the KV cache hold `tokens`, evaluating only what it does not hold yet, `batch` tokens at a time;
        `stop()` is asked between batches (what is evaluated by then stays usable as a shorter prefix)."""
        t0 = time.perf_counter()
        start = held = self.held(tokens)
        if held < len(self.prefix_tokens) and self._restore_prefix(tokens):
            start = held = self.held(tokens)
        self.llm.n_tokens = min(self.llm.n_tokens, held)  # llama-cpp's eval drops the KV cache from here on
        self.llm._ctx.kv_cache_seq_rm(-1, held, -1)  # noqa: SLF001 - exactly the prefix, nothing after it
        stopped = False
        while held < len(tokens):
            if stop is not None and stop():
                stopped = True
                break
            self.llm.eval(tokens[held : held + batch])
            held = self.llm.n_tokens
        return {
            "tokens": len(tokens),
            "evaluated": held - start,
            "stopped": stopped,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    def export_kv(self, tokens: list[int]) -> bytes | None:
        """The KV cache of `tokens` (which it must hold) as bytes for import_kv in another process."""
        if not tokens or self.held(tokens) != len(tokens) or self.llm.n_tokens != len(tokens):
            return None
        import llama_cpp

        ctx = self.llm._ctx.ctx  # noqa: SLF001 - llama.cpp's per-sequence state has no wrapper in llama-cpp-python
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return bytes(memoryview(buf)[:n]) if n else None

    def import_kv(self, tokens: list[int], data: bytes) -> bool:
        """Load a KV cache that export_kv made of exactly `tokens` (same model, same context size)."""
        import llama_cpp

        ctx = self.llm._ctx.ctx  # noqa: SLF001
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)  # noqa: SLF001
        self.llm.n_tokens = 0
        src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(ctx, src, len(data), 0) != len(data):
            return False
        self.llm.input_ids[: len(tokens)] = tokens
        self.llm.n_tokens = len(tokens)
        self.llm._requires_eval = True  # noqa: SLF001 - the logits are not those of this state: decode again
        return True

    # -- generation --------------------------------------------------------------------------------
    def generate(
        self,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        cancel: Callable[[], bool] | None = None,
        on_sentence: Callable[[int, str], None] | None = None,
        first_chunk_comma: bool = True,
        use_prefix_cache: bool | None = None,
    ) -> dict[str, Any]:
        s = self.settings
        max_tokens = int(max_tokens or s.llm_max_tokens)
        temperature = s.llm_temperature if temperature is None else float(temperature)
        t0 = time.perf_counter()
        tokens = self.tokens_for(messages)
        if len(tokens) + max_tokens > self.llm.n_ctx():
            if len(tokens) >= self.llm.n_ctx() - 16:
                raise InputTooLarge(
                    f"prompt of {len(tokens)} tokens does not fit the context of {self.llm.n_ctx()}",
                    {"prompt_tokens": len(tokens), "n_ctx": self.llm.n_ctx()},
                )
            max_tokens = self.llm.n_ctx() - len(tokens)
        if use_prefix_cache is None:
            use_prefix_cache = s.llm_prefix_cache
        restored = self._restore_prefix(tokens) if use_prefix_cache else False
        cached = self.held(tokens)  # llama.cpp evaluates only the rest
        splitter = SentenceSplitter(first_chunk_comma=first_chunk_comma)
        sentences: list[str] = []
        pieces: list[str] = []
        first_token_s = first_sentence_s = None
        n_tokens = 0
        cancelled = False
        finish_reason = None

        def emit(batch: list[str]) -> None:
            nonlocal first_sentence_s
            for sentence in batch:
                if first_sentence_s is None:
                    first_sentence_s = time.perf_counter() - t0
                if on_sentence is not None:
                    on_sentence(len(sentences), sentence)
                sentences.append(sentence)

        if cancel is not None and cancel():
            cancelled = True
            stream = iter(())
        else:
            stream = self.llm.create_completion(
                prompt=tokens,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=0.9,
                top_k=40,
                repeat_penalty=1.1,
                stream=True,
                seed=s.llm_seed,
            )
        t_first = None
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                text = choice.get("text") or ""
                if choice.get("finish_reason") and not text:
                    finish_reason = choice["finish_reason"]
                    break  # the closing chunk carries no token
                n_tokens += 1
                if t_first is None:
                    t_first = time.perf_counter()
                    first_token_s = t_first - t0
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
                if text:
                    pieces.append(text)
                    emit(splitter.feed(text))
                if cancel is not None and cancel():
                    cancelled = True
                    finish_reason = "cancelled"
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not cancelled:
            emit(splitter.flush())
        total_s = time.perf_counter() - t0
        gen_s = (time.perf_counter() - t_first) if t_first else 0.0
        text = "".join(pieces).strip()
        # Tokens the model produced. Stream chunks over-count them (a character split over several byte tokens
        # comes out as empty chunks and a late flush); llama.cpp evaluates each into the context after the
        # prompt, all but the last one sampled when the stream is left early.
        evaluated = self.llm.n_tokens - len(tokens)
        n_tokens = max(0, min(n_tokens, evaluated + 1, max_tokens))
        return {
            "text": text,
            "sentences": sentences,
            "cancelled": cancelled,
            "finish_reason": finish_reason or ("length" if n_tokens >= max_tokens else "stop"),
            "timings": {
                "first_token_s": round(first_token_s, 4) if first_token_s is not None else None,
                "first_sentence_s": round(first_sentence_s, 4) if first_sentence_s is not None else None,
                "total_s": round(total_s, 4),
                "prompt_tokens": len(tokens),
                "tokens": n_tokens,
                "tokens_per_s": round((n_tokens - 1) / gen_s, 2) if n_tokens > 1 and gen_s > 0 else None,
                "prefix_restored": restored,
                "cached_tokens": cached,
            },
        }


@engines.register("llm", pool="llm")
def load(settings: Settings) -> LlmEngine:
    from workers.core.refs import force_offline

    force_offline()
    from workers.modelfiles import resolve_llm

    return LlmEngine(settings, resolve_llm(settings))
