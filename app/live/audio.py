"""PCM16 frames from live clients: decoding, checks, and streaming resampling to Whisper's 16 kHz (soxr)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import soxr

from workers.core.errors import InputError

ASR_RATE = 16000  # what Whisper and the Silero VAD take


def from_base64(data: object) -> bytes:
    """The bytes of a base64 audio field; InputError for anything that is not valid base64 text."""
    if not isinstance(data, str):
        raise InputError("audio must be base64 text", {"field": "audio"})
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("audio is not valid base64", {"field": "audio"}) from None


def pcm16(raw: bytes) -> np.ndarray:
    """Little-endian PCM16 mono samples; odd-length input is an error (half a sample means a broken client)."""
    if len(raw) % 2:
        raise InputError("PCM16 audio needs an even number of bytes", {"bytes": len(raw)})
    return np.frombuffer(raw, dtype="<i2")


class Resampler:
    """A client's rate → 16 kHz, stateful across frames so frame edges leave no clicks."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = soxr.ResampleStream(rate, ASR_RATE, 1, dtype="int16") if rate != ASR_RATE else None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)


def to_rate(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A whole clip at another rate (reply audio for a client that wants 24 kHz)."""
    if rate == target:
        return samples
    return soxr.resample(samples, rate, target).astype(np.int16)


def wav_bytes(samples: np.ndarray, rate: int = ASR_RATE) -> bytes:
    """A 16-bit mono WAV of the samples: an utterance stored like an upload."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def read_wav(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(path, dtype="int16", always_2d=False)
    if samples.ndim > 1:
        samples = samples[:, 0]
    return samples, int(rate)
