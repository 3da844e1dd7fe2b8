"""ASR engine: faster-whisper (CTranslate2) from a local model directory.

Decoding goes through faster-whisper's own PyAV decoder (any container/codec FFmpeg knows, resampled to
16 kHz mono); a file it cannot decode raises AudioUnreadable. Silero VAD ships inside faster-whisper, so
`vad_filter` works offline. `faster_whisper` is imported only when the engine is built.

`word_timestamps=True` adds each word's start, end and probability (per segment and as one flat list);
`task="translate"` has Whisper write English, whatever language is spoken. `on_segment(segment, language)` is
called with each segment as soon as it is decoded, so a caller can stream it on.

`fit_window=True` (live speech) lets the encoder see only the audio plus a margin instead of Whisper's whole
30 s window, which faster-whisper fills with zero frames and the encoder pays for in full: on 2 cores the
encoder is ~0.35 s of the ~0.55 s a 4 s question costs, and a 10 s window ~0.04 s (bench/voice_latency.py
measures both, with their transcripts' error rates).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workers import engines
from workers.core.errors import AudioTooLong, AudioUnreadable, EmptyInput, EngineUnavailable, InputError
from workers.core.settings import Settings

log = logging.getLogger("medvoice.engines.asr")
SAMPLE_RATE = 16000
WIDE_LANGUAGES = ("zh", "ja", "yue")  # CJK scripts: written without spaces between words
# A live preview of speech still being spoken: one greedy pass, no timestamps, and a token budget. On a second
# of audio Whisper may otherwise loop, retrying at each fallback temperature (measured: 12 s for 0.77 s).
QUICK = {"temperature": 0.0, "without_timestamps": True, "max_new_tokens": 96}
# A live final is bounded too: a budget of tokens for its length, and fewer fallback temperatures (each retry
# decodes again). Measured without it: one 5.6 s final looped for 14 s, and every session's finals waited.
LIVE_TEMPERATURES = (0.0, 0.4, 0.8)
# ...and while the live pool is behind, one pass: a final that would loop costs its budget once, not three times
# (a knowledge base's vocabulary in the prompt makes loops likelier: measured, 68 of 444 finals of a soak took
# 107 s of the pool's 256 s).
BUSY_TEMPERATURES = (0.0,)


def live_token_budget(duration_s: float) -> int:
    """Whisper's new tokens for a live final of this length: ~3x the densest speech (Chinese, ~6 tokens/s)."""
    return min(220, 32 + int(20 * duration_s))


TASKS = ("transcribe", "translate")  # Whisper's own: write what was said, or say it in English
# A fitted window: the audio plus this margin, never shorter than FIT_MIN_FRAMES (100 frames a second). Shorter
# contexts than ~10 s cost Chinese accuracy on the eval speech; longer ones buy nothing measurable.
FIT_PAD_FRAMES = 300
FIT_MIN_FRAMES = 1000


def fitted(features: np.ndarray) -> np.ndarray:
    """The encoder's input cut to the frames that hold audio, plus the margin (padding frames are all zero)."""
    batch = features if features.ndim == 3 else features[None]
    held = np.flatnonzero(np.abs(batch[0]).max(axis=0) > 0)
    n = (int(held[-1]) + 1 if held.size else 0) + FIT_PAD_FRAMES
    n = min(batch.shape[-1], max(FIT_MIN_FRAMES, n))
    n += n % 2  # the encoder's convolution strides by two frames
    return np.ascontiguousarray(batch[..., :n])


def _whisper_class() -> type:
    from faster_whisper import WhisperModel

    class FittingWhisper(WhisperModel):
        """faster-whisper's model, whose encoder is given a fitted window while the calling thread asks for it
        (faster-whisper pads every window to 30 s just before encoding, for transcription and language
        detection alike; CTranslate2's encoder takes any length up to that)."""

        fit = threading.local()

        def encode(self, features: np.ndarray) -> Any:
            return super().encode(fitted(features) if getattr(self.fit, "on", False) else features)

    return FittingWhisper


def separator(language: str | None, task: str = "transcribe") -> str:
    """What joins a transcript's segments: nothing in a CJK script, else a space (a translation is English)."""
    return "" if task == "transcribe" and (language or "") in WIDE_LANGUAGES else " "


