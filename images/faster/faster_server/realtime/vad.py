"""Server VAD: silero (the model faster-whisper ships) run frame by frame as audio arrives, and the turns it
makes with OpenAI's `server_vad` settings (threshold, prefix padding, silence duration)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

FRAME = 512            # samples of 16 kHz audio per VAD frame (32 ms), silero's own
_CONTEXT = 64          # samples of the previous frame silero sees before each frame
START_FRAMES = 3       # consecutive frames above the threshold before a turn starts (96 ms: a click is no turn)
NEG_MARGIN = 0.15      # silero's own hysteresis: speech goes on until the probability falls below threshold - this


def frame_ms(frames: int) -> int:
    return frames * FRAME * 1000 // 16000


class SileroStream:
    """Silero's speech probability for each 32 ms frame of a continuous 16 kHz stream, its recurrent state kept
    across calls (the same numbers as faster-whisper's whole-file pass over the same audio)."""

    def __init__(self):
        from faster_whisper.vad import get_vad_model
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the frames completed by `audio` (a partial frame waits for the next call)."""
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n = data.size // FRAME
        self._pending = data[n * FRAME:].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        frames = data[:n * FRAME].reshape(n, FRAME).astype(np.float32, copy=False)
        previous = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]], axis=0)
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([previous, frames], axis=1), "h": self._h, "c": self._c})
        self._context = frames[-1, -_CONTEXT:].copy()
        return np.asarray(out, np.float32).reshape(-1)


@dataclass
class TurnEvent:
    kind: str    # "start" or "stop"
    frame: int   # start: the first speech frame; stop: the frame that completed the silence


class TurnDetector:
    """Frame probabilities to turns: a turn starts after START_FRAMES frames at or above `threshold` and stops
    after `silence_ms` of frames below `threshold - NEG_MARGIN`. Frames are numbered from the session's start."""

    def __init__(self, threshold: float = 0.5, silence_ms: int = 500):
        self.configure(threshold, silence_ms)
        self.frames = 0                   # frames seen
        self.speaking = False
        self.run = 0                      # consecutive frames above the threshold (not speaking)
        self.silence = 0                  # consecutive frames below the lower threshold (speaking)
        self.last_speech: Optional[int] = None   # the last frame at or above the lower threshold (speaking)

    def configure(self, threshold: float, silence_ms: int) -> None:
        self.threshold = threshold
        self.low = max(0.0, threshold - NEG_MARGIN)
        self.silence_frames = max(1, math.ceil(silence_ms * 16 / FRAME))

    def reset(self) -> None:
        """The turn in progress is gone (the buffer was cleared or committed by the client)."""
        self.speaking, self.run, self.silence, self.last_speech = False, 0, 0, None

    def process(self, probs: np.ndarray) -> List[TurnEvent]:
        events = []
        for p in probs:
            i = self.frames
            self.frames += 1
            if not self.speaking:
                self.run = self.run + 1 if p >= self.threshold else 0
                if self.run >= START_FRAMES:
                    self.speaking, self.silence, self.last_speech = True, 0, i
                    events.append(TurnEvent("start", i - self.run + 1))
                    self.run = 0
            elif p >= self.low:
                self.silence, self.last_speech = 0, i
            else:
                self.silence += 1
                if self.silence >= self.silence_frames:
                    events.append(TurnEvent("stop", i))
                    self.speaking, self.silence = False, 0
        return events

    def trailing_silence(self) -> Tuple[int, Optional[int]]:
        """(frames of silence since the last speech frame, that frame) while speaking; (0, None) otherwise."""
        return (self.silence, self.last_speech) if self.speaking else (0, None)
