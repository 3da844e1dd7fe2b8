"""FunASR's WebSocket protocol (offline / online / 2pass) on the live streaming core: dictation for FunASR clients.

A connection opens with one JSON configuration (`mode`, `wav_name`, `wav_format`, `audio_fs`, `is_speaking`,
`hotwords`, `itn`, `svs_lang`, and FunASR's chunking fields, accepted and ignored: our partial cadence is
`live_partial_interval_s`), then binary PCM16 frames, then `{"is_speaking": false}` (newer clients add
`"is_end": true` and wait for the reply that carries it). Every reply carries `mode`, `wav_name`, `text` and
`is_final`; an error reply adds `error` (the reason) and `code` and still carries `text` and `mode`, because older
clients read `text` without a default.

- `offline`: audio is buffered (no VAD, no pacing check: files are sent as fast as the client can) and transcribed
  once after `is_speaking: false`; one `offline` reply. Audio longer than one Whisper window is cut at its quietest
  moments (Silero probabilities) and the pieces are transcribed side by side; audio with no speech at all is not
  sent to Whisper (it would invent a sentence) and gets an empty final.
- `online`: the session's VAD cuts utterances; `online` replies carry the newly stable words (LocalAgreement-2)
  while the speaker talks and, at each utterance's end, the rest of its final transcript: FunASR clients append
  each `text` they get.
- `2pass`: `2pass-online` replies as in `online`, and for every VAD utterance a `2pass-offline` reply with the
  utterance's final transcript, word timestamps and `stamp_sents` (clients replace the partial text with it).

`is_final` is true only on the last reply of the stream, after the client said `is_speaking: false`; when the last
utterance was already answered, an empty final with `is_final: true` follows. When the client sent `is_end`, a
`{"mode", "wav_name", "text": "", "is_final": true, "is_end": true}` closes the exchange. The connection may then
start again with a new configuration (or more audio under the previous one).

Timestamps are `"[[start_ms,end_ms],...]"` on the stream's clock, from faster-whisper's word timestamps: one pair
per English word and, as FunASR clients expect for Chinese, one per character (a word's span split evenly over its
characters, since Whisper times words, not characters). They are clipped to the audio received and never go back.
`stamp_sents` groups them into sentences at punctuation: `{text_seg, punc, start, end, ts_list}`.

`hotwords` is FunASR's JSON string `{"word": weight}`: words ranked by weight go first in Whisper's hotwords, then
the knowledge base's vocabulary (live.transcribe merges and bounds them). Hotwords that are not that JSON, or are
huge, get an error reply and the session goes on without them. `itn` is accepted and changes nothing: Whisper
writes numbers, dates and units the way it learned from written text (mostly digits: "500 mg"), which is what
FunASR's ITN produces; with `false` the text is still what Whisper wrote, since there is no spoken form to go back
to. `svs_lang` (`zh`, `en`, `yue`, `ja`, `ko`, `auto`) names the language; without it Whisper detects it per
utterance and partials follow the last detected one. Chinese comes back in the script `asr_zh_script` names
(Simplified by default). `wav_format` `pcm` streams; `wav` and other containers (mp3, flac, ogg, m4a/mp4, webm, or
`others`: recognised by their first bytes) are whole files, decoded with PyAV when input ends and answered with
one final.

Per-session state lives in the session objects: nothing here is shared between connections but the VAD model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app import task_client
from app.audio import DEMUXERS
from app.live.agreement import join, tokens
from app.live.audio import ASR_RATE
from app.live.backlog import BACKLOG, behind
from app.live.core import Listener, LiveAudio, Utterance, VadConfig
from app.live.vad import WINDOW, VadStream
from knowledge.text import CJK
from workers.core.errors import InputError, InputTooLarge, MedvoiceError
from workers.core.settings import Settings

log = logging.getLogger("medvoice.live.funasr")

MODES = {"offline": ("offline", "offline"), "online": ("online", "online"), "2pass": ("2pass-online", "2pass-offline")}
RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)  # what the resampler takes; FunASR names 8k, 16k
LANGUAGES = {"auto": None, "": None, "zh": "zh", "cn": "zh", "en": "en", "yue": "yue", "ja": "ja", "ko": "ko"}
CONTAINERS = {**DEMUXERS, "mp4": "mov", "aac": "aac"}
HOTWORDS_MAX_CHARS = 10_000  # FunASR's own clients send a few dozen words; more is a mistake, not a vocabulary
HOTWORDS_MAX = 100  # ranked words kept (live.transcribe keeps as many, then bounds them by characters)
FIRST_MESSAGE_TIMEOUT_S = 30.0  # a connection that never configures itself is closed
FINAL_TIMEOUT_S = 120.0  # finals are never dropped for load: they wait their turn on the live queue
_END_KEYS = {"is_speaking", "is_end"}  # what an end-of-input message holds
MIN_UTTERANCE_S = 0.1  # shorter audio holds no word (and live.transcribe refuses it)
# Close codes (RFC 6455): the reason travels in the close frame and in the error reply before it.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = 1000, 1008, 1003, 1009
_PUNCT_CHARS = ",.!?;:，。！？；：、…"
_SENTENCE_END = re.compile(rf"[{re.escape(_PUNCT_CHARS)}]+$")
_WIDE = re.compile(f"[{CJK}]")
_MAGIC = (  # container sniffing for wav_format "others": the demuxer is still forced, never probed
    (b"RIFF", "wav"),
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
    (b"ID3", "mp3"),
    (b"\x1a\x45\xdf\xa3", "matroska"),
)


class ProtocolError(Exception):
    """Bad input: `fatal` ends the connection with `close_code`; otherwise the session goes on."""

    def __init__(self, code: str, reason: str, fatal: bool = True, close_code: int = CLOSE_UNSUPPORTED) -> None:
        super().__init__(reason)
        self.code, self.reason, self.fatal, self.close_code = code, reason, fatal, close_code


class Connection(Protocol):
    """The transport (a Starlette WebSocket in app/routes/funasr.py)."""

    async def receive(self) -> str | bytes | None: ...  # None: the client went away

    async def send(self, message: dict[str, Any]) -> None: ...


# ---- configuration ---------------------------------------------------------------------------------------------
@dataclass
class Config:
    mode: str = "2pass"
    wav_name: str = "microphone"
    wav_format: str = "pcm"
    audio_fs: int = 16000
    language: str | None = None
    hotwords: list[str] = field(default_factory=list)
    itn: bool = True

    @property
    def online_label(self) -> str:
        return MODES[self.mode][0]

    @property
    def final_label(self) -> str:
        return MODES[self.mode][1]

    @property
    def container(self) -> bool:
        return self.wav_format != "pcm"


def _flag(message: dict[str, Any], key: str, default: bool) -> bool:
    value = message.get(key, default)
    if isinstance(value, bool):
        return value
    if value in (0, 1):  # older clients send 0/1
        return bool(value)
    raise ProtocolError("invalid_field", f"{key} must be true or false")


def parse_hotwords(value: Any) -> list[str]:
    """FunASR's `{"word": weight}` (a JSON string, or the object itself) → words, heaviest first; ProtocolError
    (not fatal) for anything else."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        if len(value) > HOTWORDS_MAX_CHARS:
            raise ProtocolError(
                "hotwords_too_large", f"hotwords longer than {HOTWORDS_MAX_CHARS} characters were ignored", fatal=False
            )
        try:
            value = json.loads(value)
        except ValueError:
            raise ProtocolError(
                "invalid_hotwords", 'hotwords must be a JSON object {"word": weight}; they were ignored', fatal=False
            ) from None
    if not isinstance(value, dict):
        raise ProtocolError(
            "invalid_hotwords", 'hotwords must be a JSON object {"word": weight}; they were ignored', fatal=False
        )
    if len(json.dumps(value, ensure_ascii=False)) > HOTWORDS_MAX_CHARS:
        raise ProtocolError(
            "hotwords_too_large", f"hotwords longer than {HOTWORDS_MAX_CHARS} characters were ignored", fatal=False
        )
    ranked: list[tuple[float, int, str]] = []
    for i, (word, weight) in enumerate(value.items()):
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ProtocolError(
                "invalid_hotwords", f"the weight of hotword {i + 1} is not a number; hotwords were ignored", fatal=False
            )
        word = str(word).strip()
        if word:
            ranked.append((-float(weight), i, word))
    ranked.sort()  # heaviest first; equal weights keep the client's order
    return [w for _, _, w in ranked][:HOTWORDS_MAX]


