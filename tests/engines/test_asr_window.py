"""The fitted Whisper window: the encoder is given the audio plus a margin instead of a 30 s window of zero
frames. The cut itself, then the real model (skipped without its weights) on speech made at test time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers import modelfiles
from workers.core import errors
from workers.core.settings import Settings
from workers.engines.asr import FIT_MIN_FRAMES, FIT_PAD_FRAMES, fitted


def _window(voiced: int, frames: int = 3000) -> np.ndarray:
    f = np.zeros((1, 80, frames), dtype=np.float32)
    f[..., :voiced] = np.random.default_rng(0).uniform(0.1, 1.0, (1, 80, voiced))
    return f


def test_the_window_is_cut_to_the_audio_plus_the_margin() -> None:
    assert fitted(_window(1200)).shape == (1, 80, 1200 + FIT_PAD_FRAMES)
    assert fitted(_window(1201)).shape[-1] == 1201 + FIT_PAD_FRAMES + 1  # even: the encoder strides by two
    assert fitted(_window(100)).shape[-1] == FIT_MIN_FRAMES  # a short word still gets ~10 s of context
    assert fitted(_window(2900)).shape[-1] == 3000  # never longer than it was
    assert fitted(_window(0)).shape[-1] == FIT_MIN_FRAMES
    kept = _window(1500)
    assert np.array_equal(fitted(kept)[..., :1500], kept[..., :1500])  # the audio's frames are untouched
    assert fitted(kept[0]).shape == (1, 80, 1800)  # 2-D input (one window) is batched


class _Recorder:
    """The CTranslate2 model, with the lengths its encoder was given written down."""

    def __init__(self, model) -> None:
        self._model, self.frames = model, []

    def encode(self, features, **kw):
        self.frames.append(features.shape[-1])
        return self._model.encode(features, **kw)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _engine_and_speech(tmp_path: Path, espeak: list[str]) -> tuple:
    """The real Whisper engine (skipped without its weights) and espeak-ng's speech for `espeak` (its options
    and text), at 16 kHz."""
    s = Settings()
    try:
        model_dir = modelfiles.resolve_asr(s)
    except errors.ModelError as exc:
        pytest.skip(f"Whisper weights not prepared ({exc}); run `medvoice models prepare` (make test does)")
    from faster_whisper.audio import decode_audio

    from workers.engines.asr import AsrEngine

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), *espeak], check=True)
    return AsrEngine(s, model_dir), decode_audio(str(wav), sampling_rate=16000)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test speech")
def test_the_real_model_hears_the_same_with_a_fitted_window(tmp_path: Path) -> None:
    engine, audio = _engine_and_speech(tmp_path, ["-s", "150", "What is the dose of amoxicillin for a child?"])
    engine.model.model = rec = _Recorder(engine.model.model)

    full = engine.transcribe(audio, language="en", vad_filter=False)
    assert rec.frames and set(rec.frames) == {3000}
    rec.frames.clear()
    fit = engine.transcribe(audio, language="en", vad_filter=False, fit_window=True)
    assert rec.frames and max(rec.frames) < 3000
    rec.frames.clear()
    assert engine.detect_language(audio, fit_window=True)[0] == "en" and max(rec.frames) < 3000

    def words(r: dict) -> set[str]:
        return {w.strip(".,?!").lower() for w in r["text"].split()}

    assert {"dose", "child"} <= words(full) and len(words(fit) ^ words(full)) <= 2, (full["text"], fit["text"])
    rec.frames.clear()
    engine.transcribe(audio, language="en", vad_filter=False)  # the switch is per call, not left on
    assert set(rec.frames) == {3000}


class _Generations(_Recorder):
    """…and the decoding passes it ran (one per temperature tried)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.passes = 0

    def generate(self, *args, **kw):
        self.passes += 1
        return self._model.generate(*args, **kw)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test speech")
def test_a_busy_live_final_is_decoded_once(tmp_path: Path) -> None:
    """Sixteen times "la": at temperature 0 Whisper loops on it (its text repeats until the token budget), so a
    live final tries the fallback temperatures; while the live pool is behind (`busy`) it keeps its one pass."""
    engine, audio = _engine_and_speech(tmp_path, [" ".join(["la"] * 16)])
    engine.model.model = rec = _Generations(engine.model.model)
    options = {"language": "en", "vad_filter": False, "fit_window": True, "bounded": True}
    engine.transcribe(audio, **options)
    retried, rec.passes = rec.passes, 0
    engine.transcribe(audio, busy=True, **options)
    assert retried > 1 and rec.passes == 1, (retried, rec.passes)
