"""TTS engine: the voices this pool speaks with, and the choice of a voice for each sentence by its language.

Voices (workers/engines/voices/): the English one is set by settings.tts_backend, Piper's en_US joe (an
optional GPL extra) or the deployer's Coqui model (language tts_coqui_language); the Mandarin one is the
shipped Baker voice (tts_baker_voice). A sentence goes to the voice asked for by id, else to the default
voice of its language (given, or detected from its script); the deployer's Coqui model comes first for its
language. A language no voice speaks is `NoVoiceForLanguage`, never another language's voice.

Every clip comes out at settings.tts_output_rate (soxr), so a reply that mixes voices joins without
resampling and live clients get the rate they expect. `speed` (default settings.tts_speed = 1.3, the Baker
voice tts_baker_speed) speeds speech up; `write_wav` stores 16-bit PCM WAV (soundfile).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from knowledge.files import atomic_path
from workers import engines
from workers.core.errors import EmptyInput, EngineFailure, InputError, NoVoiceForLanguage, UnknownVoice
from workers.core.settings import Settings
from workers.engines.voices.languages import canonical, detect

log = logging.getLogger("medvoice.engines.tts")

_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^\s*[-*•]\s+|\[(\d+)\])", re.M)


def speakable(text: str) -> str:
    """Text as it should be read aloud: markdown marks and citation brackets removed, spaces collapsed."""
    text = _MARKDOWN.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


class Voice(Protocol):
    id: str
    language: str
    backend: str
    license: str
    sample_rate: int
    load_s: float

    def synthesize(self, text: str, speed: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Speech:
    """One sentence spoken: audio at the engine's output rate, and who spoke it in which language."""

    wav: np.ndarray
    voice: str
    language: str
    backend: str
    timings: dict[str, Any]


class TtsEngine:
    """The pool's voices plus the shared parts: voice choice, text checks, timing, resampling, WAV output."""

    def __init__(self, settings: Settings, voices: list[Voice]) -> None:
        if not voices:
            raise InputError("a tts engine needs at least one voice")
        self.settings = settings
        self.voices: dict[str, Voice] = {v.id: v for v in voices}
        self.defaults: dict[str, str] = {}
        for v in voices:  # the first voice of a language is its default
            self.defaults.setdefault(v.language, v.id)
        self.backend = voices[0]  # the configured backend's voice (tts_backend)
        self.sample_rate = int(settings.tts_output_rate)
        self.load_s = sum(v.load_s for v in voices)

    @property
    def name(self) -> str:
        return self.backend.backend

    def list_voices(self) -> list[dict[str, Any]]:
        return [
            {
                "id": v.id,
                "language": v.language,
                "backend": v.backend,
                "sample_rate": self.sample_rate,
                "license": v.license,
                "default": self.defaults.get(v.language) == v.id,
            }
            for v in self.voices.values()
        ]

    def choose(self, text: str, voice: str | None = None, language: str | None = None) -> tuple[Voice, str]:
        """The voice for `text`: the one named, else the default of its language (given or detected)."""
        if voice is not None:
            chosen = self.voices.get(voice)
            if chosen is None:
                raise UnknownVoice(
                    f"unknown voice {voice!r}; this pool speaks with: {', '.join(self.voices)}",
                    {"voice": voice, "voices": list(self.voices)},
                )
            return chosen, chosen.language
        lang = canonical(language) if language else detect(text)
        vid = self.defaults.get(lang)
        if vid is None:
            raise NoVoiceForLanguage(
                f"no voice here speaks {lang!r} (voices: {', '.join(f'{k} {v}' for k, v in self.defaults.items())})",
                {"language": lang, "languages": sorted(self.defaults)},
            )
        return self.voices[vid], lang

    def speak(
        self, text: str, speed: float | None = None, voice: str | None = None, language: str | None = None
    ) -> Speech:
        clean = speakable(text)
        if not any(ch.isalnum() for ch in clean):
            raise EmptyInput("nothing to speak in this text", {"chars": len(text)})
        chosen, lang = self.choose(clean, voice=voice, language=language)
        if speed is None:
            speed = self.settings.tts_baker_speed if chosen.backend == "baker" else self.settings.tts_speed
        speed = float(speed)
        t0 = time.perf_counter()
        try:
            wav = chosen.synthesize(clean, speed)
            if wav.size and chosen.sample_rate != self.sample_rate:
                import soxr

                wav = soxr.resample(wav, chosen.sample_rate, self.sample_rate).astype(np.float32)
        except Exception as exc:  # a model failure on one sentence must not kill the worker
            raise EngineFailure(
                f"{chosen.backend} synthesis failed: {type(exc).__name__}", {"backend": chosen.backend}
            ) from exc
        if not wav.size:
            raise EmptyInput(f"nothing the {chosen.id} voice can read in this text", {"voice": chosen.id})
        synth_s = time.perf_counter() - t0
        duration = wav.shape[0] / self.sample_rate
        peak = float(np.max(np.abs(wav)))
        if peak > 1.0:
            wav = wav / peak
        timings = {"synth_s": round(synth_s, 4), "audio_s": round(duration, 4), "rtf": round(synth_s / duration, 4)}
        return Speech(wav=wav, voice=chosen.id, language=lang, backend=chosen.backend, timings=timings)

    def synthesize(
        self, text: str, speed: float | None = None, voice: str | None = None, language: str | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """(audio at the output rate, timings): `speak` without the voice's name."""
        out = self.speak(text, speed=speed, voice=voice, language=language)
        return out.wav, out.timings

    def write_wav(self, wav: np.ndarray, path: Path) -> None:
        import soundfile as sf

        with atomic_path(path) as tmp:  # a reader never sees half a clip
            sf.write(str(tmp), wav, self.sample_rate, subtype="PCM_16", format="WAV")


def build(settings: Settings) -> TtsEngine:
    from workers import modelfiles

    voices: list[Voice] = []
    if settings.tts_backend == "piper":
        from workers.engines.voices.piper import PiperVoice

        onnx, config = modelfiles.resolve_piper(settings)
        shipped = settings.tts_piper_voice_path is None  # the manifest's en_US joe voice (MIT)
        voices.append(
            PiperVoice(
                settings, onnx, config, voice_id="joe" if shipped else None, voice_license="MIT" if shipped else None
            )
        )
    else:
        from workers.engines.voices.coqui import CoquiVoice

        model, config = modelfiles.resolve_coqui(settings)
        voices.append(CoquiVoice(settings, model, config))
    if settings.tts_baker_voice:
        from workers.engines.voices.baker import BakerVoice

        fastspeech2, vocoder, mapper = modelfiles.resolve_baker(settings)
        voices.append(BakerVoice(settings, fastspeech2, vocoder, mapper))
    return TtsEngine(settings, voices)


@engines.register("tts", pool="tts")
def load(settings: Settings) -> TtsEngine:
    from workers.core.refs import force_offline

    force_offline()
    return build(settings)
