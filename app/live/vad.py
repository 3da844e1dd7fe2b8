"""Per-session voice activity detection: Silero VAD (the ONNX file faster-whisper ships) run window by window.

faster-whisper's own `SileroVADModel` resets its recurrent state on every call, so it cannot follow a stream;
here one InferenceSession is shared by every session of the process (onnxruntime's `run` is thread-safe) and
each session keeps its own LSTM state and 64-sample context across 32 ms windows. The model file is found
without importing faster_whisper (the API process imports no model library) and checked against its pinned
SHA-256.

`Endpointer` turns probabilities into utterances with hysteresis: speech starts once `min_speech_ms` of windows
reach `threshold`, ends after `silence_ms` below `threshold - release`; `prefix_ms` of audio before the start is
kept, and an utterance is cut at `max_utterance_s`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.core.errors import ModelFileMissing, ModelHashMismatch

WINDOW = 512  # samples at 16 kHz: 32 ms, the window Silero VAD v5/v6 is trained on
CONTEXT = 64
RATE = 16000
WINDOW_MS = WINDOW * 1000 // RATE
KEEP_SILENCE_MS = 200  # trailing silence an utterance keeps: Whisper ends its last word better with some
SILERO_SHA256 = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"  # silero_vad_v6.onnx

_lock = threading.Lock()
_session = None


def model_path(configured: Path | None = None) -> Path:
    if configured is not None:
        return Path(configured)
    spec = importlib.util.find_spec("faster_whisper")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissing("the Silero VAD model is not installed (faster-whisper ships it)", {})
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


def session(configured: Path | None = None):  # noqa: ANN201 - onnxruntime.InferenceSession
    """The process's one VAD model session (loaded on first use, hash checked)."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime

            path = model_path(configured)
            if not path.exists():
                raise ModelFileMissing(f"VAD model not found: {path}", {"path": str(path)})
            if configured is None and hashlib.sha256(path.read_bytes()).hexdigest() != SILERO_SHA256:
                raise ModelHashMismatch("the Silero VAD model's SHA-256 differs from the pinned one", {})
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1  # a 32 ms window takes ~0.2 ms: threads would only add contention
            opts.log_severity_level = 4
            _session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)
        return _session


class VadStream:
    """Speech probabilities of a stream, one per 32 ms window, with the model state carried between calls."""

    def __init__(self, configured: Path | None = None) -> None:
        self._session = session(configured)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> list[float]:
        """Probabilities for every whole window the new samples complete (int16 at 16 kHz)."""
        audio = np.concatenate([self._pending, samples.astype(np.float32) / 32768.0])
        n = audio.shape[0] // WINDOW
        self._pending = audio[n * WINDOW :]
        probs = []
        for i in range(n):
            window = audio[i * WINDOW : (i + 1) * WINDOW]
            x = np.concatenate([self._context, window])[None, :]
            out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
            self._context = window[-CONTEXT:]
            probs.append(float(out[0]))
        return probs


@dataclass
class Speech:
    """An endpointer's event: speech started, or an utterance ended (with its audio)."""

    kind: str  # "started" | "stopped"
    at_ms: int  # in the session's audio time
    audio: np.ndarray | None = None  # int16 at 16 kHz (stopped)
    reason: str = "silence"  # stopped: silence | max_length
    start_ms: int | None = None  # stopped: where `audio` begins in the session's audio time (pre-roll included)