def parse_config(message: dict[str, Any], previous: Config | None = None) -> tuple[Config, list[ProtocolError]]:
    """The configuration a JSON message sets (over the previous one's); fatal ProtocolError when it cannot be
    served, and the non-fatal problems (hotwords) to report."""
    cfg = Config(**{**previous.__dict__, "hotwords": list(previous.hotwords)}) if previous else Config()
    problems: list[ProtocolError] = []
    if "mode" in message:
        mode = message["mode"]
        if mode not in MODES:
            raise ProtocolError("unknown_mode", f"unknown mode {str(mode)[:40]!r}: use offline, online or 2pass")
        cfg.mode = mode
    if "wav_name" in message:
        if not isinstance(message["wav_name"], str | int):
            raise ProtocolError("invalid_field", "wav_name must be text")
        cfg.wav_name = str(message["wav_name"])[:256]
    if "wav_format" in message:
        fmt = str(message["wav_format"] or "pcm").lower().lstrip(".")
        if fmt != "pcm" and fmt != "others" and fmt not in CONTAINERS:
            raise ProtocolError("unsupported_format", f"unsupported wav_format {fmt[:20]!r}: send pcm, wav, or a file")
        cfg.wav_format = fmt
    if "audio_fs" in message:
        fs = message["audio_fs"]
        if isinstance(fs, bool) or not isinstance(fs, int) or fs not in RATES:
            raise ProtocolError(
                "unsupported_audio_fs", f"unsupported audio_fs {str(fs)[:20]}: send 16000 or 8000 Hz PCM16"
            )
        cfg.audio_fs = fs
    if "svs_lang" in message:
        lang = str(message["svs_lang"] or "").lower()
        if lang not in LANGUAGES:
            raise ProtocolError("unsupported_language", f"unsupported svs_lang {lang[:20]!r}: use zh, en or auto")
        cfg.language = LANGUAGES[lang]
    if "itn" in message:
        cfg.itn = _flag(message, "itn", True)
    if "hotwords" in message:
        try:
            cfg.hotwords = parse_hotwords(message["hotwords"])
        except ProtocolError as exc:
            cfg.hotwords = []
            problems.append(exc)
    return cfg, problems


