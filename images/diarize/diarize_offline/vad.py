"""Speech regions from silero-vad's sequence ONNX model (the weights ship inside the silero-vad wheel): the
offline diarizer's first step, and the WhisperX server's ASR chunks (a pass over 10 minutes takes about 2 s on
one core, against tens of seconds for pyannote's segmentation model)."""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


class SpeechDetector:
    def __init__(self, threshold: float = 0.5, min_speech_ms: int = 250, min_silence_ms: int = 100,
                 speech_pad_ms: int = 30):
        import torch

        prev = torch.get_num_threads()
        # silero_vad sets torch to one thread when imported: give the process its setting back
        from silero_vad import load_silero_vad

        torch.set_num_threads(prev)
        self.model = load_silero_vad(sequence=True)  # ONNX, 1 thread, numpy in/out
        self.threshold, self.min_speech_ms = threshold, min_speech_ms
        self.min_silence_ms, self.speech_pad_ms = min_silence_ms, speech_pad_ms

    def regions(self, audio: np.ndarray, max_speech_s: float = float("inf")) -> list[tuple[int, int]]:
        """(start, end) samples of speech; a region longer than ``max_speech_s`` is cut at its longest pause
        (silero's own rule), else at that length."""
        from silero_vad.utils_vad import get_speech_timestamps_from_probs

        audio = np.ascontiguousarray(audio, dtype=np.float32)
        probs = self.model.audio_forward(audio, sampling_rate=SAMPLE_RATE)
        ts = get_speech_timestamps_from_probs(
            probs, sampling_rate=SAMPLE_RATE, threshold=self.threshold, min_speech_duration_ms=self.min_speech_ms,
            max_speech_duration_s=max_speech_s, min_silence_duration_ms=self.min_silence_ms,
            speech_pad_ms=self.speech_pad_ms, audio_length_samples=audio.size)
        return [(int(t["start"]), int(t["end"])) for t in ts]
