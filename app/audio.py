"""API-side audio checks for an uploaded consultation turn: decode it before anything is stored.

The upload is decoded with PyAV (the same FFmpeg demuxers and decoders the ASR worker uses through
faster-whisper), never with a model library. The demuxer is chosen from the file extension and forced,
so FFmpeg never probes its way into a playlist/concat/image demuxer from untrusted bytes. Every way an
upload can be wrong maps to a typed error (workers/core/errors.py) with a 4xx status and a clear reason:

- nothing uploaded / no samples / shorter than `consult_min_audio_s` → 422 `empty_input`
- more bytes than `consult_max_audio_bytes` → 413 `input_too_large`
- longer than `consult_max_audio_s` → 413 `audio_too_long` (decoding stops at the limit)
- an extension outside `consult_audio_formats` → 415 `unsupported_format`
- bytes that do not decode as the format the extension names (corrupt, text named .wav) → 422 `audio_unreadable`
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePath

from workers.core.errors import AudioTooLong, AudioUnreadable, EmptyInput, InputError, InputTooLarge
from workers.core.settings import Settings

# extension → the FFmpeg demuxer that must read it
DEMUXERS = {
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "oga": "ogg",
    "opus": "ogg",
    "mp3": "mp3",
    "m4a": "mov",
    "webm": "matroska",
}


class UnsupportedAudioFormat(InputError):
    code = "unsupported_format"
    http_status = 415


@dataclass(frozen=True)
class AudioInfo:
    extension: str
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float
    bytes: int


def allowed_extensions(settings: Settings) -> list[str]:
    exts = [e.strip().lower().lstrip(".") for e in settings.consult_audio_formats.split(",") if e.strip()]
    return [e for e in exts if e in DEMUXERS]


def extension_of(filename: str | None, settings: Settings) -> str:
    allowed = allowed_extensions(settings)
    name = PurePath(filename or "").name
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in allowed:
        raise UnsupportedAudioFormat(
            f"unsupported audio format {('.' + ext) if ext else '(no extension)'}; send one of: "
            + ", ".join("." + e for e in allowed),
            {"extension": ext, "allowed": allowed},
        )
    return ext


def validate_audio(data: bytes, filename: str | None, settings: Settings) -> AudioInfo:
    """Decode the whole upload (up to the duration limit) and describe it; raise a typed 4xx error otherwise."""
    ext = extension_of(filename, settings)
    if not data:
        raise EmptyInput("the uploaded file is empty", {"bytes": 0})
    if len(data) > settings.consult_max_audio_bytes:
        raise InputTooLarge(
            f"audio of {len(data)} bytes exceeds the limit of {settings.consult_max_audio_bytes}",
            {"bytes": len(data), "max_bytes": settings.consult_max_audio_bytes},
        )
    import av  # PyAV: FFmpeg bindings, no model library

    demuxer = DEMUXERS[ext]
    max_s = settings.consult_max_audio_s
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioUnreadable(f"the .{ext} file holds no audio stream", {"extension": ext})
            stream = streams[0]
            samples = 0
            rate = 0
            channels = 0
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                channels = getattr(frame.layout, "nb_channels", 0) or len(frame.layout.channels)
                samples += frame.samples
                if rate and samples / rate > max_s:
                    raise AudioTooLong(f"audio longer than the limit of {max_s:.0f}s", {"max_s": max_s})
            codec = stream.codec_context.name
            declared_rate = stream.codec_context.sample_rate or 0
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg reports bad data through many exception types
        raise AudioUnreadable(
            f"the file does not decode as .{ext} audio ({type(exc).__name__})",
            {"extension": ext, "error": type(exc).__name__},
        ) from None
    duration = samples / rate if rate else 0.0
    if samples == 0 and not declared_rate:
        # Not a well-formed stream of this format holding zero samples: bytes the demuxer cannot use.
        raise AudioUnreadable(f"the file does not decode as .{ext} audio", {"extension": ext})
    if samples == 0 or duration < settings.consult_min_audio_s:
        raise EmptyInput(
            f"the audio holds {duration:.2f}s of samples, less than {settings.consult_min_audio_s}s",
            {"duration_s": round(duration, 3)},
        )
    return AudioInfo(
        extension=ext,
        container=demuxer,
        codec=codec,
        sample_rate=rate,
        channels=channels,
        duration_s=round(duration, 3),
        bytes=len(data),
    )