# ---- timestamps --------------------------------------------------------------------------------------------------
def _is_wide(ch: str) -> bool:
    return bool(_WIDE.fullmatch(ch))


def word_tokens(word: str) -> list[list[str]]:
    """A Whisper word as FunASR tokens: each Chinese character alone, other runs of letters or digits whole, with
    any punctuation after a token kept beside it: [[token, punctuation], ...]."""
    out: list[list[str]] = []
    run = ""
    for ch in word:
        if _is_wide(ch):
            if run:
                out.append([run, ""])
                run = ""
            out.append([ch, ""])
        elif ch in _PUNCT_CHARS or not (ch.isalnum() or ch in "'-%"):
            if run:
                out.append([run, ""])
                run = ""
            if out:
                out[-1][1] += ch if ch in _PUNCT_CHARS else ""
        else:
            run += ch
    if run:
        out.append([run, ""])
    return out


@dataclass
class Stamp:
    token: str
    start: int  # ms on the stream's clock
    end: int
    punc: str = ""


def stamps(words: list[dict[str, Any]], offset_ms: int, limit_ms: int) -> list[Stamp]:
    """faster-whisper words (seconds from the utterance's start) → one stamp per token on the stream's clock,
    never before the previous one and never past `limit_ms`."""
    out: list[Stamp] = []
    last_start = 0
    for w in words:
        toks = word_tokens(str(w.get("word", "")))
        if not toks:
            if out:  # a bare punctuation "word" ends the token before it
                out[-1].punc += "".join(c for c in str(w.get("word", "")) if c in _PUNCT_CHARS)
            continue
        start = offset_ms + round(float(w.get("start", 0.0)) * 1000)
        end = offset_ms + round(float(w.get("end", 0.0)) * 1000)
        start = min(max(start, last_start, 0), limit_ms)
        end = min(max(end, start), limit_ms)
        step = (end - start) / len(toks)
        for i, (tok, punc) in enumerate(toks):
            s = start + round(i * step)
            e = start + round((i + 1) * step) if i < len(toks) - 1 else end
            out.append(Stamp(tok, s, e, punc))
        last_start = out[-1].start
    return out


