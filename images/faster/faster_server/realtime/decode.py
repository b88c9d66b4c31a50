"""A turn's decodes, run in the service's inference threads: interim ones while the speaker talks (greedy, fast,
text only) and the final one (the file routes' own decode, so that a live transcript is as accurate as the file's),
and the interim text turned into `delta` events that only grow."""
from __future__ import annotations

import copy
import difflib
import logging
import re
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from stt_common import SAMPLE_RATE
from stt_common.settings import temperatures

from ..engine import Info, Options, transcribe_chunks

log = logging.getLogger("faster_server.realtime")

_WORD = re.compile(r"\s*\S+")
_NORM = re.compile(r"[^\w']+")


FRAMES_PER_SECOND = 100   # Whisper's mel frames: a hop of 160 samples at 16 kHz


def trim_padding(features: np.ndarray, keep: int) -> np.ndarray:
    """Mel `features` ([..., mels, frames]) that faster-whisper padded to 30 s with zero columns, cut to their
    content and `keep` frames of that padding, rounded up to a whole second (a handful of shapes for the encoder).
    A column of audio is never all zeros (log-mel, normalised), so the trailing zero columns are the padding."""
    columns = features.reshape(-1, features.shape[-1])
    filled = np.flatnonzero(np.any(columns != 0, axis=0))
    content = int(filled[-1]) + 1 if filled.size else 0
    frames = -(-(content + keep) // FRAMES_PER_SECOND) * FRAMES_PER_SECOND
    return features if frames >= features.shape[-1] else features[..., :frames]


def short_window(model, padding: float):
    """`model` (a faster-whisper WhisperModel) for the short audio of a live decode: a shallow copy whose encoder
    hears the audio and `padding` seconds of the silence Whisper pads it with, not the whole 30 s window. The
    encoder's cost grows with what it hears: a 4 s French turn with base on 2 threads is encoded in 0.07 s instead
    of 0.69 s, and decoded with context (beam 5) in 0.6 s instead of 1.2 s, for the same words (bench/README.md,
    "Live transcription"). With no padding at all Whisper loses the end of the sentence; `padding` <= 0 or >= 30
    is the model itself. The copy shares the weights, the tokenizer and the feature extractor."""
    encode = getattr(model, "encode", None)
    if padding <= 0 or padding >= 30 or encode is None:
        return model
    keep = int(padding * FRAMES_PER_SECOND)
    windowed = copy.copy(model)
    windowed.encode = lambda features: encode(trim_padding(features, keep))
    return windowed


@dataclass
class Result:
    text: str
    language: Optional[str]


def final(model, audio: np.ndarray, opts: Options, settings, job, context: Optional[np.ndarray] = None,
          prefix: str = "") -> Result:
    """The turn's transcript: `transcribe_chunks`, as POST /v1/audio/transcriptions decodes a file. With `context`
    (the audio of earlier turns, right before this one) and `prefix` (their transcripts), the decoder hears the turn
    after that audio and is handed the earlier words as the start of its text (Whisper's `prefix`), so it writes
    only this turn's words, with the accuracy a longer window gives. Measured on French with base: as accurate as
    decoding the whole window and keeping the words timed after the cut, for a fifth less time (no earlier words
    generated, no word timing)."""
    info = Info()
    if context is None or not context.size or not prefix.strip():
        parts = [s.text for s in transcribe_chunks(model, iter([audio]), opts, settings, info, job)]
        return Result("".join(parts).strip(), info.language)
    head = prefix.strip()
    # with a prefix faster-whisper leaves its hotwords out; they go in the prompt (the same place) instead
    prompt = " ".join(p for p in (opts.hotwords, opts.prompt) if p) or None
    guards = {k: v for k, v in settings.guards.items() if k != "hallucination_silence_threshold"}
    segments, found = model.transcribe(np.concatenate([context, audio]), language=opts.language, task=opts.task,
                                       beam_size=settings.beam_size, initial_prompt=prompt,
                                       temperature=temperatures(opts.temperature), prefix=head,
                                       without_timestamps=True, vad_filter=False, **guards)
    parts = []
    for s in segments:
        job.check()
        parts.append(s.text)
    text = "".join(parts).strip()
    if text.startswith(head):
        return Result(text[len(head):].strip(), found.language)
    # the decode did not begin with the earlier words (a window judged silent, say): the turn alone
    log.info("realtime: a decode with context lost its prefix; decoding the turn alone")
    return final(model, audio, opts, settings, job)


INTERIM_TOKENS_PER_SECOND = 10   # fast French speech is about 6 tokens a second


def looping(text: str) -> bool:
    """Whether `text` holds a decoder's loop: a phrase of two to six words said three times in a row ("good
    more, good more, good more"), or a word five times. Whisper's greedy decoder loops on a fragment of a word at
    the start of a turn; speech repeats a word ("non, non, non") but seldom a phrase."""
    found = [_norm(w) for w in words(text)]
    found = [w for w in found if w]
    for n, times in ((1, 5), (2, 3), (3, 3), (4, 3), (5, 3), (6, 3)):
        for i in range(len(found) - n * times + 1):
            if all(found[i + k * n:i + (k + 1) * n] == found[i:i + n] for k in range(1, times)):
                return True
    return False


def interim(model, audio: np.ndarray, opts: Options, job) -> Optional[Result]:
    """A quick look at the turn so far: greedy, one temperature, no timestamps, at most the tokens such speech
    can hold; None when the decoder looped (a look that shows nothing: no delta from it)."""
    limit = int(INTERIM_TOKENS_PER_SECOND * audio.size / SAMPLE_RATE) + 10
    segments, info = model.transcribe(audio, language=opts.language, task="transcribe", beam_size=1,
                                      temperature=[0.0], initial_prompt=opts.prompt, hotwords=opts.hotwords,
                                      without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                                      max_new_tokens=limit)
    parts = []
    for s in segments:
        job.check()
        parts.append(s.text)
    text = "".join(parts).strip()
    if looping(text):
        log.debug("realtime: an interim decode looped, not shown: %.80s", text)
        return None
    return Result(text, info.language)


def words(text: str) -> List[str]:
    """`text` as words with their leading spaces: "".join(words(t)) == t."""
    return _WORD.findall(text)


def _norm(word: str) -> str:
    return _NORM.sub("", word.lower())


class Deltas:
    """The `delta` events of one item. Interim decodes of a growing turn disagree at their end (a word half
    heard); a word is sent once two interim decodes in a row agree on everything up to it, so the deltas only
    grow; the first decode's words but its last go out at once (the first delta should not wait for a second
    decode). The final transcript then sends what it adds after the words already sent (aligned word by word
    where it differs): joined, the deltas read as the `completed` transcript but for the interim words the final
    decode corrected, which `completed` carries."""

    def __init__(self):
        self.sent: List[str] = []
        self._previous: List[str] = []

    @property
    def text(self) -> str:
        return "".join(self.sent)

    def _emit(self, new: List[str]) -> str:
        if not new:
            return ""
        if not self.sent:
            new = [new[0].lstrip()] + new[1:]
        elif not new[0][:1].isspace():
            new = [" " + new[0]] + new[1:]
        self.sent += new
        return "".join(new)

    def interim(self, text: str) -> str:
        """The delta an interim hypothesis allows ("" when none)."""
        current = words(text)
        stable = 0
        for a, b in zip(self._previous, current):
            if _norm(a) != _norm(b):
                break
            stable += 1
        if not self._previous and not self.sent:
            stable = len(current) - 1
        self._previous = current
        if stable <= len(self.sent) or [_norm(w) for w in current[:len(self.sent)]] != [_norm(w) for w in self.sent]:
            return ""
        return self._emit(current[len(self.sent):stable])

    def final(self, text: str) -> str:
        """The last delta of the item, from its final transcript."""
        final_words = words(text)
        if not self.sent:
            return self._emit(final_words)
        sent = [_norm(w) for w in self.sent]
        target = [_norm(w) for w in final_words]
        if target[:len(sent)] == sent:
            return self._emit(final_words[len(sent):])
        # where the final transcript differs from what was sent: continue after its match of the last word sent
        matcher = difflib.SequenceMatcher(a=sent, b=target, autojunk=False)
        end = 0
        for block in matcher.get_matching_blocks():
            if block.size:
                end = block.b + block.size
        return self._emit(final_words[end:])
