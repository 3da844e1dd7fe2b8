"""A Piper voice (piper-tts is GPL-3.0-or-later: the optional `piper` extra). The shipped one is en_US joe."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from workers.core.errors import EngineUnavailable, ModelFileMissing
from workers.core.settings import Settings
from workers.engines.voices.languages import canonical


class PiperVoice:
    backend = "piper"

    def __init__(
        self,
        settings: Settings,
        onnx_path: Path,
        config_path: Path,
        voice_id: str | None = None,
        voice_license: str | None = None,
    ) -> None:
        try:
            from piper import PiperVoice as _Piper
        except ImportError as exc:
            raise EngineUnavailable(
                "tts_backend=piper needs the optional GPL extra: pip install 'medvoice[piper]'"
            ) from exc
        self.settings = settings
        t0 = time.perf_counter()
        download_dir = settings.model_root / "piper"
        self.voice = _Piper.load(onnx_path, config_path=config_path, use_cuda=False, download_dir=download_dir)
        config = self.voice.config
        phoneme_type = str(getattr(config.phoneme_type, "value", config.phoneme_type))
        if phoneme_type == "pinyin" and not (download_dir / "g2pW").exists():
            # Piper would download its Chinese g2pW model on first use: never here.
            raise ModelFileMissing(
                f"this Piper voice needs the g2pW model at {download_dir / 'g2pW'}",
                {"path": str(download_dir / "g2pW")},
            )
        self.load_s = time.perf_counter() - t0
        self.sample_rate = int(config.sample_rate)
        self.model_path, self.config_path = Path(onnx_path), Path(config_path)
        self.language = canonical(str(getattr(config, "espeak_voice", "") or "en"))
        if phoneme_type == "pinyin":
            self.language = "zh"
        self.id = voice_id or "piper"
        self.license = f"{voice_license or 'the voice: its model card'}; piper-tts: GPL-3.0-or-later"

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