def timestamp_text(items: list[Stamp]) -> str:
    return json.dumps([[s.start, s.end] for s in items], separators=(",", ":"))


def stamp_sents(items: list[Stamp]) -> list[dict[str, Any]]:
    """FunASR's sentence view: tokens joined by spaces, up to each punctuation mark."""
    sents: list[dict[str, Any]] = []
    current: list[Stamp] = []
    for s in items:
        current.append(s)
        if s.punc:
            sents.append(_sentence(current, s.punc[:1]))
            current = []
    if current:
        sents.append(_sentence(current, ""))
    return sents


def _sentence(items: list[Stamp], punc: str) -> dict[str, Any]:
    return {
        "text_seg": " ".join(s.token for s in items),
        "punc": punc,
        "start": items[0].start,
        "end": items[-1].end,
        "ts_list": [[s.start, s.end] for s in items],
    }


def spaced(before: str, text: str) -> str:
    """`text` as it must be appended to what a client already printed: English needs a space between pieces."""
    if not before or not text or before[-1].isspace() or text[0].isspace():
        return text
    if _is_wide(before[-1]) or _is_wide(text[0]) or text[0] in _PUNCT_CHARS:
        return text
    return " " + text


def tail_after(released: str, final: str) -> str:
    """What a final transcript adds to the words already released as partials (which are never taken back)."""
    done = tokens(released)
    rest = tokens(final)[len(done) :]
    return join(rest, after=released) if rest else ""


# ---- whole files and long buffers ---------------------------------------------------------------------------------
def sniff(data: bytes) -> str | None:
    for magic, demuxer in _MAGIC:
        if data.startswith(magic):
            return demuxer
    if data[4:8] == b"ftyp":
        return "mov"
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    return None


def decode_file(data: bytes, wav_format: str, max_s: float) -> np.ndarray:
    """A whole uploaded file → int16 mono at 16 kHz (PyAV, the demuxer forced as for uploads); InputError."""
    import av

    demuxer = CONTAINERS.get(wav_format) if wav_format != "others" else sniff(data)
    if demuxer is None:
        raise ProtocolError("unsupported_format", "the audio is not a file format this server reads", fatal=False)
    if not data:
        raise ProtocolError("empty_input", "no audio was sent", fatal=False)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise ProtocolError("audio_unreadable", "the file holds no audio stream", fatal=False)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=ASR_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.int16)
                    chunks.append(chunk)
                    total += chunk.shape[0]
                if total > max_s * ASR_RATE:
                    raise ProtocolError(
                        "audio_too_long", f"the file is longer than {max_s:.0f}s", close_code=CLOSE_TOO_BIG
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.int16))
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg reports bad data through many exception types
        raise ProtocolError(
            "audio_unreadable", f"the file does not decode as {demuxer} ({type(exc).__name__})", fatal=False
        ) from None
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def has_speech(probs: list[float], threshold: float, min_speech_ms: int) -> bool:
    need = max(1, math.ceil(min_speech_ms / (WINDOW * 1000 / ASR_RATE)))
    run = 0
    for p in probs:
        run = run + 1 if p >= threshold else 0
        if run >= need:
            return True
    return False


def plan_pieces(probs: list[float], n_samples: int, max_s: float, search_s: float = 5.0) -> list[tuple[int, int]]:
    """Cut audio longer than one Whisper window at its least speech-like window within the last `search_s` of
    each window: (start, end) sample ranges covering all of it."""
    limit = int(max_s * ASR_RATE)
    pieces: list[tuple[int, int]] = []
    start = 0
    while n_samples - start > limit:
        lo = (start + limit - int(search_s * ASR_RATE)) // WINDOW
        hi = (start + limit) // WINDOW
        window = min(range(lo, hi), key=lambda i: (probs[i] if i < len(probs) else 0.0, -i))
        cut = window * WINDOW + WINDOW // 2
        pieces.append((start, cut))
        start = cut
    pieces.append((start, n_samples))
    return pieces


