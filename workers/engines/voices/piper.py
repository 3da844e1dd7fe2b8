"""A Piper voice (piper-tts is GPL-3.0-or-later: the optional `piper` extra). The shipped one is en_US joe.

The ONNX session is built here rather than by `PiperVoice.load`: each sentence is a new input length, and with
onnxruntime's defaults the CPU arena grows to the longest sentence's activations and keeps them (and the memory
pattern plans a buffer set per length). Without the pattern and with the arena shrunk after each run the voice
holds ~140 MB less (measured on the shipped voice after ten sentences: 184 MB instead of 325 MB) for ~20 % of
its speed (RTF 0.029 instead of 0.024); without any arena it would be 50 % slower.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.core.errors import EngineUnavailable, ModelFileMissing
from workers.core.settings import Settings
from workers.engines.voices.languages import canonical


class _ShrinkingSession:
    """An onnxruntime session whose every run gives its CPU arena back afterwards (piper calls `run` without
    run options of its own)."""

    def __init__(self, session: Any, onnxruntime: Any) -> None:
        self.session = session
        self.run_options = onnxruntime.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        return self.session.run(output_names, feeds, run_options or self.run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


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
            import onnxruntime
            from piper import PiperConfig
            from piper import PiperVoice as _Piper
        except ImportError as exc:
            raise EngineUnavailable(
                "tts_backend=piper needs the optional GPL extra: pip install 'medvoice[piper]'"
            ) from exc
        self.settings = settings
        t0 = time.perf_counter()
        download_dir = settings.model_root / "piper"
        options = onnxruntime.SessionOptions()
        options.enable_mem_pattern = False
        session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        self.voice = _Piper(
            config=PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8"))),
            session=_ShrinkingSession(session, onnxruntime),  # type: ignore[arg-type]
            download_dir=Path(download_dir),
        )
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
