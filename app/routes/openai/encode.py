"""Speech as OpenAI's `response_format`s, with PyAV: mp3, opus (Ogg), aac (ADTS), flac, wav, pcm.

Every format is made from 16-bit mono PCM at 24 kHz (OpenAI's `pcm` is exactly that, without a header; opus is
resampled to 48 kHz, the rate Opus runs at). An `Encoder` takes the audio a sentence at a time and gives back
the bytes ready so far, so speech streams while later sentences are still being synthesized; containers that
only work seekable are not used (a streamed WAV has the "unknown length" header, as OpenAI streams it).
Only PyAV and numpy: no model library.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

RATE = 24000  # OpenAI's pcm, and every clip here


@dataclass(frozen=True)
class Format:
    container: str | None  # PyAV's muxer; None: written here (pcm, wav)
    codec: str | None
    media_type: str
    rate: int = RATE
    bit_rate: int | None = None
    options: tuple[tuple[str, str], ...] = ()  # the muxer's


FORMATS = {
    "mp3": Format("mp3", "libmp3lame", "audio/mpeg", bit_rate=64_000),
    # Ogg holds a page back for up to a second by default: short pages let each sentence go out as it is ready.
    "opus": Format("ogg", "libopus", "audio/ogg", rate=48000, bit_rate=32_000, options=(("page_duration", "20000"),)),
    "aac": Format("adts", "aac", "audio/aac", bit_rate=64_000),
    "flac": Format("flac", "flac", "audio/flac"),
    "wav": Format(None, None, "audio/wav"),
    "pcm": Format(None, None, "audio/pcm"),
}


def decode_pcm(data: bytes, rate: int = RATE) -> np.ndarray:
    """An audio file (a clip's WAV) → 16-bit mono samples at `rate` (PyAV's resampler)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    parts: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype("<i2") if parts else np.zeros(0, dtype="<i2")


def wav_header(samples: int | None, rate: int = RATE) -> bytes:
    """A 16-bit mono WAV header; `samples` None: the length is unknown (a stream), sizes set to the maximum."""
    data = 0xFFFFFFFF if samples is None else samples * 2
    riff = 0xFFFFFFFF if samples is None else 36 + data
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


class _Sink:
    """What PyAV writes the container into; `take` hands over what was written since the last take."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class Encoder:
    """feed(samples) → the bytes ready so far; close() → the rest. Samples: int16 mono at 24 kHz."""

    def __init__(self, response_format: str, stream: bool = False) -> None:
        self.format = FORMATS[response_format]
        self.name = response_format
        self._stream = stream
        self._header_sent = False
        self._held: list[np.ndarray] = []  # a whole (not streamed) WAV needs its length first
        if self.format.container is None:
            return
        import av

        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=self.format.container, options=dict(self.format.options))
        out = self._container.add_stream(self.format.codec, rate=self.format.rate, layout="mono")
        if self.format.bit_rate:
            out.bit_rate = self.format.bit_rate
        self._out = out
        self._codec_format = out.codec_context.codec.audio_formats[0].name
        self._resampler = av.AudioResampler(format=self._codec_format, layout="mono", rate=self.format.rate)
        self._fifo = av.AudioFifo()
        self._pts = 0

    def feed(self, samples: np.ndarray) -> bytes:
        samples = np.asarray(samples, dtype="<i2").reshape(-1)
        if self.name == "pcm":
            return samples.tobytes()
        if self.name == "wav":
            if not self._stream:
                self._held.append(samples)
                return b""
            head = b"" if self._header_sent else wav_header(None)
            self._header_sent = True
            return head + samples.tobytes()
        import av

        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            for resampled in self._resampler.resample(frame):
                self._fifo.write(resampled)
        self._drain(final=False)
        return self._sink.take()

    def _drain(self, final: bool) -> None:
        size = self._out.codec_context.frame_size or 1024
        while self._fifo.samples >= size or (final and self._fifo.samples):
            frame = self._fifo.read(min(size, self._fifo.samples))
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._out.encode(frame):
                self._container.mux(packet)

    def close(self) -> bytes:
        if self.name == "pcm":
            return b""
        if self.name == "wav":
            if self._stream:
                return b"" if self._header_sent else wav_header(None)
            samples = np.concatenate(self._held) if self._held else np.zeros(0, dtype="<i2")
            return wav_header(samples.size) + samples.tobytes()
        for resampled in self._resampler.resample(None):
            self._fifo.write(resampled)
        self._drain(final=True)
        for packet in self._out.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def encode(samples: np.ndarray, response_format: str) -> bytes:
    """The whole speech in one response_format."""
    encoder = Encoder(response_format)
    return encoder.feed(samples) + encoder.close()