# ---- one stream: a configuration, its audio, its replies ---------------------------------------------------------
@dataclass
class Summary:
    """What a connection did, for the audit trail and the log: never its text."""

    modes: list[str] = field(default_factory=list)
    streams: int = 0
    utterances: int = 0
    audio_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


def _reply(cfg: Config, mode: str, text: str, is_final: bool, **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "wav_name": cfg.wav_name, "text": text, "is_final": is_final, **extra}


class Stream(Listener):
    def __init__(self, session: Session, cfg: Config) -> None:
        self.session = session
        self.settings = session.settings
        self.cfg = cfg
        self.detected: str | None = None
        self._chain: asyncio.Task | None = None  # the last scheduled final: finals go out in utterance order
        self._jobs: list[asyncio.Task] = []
        self._ended = False
        self._final_sent = False  # a reply with is_final: true went out
        self._shown = ""  # 2pass: the finals so far; online: everything the client printed
        self._online = ""  # 2pass: the partial text since the last final
        self._held = ""  # partial text held back while an earlier final is still on its way
        self._utt_sent = ""  # online: what the client got of the utterance in progress
        self.audio_s = 0.0  # the stream's clock (each stream, each wav_name, starts at 0)
        self._file = bytearray()
        vad = None
        if cfg.mode != "offline" and not cfg.container:
            s = self.settings
            vad = VadConfig(s.live_vad_threshold, s.live_silence_ms, s.live_prefix_padding_ms)
        self.live = LiveAudio(
            self.settings,
            self,
            rate=cfg.audio_fs,
            vad=vad,
            language=lambda: self.cfg.language or self.detected,
            partials=cfg.mode != "offline",
            hotwords=cfg.hotwords or None,
            flood_check=cfg.mode != "offline",
        )

    # ---- replies ------------------------------------------------------------------------------------------------
    def reply(self, mode: str, text: str, is_final: bool, **extra: Any) -> dict[str, Any]:
        return _reply(self.cfg, mode, text, is_final, **extra)

    async def _send_online(self, text: str) -> None:
        context = self._shown + self._online
        piece = spaced(context, text)
        if not piece:
            return
        self._utt_sent += text
        if self.cfg.mode == "2pass":
            self._online += piece
        else:
            self._shown += piece
        await self.session.send(self.reply(self.cfg.online_label, piece, False))

    # ---- Listener ------------------------------------------------------------------------------------------------
    async def speech_started(self, at_ms: int) -> None:
        self._utt_sent = ""

    async def partial(self, delta: str, text: str) -> None:
        if self._chain is not None and not self._chain.done():
            self._held += delta
            return  # the client would wipe it when the earlier final arrives (2pass) or print it out of order
        await self._send_online(delta)

    async def utterance(self, utterance: Utterance) -> None:
        self.session.summary.utterances += 1
        self._held = ""  # held partials of this utterance: its final supersedes them
        self._schedule(utterance, sent=self._utt_sent)

    # ---- audio ---------------------------------------------------------------------------------------------------
    async def audio(self, raw: bytes) -> None:
        s = self.settings
        if len(raw) > s.live_max_frame_bytes:
            raise ProtocolError(
                "frame_too_large", f"an audio frame over {s.live_max_frame_bytes} bytes", close_code=CLOSE_TOO_BIG
            )
        if self.cfg.container:
            if len(self._file) + len(raw) > s.consult_max_audio_bytes:
                raise ProtocolError(
                    "input_too_large", f"a file over {s.consult_max_audio_bytes} bytes", close_code=CLOSE_TOO_BIG
                )
            self._file += raw
            return
        seconds = len(raw) // 2 / self.cfg.audio_fs
        if self.session.summary.audio_s + seconds > self.session.max_audio_s(self.cfg):
            raise ProtocolError(
                "session_too_long",
                f"more than {self.session.max_audio_s(self.cfg):g}s of audio in one session",
                close_code=CLOSE_TOO_BIG,
            )
        try:
            await self.live.feed(raw)
        except InputTooLarge as exc:  # a flood, or more buffered than one session may hold
            raise ProtocolError(exc.code, exc.message, close_code=CLOSE_POLICY) from None
        except InputError as exc:  # half a sample: this frame is dropped, the stream goes on
            raise ProtocolError("invalid_audio", exc.message, fatal=False) from None
        self.session.summary.audio_s += seconds
        self.audio_s += seconds

    # ---- finals --------------------------------------------------------------------------------------------------
    def _schedule(self, utterance: Utterance, pieces: list[tuple[int, int]] | None = None, sent: str = "") -> None:
        job = asyncio.create_task(self._transcribe(utterance, pieces))
        self._jobs = [j for j in self._jobs if not j.done()] + [job]  # an hour of dictation keeps no old results
        self._chain = asyncio.create_task(self._deliver(self._chain, job, utterance, sent))

    async def _transcribe(self, utterance: Utterance, pieces: list[tuple[int, int]] | None) -> dict[str, Any] | None:
        if utterance.duration_s < MIN_UTTERANCE_S:
            return None
        spans = pieces or [(0, utterance.audio.shape[0])]
        words = self.cfg.mode != "online"
        outs = await asyncio.gather(*(self._call(utterance.audio[a:b], words) for a, b in spans))
        if len(outs) == 1:
            return outs[0]
        language = outs[0].get("language")
        sep = "" if (language or "") in ("zh", "ja", "yue") else " "
        merged: dict[str, Any] = {"language": language, "text": sep.join(o["text"] for o in outs if o["text"])}
        if words:
            merged["words"] = [
                {**w, "start": w["start"] + a / ASR_RATE, "end": w["end"] + a / ASR_RATE}
                for (a, _b), o in zip(spans, outs)
                for w in o.get("words", [])
            ]
        return merged

    async def _call(self, audio: np.ndarray, words: bool) -> dict[str, Any]:
        with BACKLOG.waiting():  # the live pool's lag (app/live/backlog.py)
            return await task_client.call_async(
                "live.transcribe",
                {
                    "pcm": base64.b64encode(audio.astype("<i2").tobytes()).decode("ascii"),
                    # Each final detects its own language (a clinician may switch mid-session); partials, a quick
                    # preview, follow the last one detected.
                    "language": self.cfg.language,
                    "hotwords": self.cfg.hotwords or None,
                    "words": words,
                    "fit_window": self.settings.live_asr_fit_window,
                    "busy": behind(self.settings),
                },
                timeout_s=FINAL_TIMEOUT_S,
                revoke_on_cancel=True,  # the session went away: no one reads it
            )

    async def _deliver(self, previous: asyncio.Task | None, job: asyncio.Task, utterance: Utterance, sent: str) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            out = await job
        except MedvoiceError as exc:
            log.warning("session=%s final transcript failed: %s", self.session.id, exc.code)
            self.session.summary.errors.append(exc.code)
            out, error = None, exc
        else:
            error = None
        last = self._ended and self._chain is asyncio.current_task()
        text = ""
        extra: dict[str, Any] = {}
        if out is not None:
            self.detected = self.cfg.language or out.get("language") or self.detected
            if self.cfg.mode == "online":
                text = tail_after(sent, out.get("text") or "")
            else:
                text = out.get("text") or ""
                items = stamps(out.get("words") or [], utterance.start_ms, int(self.audio_s * 1000))
                extra = {"timestamp": timestamp_text(items), "stamp_sents": stamp_sents(items)}
        if error is not None:
            extra = {"error": error.message, "code": error.code}
        piece = spaced(self._shown, text)
        self._shown += piece
        self._online = ""
        if piece or last or extra:
            await self.session.send(self.reply(self.cfg.final_label, piece, last, **extra))
            self._final_sent = self._final_sent or last
        if self._held and self._chain is asyncio.current_task():
            held, self._held = self._held, ""
            await self._send_online(held)

    # ---- end of input --------------------------------------------------------------------------------------------
    async def finish(self, is_end: bool) -> None:
        """The client said is_speaking: false: the rest of the audio becomes the last final, then is_end."""
        utterance = self.live.commit()
        sent, self._held = self._utt_sent, ""
        if self.cfg.container:
            utterance = await self._decoded()
        pieces = None
        if utterance is not None and (self.cfg.mode == "offline" or self.cfg.container):
            utterance, pieces = await self._plan(utterance)
        self._ended = True  # set just before the last final is scheduled: only that one says is_final
        if utterance is not None:
            self.session.summary.utterances += 1
            self._schedule(utterance, pieces, sent)
        if self._chain is not None:
            await self._chain
        if not self._final_sent:
            await self.session.send(self.reply(self.cfg.final_label, "", True))
        if is_end:
            await self.session.send(self.reply(self.cfg.final_label, "", True, is_end=True))

    async def _decoded(self) -> Utterance | None:
        data, self._file = bytes(self._file), bytearray()
        max_s = self.session.max_audio_s(self.cfg) - self.session.summary.audio_s
        try:
            audio = await asyncio.to_thread(decode_file, data, self.cfg.wav_format, max_s)
        except ProtocolError as exc:
            if exc.fatal:
                raise
            await self.session.error(exc, self.cfg)
            return None
        self.session.summary.audio_s += audio.shape[0] / ASR_RATE
        self.audio_s = audio.shape[0] / ASR_RATE
        return Utterance(audio, 0, audio.shape[0] * 1000 // ASR_RATE, "commit", time.perf_counter())

    async def _plan(self, utterance: Utterance) -> tuple[Utterance | None, list[tuple[int, int]] | None]:
        """Offline audio: none of it goes to Whisper when it holds no speech; long audio is cut into windows."""
        s = self.settings
        vad = VadStream(s.live_vad_model_path)
        probs = await asyncio.to_thread(vad, utterance.audio)
        if not has_speech(probs, s.live_vad_threshold, s.live_min_speech_ms):
            return None, None
        if utterance.duration_s <= s.live_max_utterance_s:
            return utterance, None
        return utterance, plan_pieces(probs, utterance.audio.shape[0], s.live_max_utterance_s)

    async def close(self) -> None:
        """The stream is over (or abandoned): nothing it started outlives it."""
        await self.live.close()
        for task in [*self._jobs, *([self._chain] if self._chain else [])]:
            if not task.done():
                task.cancel()
        for task in self._jobs:
            with contextlib.suppress(BaseException):
                await task


# ---- one connection ------------------------------------------------------------------------------------------------
class Session:
    """One FunASR connection: configurations and streams one after another, until the client leaves or breaks it."""

    def __init__(self, settings: Settings, conn: Connection, session_id: str) -> None:
        self.settings = settings
        self.conn = conn
        self.id = session_id
        self.summary = Summary()
        self.started = time.monotonic()
        self._gone = False
        self._receiving: asyncio.Future | None = None  # the read in progress (kept across a timeout or a finish)

    def max_audio_s(self, cfg: Config) -> float:
        s = self.settings
        return min(s.live_max_session_s, s.live_max_buffer_s) if cfg.mode == "offline" else s.live_max_session_s

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            return
        try:
            await self.conn.send(message)
        except Exception:  # noqa: BLE001 - the client went away; the receive loop notices too
            self._gone = True

    async def error(self, exc: ProtocolError, cfg: Config | None) -> None:
        self.summary.errors.append(exc.code)
        mode = cfg.final_label if cfg else "offline"
        await self.send(
            {
                "mode": mode,
                "wav_name": cfg.wav_name if cfg else "",
                "text": "",
                "is_final": exc.fatal,
                "error": exc.reason,
                "code": exc.code,
            }
        )

    async def _receive(self, timeout_s: float) -> str | bytes | None:
        deadline = self.started + self.settings.live_max_session_s
        left = min(timeout_s, deadline - time.monotonic())
        if left <= 0:
            raise ProtocolError(
                "session_too_long", f"the session passed {self.settings.live_max_session_s:g}s", close_code=CLOSE_POLICY
            )
        reading = self._next_message()
        try:
            await asyncio.wait_for(asyncio.shield(reading), left)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise ProtocolError(
                    "session_too_long",
                    f"the session passed {self.settings.live_max_session_s:g}s",
                    close_code=CLOSE_POLICY,
                ) from None
            raise ProtocolError("no_configuration", "no JSON configuration arrived", close_code=CLOSE_POLICY) from None
        self._receiving = None
        return reading.result()

    def stop_reading(self) -> None:
        if self._receiving is not None and not self._receiving.done():
            self._receiving.cancel()

    def _next_message(self) -> asyncio.Future:
        """The read in progress, or a new one: one at a time, so a message read while a stream finishes is the
        receive loop's next."""
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self.conn.receive())
        return self._receiving

    async def _finish(self, stream: Stream, is_end: bool) -> None:
        """The stream's last finals, listening meanwhile: a client that leaves stops the wait (its finals, no
        longer read, are revoked and leave the pool's backlog); a message that comes is kept for the loop."""
        finishing = asyncio.ensure_future(stream.finish(is_end))
        reading = self._next_message()
        await asyncio.wait({finishing, reading}, return_when=asyncio.FIRST_COMPLETED)
        if not finishing.done() and reading.done() and (reading.exception() or reading.result() is None):
            self._gone = True
            finishing.cancel()
            await asyncio.wait({finishing})
            return
        await finishing

    async def run(self) -> Summary:
        """Serve the connection; the summary says how it ended (close_code None: the client left)."""
        cfg: Config | None = None
        pending: bytes | None = None
        try:
            while True:
                msg = await self._receive(FIRST_MESSAGE_TIMEOUT_S if cfg is None else math.inf)
                if msg is None:
                    return self.summary
                message: dict[str, Any] = {}
                if isinstance(msg, bytes):
                    if cfg is None:
                        raise ProtocolError(
                            "no_configuration", "the first message must be the JSON configuration, not audio"
                        )
                    pending = msg  # more audio after the end of a stream: a new stream under the same configuration
                else:
                    message = await self._json(msg, fatal=cfg is None, cfg=cfg)
                    if message is None:
                        continue
                    if cfg is not None and message.get("is_speaking") is False and set(message) <= _END_KEYS:
                        # A second end-of-input after the stream ended (some clients send it again on close):
                        # there is nothing left to finish, so no empty stream and no second final.
                        if message.get("is_end"):
                            await self.send(_reply(cfg, cfg.final_label, "", True, is_end=True))
                        continue
                    cfg, problems = parse_config(message, cfg)
                    for problem in problems:
                        await self.error(problem, cfg)
                assert cfg is not None
                if not await self._stream(cfg, pending, ended=message.get("is_speaking") is False, message=message):
                    return self.summary
                pending = None
        except ProtocolError as exc:
            await self.error(exc, cfg)
            self.summary.close_code, self.summary.close_reason = exc.close_code, exc.reason
            return self.summary

    async def _json(self, text: str, fatal: bool, cfg: Config | None = None) -> dict[str, Any] | None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            exc = ProtocolError("invalid_json", "messages must be JSON objects (or binary audio)", fatal=fatal)
            if fatal:
                raise exc
            await self.error(exc, cfg)
            return None
        return message

    async def _stream(self, cfg: Config, first: bytes | None, ended: bool, message: dict[str, Any]) -> bool:
        """One stream from its first audio to its last reply; False when the connection is over."""
        stream = Stream(self, cfg)
        self.summary.streams += 1
        if cfg.mode not in self.summary.modes:
            self.summary.modes.append(cfg.mode)
        is_end = bool(message.get("is_end"))
        try:
            if first is not None:
                await self._audio(stream, first)
            while not ended:
                msg = await self._receive(math.inf)
                if msg is None:
                    return False  # gone mid-stream: what was not answered is dropped with the session
                if isinstance(msg, bytes):
                    await self._audio(stream, msg)
                    continue
                data = await self._json(msg, fatal=False, cfg=cfg)
                if data is None:
                    continue
                if data.get("is_speaking") is False:
                    ended, is_end = True, bool(data.get("is_end"))
            await self._finish(stream, is_end)
            return not self._gone
        finally:
            await stream.close()

    async def _audio(self, stream: Stream, raw: bytes) -> None:
        try:
            await stream.audio(raw)
        except ProtocolError as exc:
            if exc.fatal:
                raise
            await self.error(exc, stream.cfg)


async def serve(settings: Settings, conn: Connection, session_id: str) -> Summary:
    session = Session(settings, conn, session_id)
    t0 = time.monotonic()
    try:
        summary = await session.run()
    finally:
        session.stop_reading()
    log.info(
        "funasr session=%s modes=%s streams=%d utterances=%d audio=%.1fs wall=%.1fs close=%s",
        session_id,
        ",".join(summary.modes) or "-",
        summary.streams,
        summary.utterances,
        summary.audio_s,
        time.monotonic() - t0,
        summary.close_code or "client",
    )
    return summary