@dataclass
class Endpointer:
    threshold: float = 0.5
    release: float = 0.15
    silence_ms: int = 500
    prefix_ms: int = 300
    min_speech_ms: int = 200
    max_utterance_s: float = 30.0
    vad: VadStream | None = None
    samples_seen: int = 0
    speaking: bool = False
    _pre: deque = field(default_factory=deque)
    _utterance: list = field(default_factory=list)
    _candidate: list = field(default_factory=list)  # windows above threshold not yet confirmed as speech
    _voiced_ms: int = 0
    _silent_ms: int = 0
    _start_ms: int = 0
    _last_voice_ms: int = 0
    _tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    _previous: tuple[np.ndarray, int] | None = None  # the last utterance's audio and where it ended (samples)

    def __post_init__(self) -> None:
        self.vad = self.vad or VadStream()

    @property
    def silent_ms(self) -> int:
        """How long the speaker has been quiet inside the utterance in progress (0 while voiced)."""
        return self._silent_ms if self.speaking else 0

    @property
    def last_voice_ms(self) -> int:
        return self._last_voice_ms

    @property
    def utterance_ms(self) -> int:
        return sum(w.shape[0] for w in self._utterance) * 1000 // RATE

    def current(self) -> np.ndarray:
        """The utterance so far (for partial transcripts), or nothing between utterances."""
        return np.concatenate(self._utterance) if self._utterance else np.zeros(0, dtype=np.int16)

    def reset(self) -> None:
        """Forget the utterance in progress (the client cleared its buffer)."""
        self.speaking = False
        self._previous = None
        self._utterance, self._candidate = [], []
        self._pre.clear()
        self._voiced_ms = self._silent_ms = 0
        assert self.vad is not None
        self.vad.reset()

    def feed(self, samples: np.ndarray) -> list[Speech]:
        """int16 samples at 16 kHz in; the speech events they complete out."""
        assert self.vad is not None
        audio = np.concatenate([self._tail, samples])
        n = audio.shape[0] // WINDOW
        self._tail = audio[n * WINDOW :]
        probs = self.vad(audio[: n * WINDOW])
        out: list[Speech] = []
        for i, p in enumerate(probs):
            window = audio[i * WINDOW : (i + 1) * WINDOW]
            at = self.samples_seen * 1000 // RATE
            self.samples_seen += WINDOW
            out.extend(self._step(window, p, at))
        return out

    def _step(self, window: np.ndarray, p: float, at: int) -> list[Speech]:
        if not self.speaking:
            if p >= self.threshold:
                self._candidate.append(window)
                if len(self._candidate) * WINDOW_MS >= max(self.min_speech_ms, WINDOW_MS):
                    self.speaking = True
                    self._start_ms = at - (len(self._candidate) - 1) * WINDOW_MS
                    self._utterance = [*self._pre, *self._candidate]
                    self._pre.clear()
                    self._candidate = []
                    self._silent_ms, self._last_voice_ms = 0, at + WINDOW_MS
                    return [Speech("started", self._start_ms)]
                return []
            # A burst shorter than min_speech_ms was noise: it joins the pre-roll like any other audio.
            for w in [*self._candidate, window]:
                self._pre.append(w)
            self._candidate = []
            while len(self._pre) * WINDOW_MS > self.prefix_ms:
                self._pre.popleft()
            return []
        self._utterance.append(window)
        if p >= self.threshold - self.release:
            self._silent_ms, self._last_voice_ms = 0, at + WINDOW_MS
        else:
            self._silent_ms += WINDOW_MS
        if self._silent_ms >= self.silence_ms:
            return [self._stop("silence", keep_ms=min(self._silent_ms, KEEP_SILENCE_MS))]
        if self.utterance_ms >= self.max_utterance_s * 1000:
            return [self._stop("max_length", keep_ms=self._silent_ms)]
        return []

    def join_previous(self, max_gap_ms: int) -> bool:
        """The speech just started goes on the utterance that ended less than max_gap_ms before it (a pause
        that was not the end of the question): the utterance in progress starts with that one's audio."""
        if not self.speaking or self._previous is None:
            return False
        audio, end = self._previous
        first = self.samples_seen - sum(w.shape[0] for w in self._utterance)
        gap = first - end
        if gap < 0 or gap * 1000 // RATE > max_gap_ms:
            return False
        self._previous = None
        self._utterance = [audio, np.zeros(gap, dtype=np.int16), *self._utterance]
        return True

    def _stop(self, reason: str, keep_ms: int) -> Speech:
        # Keep a little of the trailing silence (Whisper ends words better with it), drop the rest.
        drop = max(0, (self._silent_ms - keep_ms) // WINDOW_MS)
        windows = self._utterance[: len(self._utterance) - drop] if drop else self._utterance
        audio = np.concatenate(windows)
        self.speaking = False
        self._utterance = []
        self._silent_ms = 0
        # The audio ends where its last kept window ends: the current window is already counted in samples_seen.
        end = self.samples_seen - drop * WINDOW
        self._previous = (audio, end) if reason == "silence" else None
        start_ms = (end - audio.shape[0]) * 1000 // RATE
        return Speech("stopped", self._last_voice_ms, audio, reason, start_ms=max(0, start_ms))