class AsrEngine:
    def __init__(self, settings: Settings, model_dir: Path) -> None:
        try:
            WhisperModel = _whisper_class()
        except ImportError as exc:  # pragma: no cover
            raise EngineUnavailable(f"faster-whisper is not installed: {exc}") from exc
        self.settings = settings
        self.model_dir = Path(model_dir)
        device = settings.asr_device
        compute_type = settings.asr_compute_type or ("int8" if device == "cpu" else "float16")
        t0 = time.perf_counter()
        # local_files_only: a path is never looked up on a hub.
        self.model = WhisperModel(
            str(self.model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=settings.asr_threads,
            num_workers=1,
            local_files_only=True,
        )
        self.load_s = time.perf_counter() - t0
        self.device, self.compute_type = device, compute_type
        self._opencc: Any = None
        self._not_english: list[int] | None = None

    def not_english(self) -> list[int]:
        """Token ids a translation into English never needs: those with a Chinese character, or a lone byte of
        a multi-byte character. When Whisper base is unsure of a translation its temperature fallback samples, and
        a sample could carry on in the source language; suppressed, the output stays English."""
        if self._not_english is None:
            from knowledge.text import CJK

            tokenizer = self.model.hf_tokenizer
            texts = tokenizer.decode_batch([[i] for i in range(tokenizer.get_vocab_size())])
            pattern = re.compile(f"[{CJK}\ufffd]")
            self._not_english = [i for i, text in enumerate(texts) if pattern.search(text)]
        return self._not_english

    @staticmethod
    def decode(path: Path) -> np.ndarray:
        from faster_whisper.audio import decode_audio

        try:
            audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad input
            raise AudioUnreadable(f"cannot decode audio: {type(exc).__name__}", {"error": type(exc).__name__}) from None
        if audio is None or audio.size == 0:
            raise AudioUnreadable("the file holds no audio samples", {})
        return audio

    def plan_pieces(self, audio: np.ndarray, max_piece_s: float) -> list[tuple[int, int]]:
        """Cut long audio at VAD silences into pieces of at most ~max_piece_s, as (start, end) sample ranges
        of the original audio: transcribed apart, their timestamps shift back by the piece's start."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        # max_speech_duration_s splits a long stretch of speech at its shortest pauses (or hard, if none).
        regions = get_speech_timestamps(
            audio, VadOptions(min_silence_duration_ms=300, speech_pad_ms=200, max_speech_duration_s=max_piece_s)
        )
        limit = int(max_piece_s * SAMPLE_RATE)
        pieces: list[tuple[int, int]] = []
        for r in regions:
            if pieces and r["end"] - pieces[-1][0] <= limit:
                pieces[-1] = (pieces[-1][0], r["end"])  # the silence between stays inside the piece
            else:
                pieces.append((r["start"], r["end"]))
        return pieces

    def detect_language(self, audio: np.ndarray, fit_window: bool = False) -> tuple[str, float]:
        """One language for every piece of a long recording, from its first 30 s of speech."""
        with self._window(fit_window):
            language, probability, _all = self.model.detect_language(audio[: 30 * SAMPLE_RATE], vad_filter=True)
        return language, round(float(probability), 4)

    @contextlib.contextmanager
    def _window(self, fit: bool) -> Iterator[None]:
        holder = type(self.model).fit
        before = getattr(holder, "on", False)
        holder.on = fit
        try:
            yield
        finally:
            holder.on = before

    def check_audio(self, audio: np.ndarray) -> float:
        """The audio's duration, or the typed error for audio that is empty, too long or not finite."""
        duration = float(audio.shape[0]) / SAMPLE_RATE
        if duration <= 0.05:
            raise EmptyInput("the audio is too short to transcribe", {"duration_s": duration})
        if duration > self.settings.asr_max_duration_s:
            raise AudioTooLong(
                f"audio of {duration:.0f}s exceeds the limit of {self.settings.asr_max_duration_s:.0f}s",
                {"duration_s": round(duration, 2), "max_s": self.settings.asr_max_duration_s},
            )
        if not np.isfinite(audio).all():
            raise AudioUnreadable("the audio holds non-finite samples", {})
        return duration

    def _script(self, language: str | None) -> Callable[[str], str]:
        """Chinese text in the configured script (OpenCC); other languages as they are."""
        want = self.settings.asr_zh_script
        if not want or not (language or "").startswith("zh"):
            return lambda text: text
        if self._opencc is None:
            import opencc

            self._opencc = opencc.OpenCC("t2s" if want == "simplified" else "s2t")
        return self._opencc.convert

    def transcribe(
        self,
        audio: np.ndarray | Path | str,
        language: str | None = None,
        initial_prompt: str | None = None,
        hotwords: str | None = None,
        beam_size: int | None = None,
        vad_filter: bool | None = None,
        word_timestamps: bool = False,
        task: str = "transcribe",
        on_segment: Callable[[dict[str, Any], str | None], None] | None = None,
        quick: bool = False,
        fit_window: bool = False,
        bounded: bool = False,
        busy: bool = False,
    ) -> dict[str, Any]:
        if task not in TASKS:
            raise InputError(f"task must be one of {', '.join(TASKS)}", {"field": "task"})
        s = self.settings
        t0 = time.perf_counter()
        if not isinstance(audio, np.ndarray):
            audio = self.decode(Path(audio))
        t_decoded = time.perf_counter()
        duration = self.check_audio(audio)
        with self._window(fit_window):  # language detection and decoding both happen in here
            segments_iter, info = self.model.transcribe(
                audio,
                language=language or s.asr_language or None,
                beam_size=beam_size or s.asr_beam_size,
                vad_filter=s.asr_vad_filter if vad_filter is None else vad_filter,
                initial_prompt=initial_prompt if initial_prompt is not None else s.asr_initial_prompt,
                hotwords=hotwords if hotwords is not None else s.asr_hotwords,
                condition_on_previous_text=False,
                word_timestamps=word_timestamps,
                task=task,
                **({"suppress_tokens": [-1, *self.not_english()]} if task == "translate" else {}),
                **(QUICK if quick else {}),
                **(
                    {
                        "temperature": BUSY_TEMPERATURES if busy else LIVE_TEMPERATURES,
                        "max_new_tokens": live_token_budget(duration),
                    }
                    if bounded and not quick
                    else {}
                ),
            )
            segments = []
            # A translation is English whatever was spoken: no script conversion, words joined by spaces.
            script = self._script(info.language if task == "transcribe" else None)
            for seg in segments_iter:  # the generator does the decoding work
                out: dict[str, Any] = {
                    "start": round(seg.start, 3),
                    "end": round(seg.end, 3),
                    "text": script(seg.text.strip()),
                    "avg_logprob": round(seg.avg_logprob, 4),
                    "no_speech_prob": round(seg.no_speech_prob, 4),
                }
                if word_timestamps:
                    out["words"] = [
                        {
                            "word": script(w.word.strip()),
                            "start": round(float(w.start), 3),
                            "end": round(float(w.end), 3),
                            "probability": round(float(w.probability), 4),
                        }
                        for w in seg.words or []
                        if w.word.strip()
                    ]
                segments.append(out)
                if on_segment is not None:
                    on_segment(out, info.language)
        t_done = time.perf_counter()
        sep = separator(info.language, task)
        text = sep.join(seg["text"] for seg in segments if seg["text"]).strip()
        transcribe_s = t_done - t_decoded
        result = {
            "text": text,
            "language": info.language,
            "language_probability": round(float(info.language_probability or 0.0), 4),
            "duration_s": round(duration, 3),
            "segments": segments,
            "timings": {
                "decode_s": round(t_decoded - t0, 4),
                "transcribe_s": round(transcribe_s, 4),
                "total_s": round(t_done - t0, 4),
                "rtf": round(transcribe_s / duration, 4),
            },
        }
        if word_timestamps:
            result["words"] = [w for seg in segments for w in seg["words"]]
        return result


@engines.register("asr", pool="asr")
def load(settings: Settings) -> AsrEngine:
    from workers.core.refs import force_offline

    force_offline()
    from workers.modelfiles import resolve_asr

    return AsrEngine(settings, resolve_asr(settings))
