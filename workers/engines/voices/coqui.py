"""A deployer's own Coqui TTS model, loaded with `TTS(model_path=..., config_path=...)` from local files.

No Coqui voice ships offline (tests build a tiny random VITS). The model's language is the setting
tts_coqui_language. `speed`: models with a duration predictor (VITS, Glow-TTS) get `length_scale / speed`,
XTTS gets its `speed` argument, any other model's output is time-stretched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.core.errors import EngineUnavailable, ModelFileMissing
from workers.core.settings import Settings
from workers.engines.voices.languages import canonical


class CoquiVoice:
    backend = "coqui"
    license = "coqui-tts: MPL-2.0; model: the deployer's"

    def __init__(self, settings: Settings, model_path: Path, config_path: Path, voice_id: str = "coqui") -> None:
        try:
            import torch
            from TTS.api import TTS
        except (ImportError, OSError) as exc:  # OSError: the torchaudio CUDA trap (workers/install_fixups.py)
            raise EngineUnavailable(f"coqui-tts cannot be imported: {exc}") from exc
        torch.set_num_threads(settings.tts_threads)
        self.id = voice_id
        self.language = canonical(settings.tts_coqui_language)
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
            # A multilingual model (XTTS) is told the configured language when it knows it.
            known = [lang for lang in self.languages if canonical(lang) == self.language]
            kwargs["language"] = known[0] if known else self.languages[0]
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
