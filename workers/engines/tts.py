"""TTS engine: Coqui TTS from local files, or Piper (an optional GPL extra) — chosen by settings.tts_backend.

Both return float32 mono audio and its sample rate; `write_wav` stores 16-bit PCM WAV (soundfile).
`speed` (default settings.tts_speed = 1.3) speeds speech up: Coqui models with a duration predictor
(VITS, Glow-TTS) get `length_scale / speed`, XTTS gets its `speed` argument, and any other model's
output is time-stretched; Piper gets `length_scale = 1 / speed`.

No Coqui voice ships offline: the coqui backend loads `TTS(model_path=..., config_path=...)` from the
deployer's files (MEDVOICE_TTS_MODEL_PATH / MEDVOICE_TTS_CONFIG_PATH); tests build a tiny random VITS.
`TTS` and `piper` are imported only when the engine is built, in a worker process.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.files import atomic_path
from workers import engines
from workers.core.errors import EmptyInput, EngineFailure, EngineUnavailable, ModelFileMissing
from workers.core.settings import Settings

log = logging.getLogger("medvoice.engines.tts")

_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^\s*[-*•]\s+|\[(\d+)\])", re.M)


def speakable(text: str) -> str:
    """Text as it should be read aloud: markdown marks and citation brackets removed, spaces collapsed."""
    text = _MARKDOWN.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


class CoquiEngine:
    backend = "coqui"

    def __init__(self, settings: Settings, model_path: Path, config_path: Path) -> None:
        try:
            import torch
            from TTS.api import TTS
        except (ImportError, OSError) as exc:  # OSError: the torchaudio CUDA trap (workers/install_fixups.py)
            raise EngineUnavailable(f"coqui-tts cannot be imported: {exc}") from exc
        torch.set_num_threads(settings.tts_threads)
        self.settings = settings
        t0 = time.perf_counter()
        vocoder = settings.tts_vocoder_path
        vocoder_config = settings.tts_vocoder_config_path
        for p in (vocoder, vocoder_config):
            if p is not None and not Path(p).exists():
                raise ModelFileMissing(f"Coqui vocoder file not found: {p}", {"path": str(p)})
        self.tts = TTS(
            model_path=str(model_path),
            config_path=str(config_path),
            progress_bar=False,
            gpu=False,
            vocoder_path=str(vocoder) if vocoder else None,
            vocoder_config_path=str(vocoder_config) if vocoder_config else None,
        )
        self.load_s = time.perf_counter() - t0
        self.model = self.tts.synthesizer.tts_model
        self.sample_rate = int(self.tts.synthesizer.output_sample_rate)
        self._base_length_scale = getattr(self.model, "length_scale", None)
        # VITS reads its sampling noise from these attributes at inference; other models have none.
        for attr, value in (
            ("inference_noise_scale", settings.tts_noise_scale),
            ("inference_noise_scale_dp", settings.tts_noise_w_scale),
        ):
            if value is not None and hasattr(self.model, attr):
                setattr(self.model, attr, float(value))
        self.speakers = list(getattr(self.tts, "speakers", None) or [])
        self.languages = list(getattr(self.tts, "languages", None) or [])
        self.model_path, self.config_path = Path(model_path), Path(config_path)

    def synthesize(self, text: str, speed: float) -> np.ndarray:
        import torch

        kwargs: dict[str, Any] = {"split_sentences": False}
        if self.speakers:
            kwargs["speaker"] = self.speakers[0]
        if self.languages:
            kwargs["language"] = self.languages[0]
        stretch = False
        if self._base_length_scale is not None:
            self.model.length_scale = float(self._base_length_scale) / speed
        elif type(self.model).__name__ == "Xtts":
            kwargs["speed"] = speed
        else:
            stretch = abs(speed - 1.0) > 1e-3
        with torch.inference_mode():
            wav = np.asarray(self.tts.tts(text=text, **kwargs), dtype=np.float32)
        if stretch and wav.size:
            import librosa

            wav = librosa.effects.time_stretch(wav, rate=speed).astype(np.float32)
        return wav


class PiperEngine:
    backend = "piper"

    def __init__(self, settings: Settings, onnx_path: Path, config_path: Path) -> None:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise EngineUnavailable(
                "tts_backend=piper needs the optional GPL extra: pip install 'medvoice[piper]'"
            ) from exc
        self.settings = settings
        t0 = time.perf_counter()
        download_dir = settings.model_root / "piper"
        self.voice = PiperVoice.load(onnx_path, config_path=config_path, use_cuda=False, download_dir=download_dir)
        phoneme_type = str(getattr(self.voice.config.phoneme_type, "value", self.voice.config.phoneme_type))
        if phoneme_type == "pinyin" and not (download_dir / "g2pW").exists():
            # Piper would download its Chinese g2pW model on first use: never here.
            raise ModelFileMissing(
                f"this Piper voice needs the g2pW model at {download_dir / 'g2pW'}",
                {"path": str(download_dir / "g2pW")},
            )
        self.load_s = time.perf_counter() - t0
        self.sample_rate = int(self.voice.config.sample_rate)
        self.model_path, self.config_path = Path(onnx_path), Path(config_path)

    def synthesize(self, text: str, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(
            length_scale=1.0 / speed,
            noise_scale=self.settings.tts_noise_scale,
            noise_w_scale=self.settings.tts_noise_w_scale,
        )
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)


class TtsEngine:
    """The configured backend plus the shared parts: text checks, timing, WAV output."""

    def __init__(self, settings: Settings, backend: CoquiEngine | PiperEngine) -> None:
        self.settings = settings
        self.backend = backend
        self.sample_rate = backend.sample_rate
        self.load_s = backend.load_s

    @property
    def name(self) -> str:
        return self.backend.backend

    def synthesize(self, text: str, speed: float | None = None) -> tuple[np.ndarray, dict[str, float]]:
        clean = speakable(text)
        if not any(ch.isalnum() for ch in clean):
            raise EmptyInput("nothing to speak in this text", {"chars": len(text)})
        speed = float(speed or self.settings.tts_speed)
        t0 = time.perf_counter()
        try:
            wav = self.backend.synthesize(clean, speed)
        except Exception as exc:  # a model failure on one sentence must not kill the worker
            raise EngineFailure(f"{self.name} synthesis failed: {type(exc).__name__}", {"backend": self.name}) from exc
        synth_s = time.perf_counter() - t0
        duration = wav.shape[0] / self.sample_rate if wav.size else 0.0
        if wav.size:
            peak = float(np.max(np.abs(wav)))
            if peak > 1.0:
                wav = wav / peak
        return wav, {
            "synth_s": round(synth_s, 4),
            "audio_s": round(duration, 4),
            "rtf": round(synth_s / duration, 4) if duration else None,
        }

    def write_wav(self, wav: np.ndarray, path: Path) -> None:
        import soundfile as sf

        with atomic_path(path) as tmp:  # a reader never sees half a clip
            sf.write(str(tmp), wav, self.sample_rate, subtype="PCM_16", format="WAV")


def build(settings: Settings) -> TtsEngine:
    from workers.modelfiles import resolve_coqui, resolve_piper

    if settings.tts_backend == "piper":
        onnx, config = resolve_piper(settings)
        return TtsEngine(settings, PiperEngine(settings, onnx, config))
    model, config = resolve_coqui(settings)
    return TtsEngine(settings, CoquiEngine(settings, model, config))


@engines.register("tts", pool="tts")
def load(settings: Settings) -> TtsEngine:
    from workers.core.refs import force_offline

    force_offline()
    return build(settings)
