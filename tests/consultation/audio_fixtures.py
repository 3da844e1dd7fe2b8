"""Audio the consultation tests write themselves: tones and silence in several containers, and broken files."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def tone(seconds: float = 1.0, rate: int = 16000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def silence(seconds: float = 1.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(rate * seconds), dtype=np.int16), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def noise_bytes(n: int = 5000, seed: int = 0) -> bytes:
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


# name → (filename, bytes, expected status, expected code)
def bad_uploads(max_s: float) -> dict[str, tuple[str, bytes, int, str]]:
    wav = tone(1.0)
    return {
        "empty file": ("q.wav", b"", 422, "empty_input"),
        "zero samples": ("q.wav", tone(0.0), 422, "empty_input"),
        "text named .wav": ("q.wav", b"this is a note, not a recording\n" * 20, 422, "audio_unreadable"),
        "truncated wav header": ("q.wav", wav[:30], 422, "audio_unreadable"),
        "random bytes as .flac": ("q.flac", noise_bytes(), 422, "audio_unreadable"),
        "wav named .flac": ("q.flac", wav, 422, "audio_unreadable"),
        "unsupported extension": ("q.txt", b"hello", 415, "unsupported_format"),
        "no extension": ("recording", wav, 415, "unsupported_format"),
        "over-long audio": ("q.wav", tone(max_s + 1.0, rate=8000), 413, "audio_too_long"),
    }
