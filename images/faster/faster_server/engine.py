"""faster-whisper behind a small interface: model names, loading, transcription as a segment iterator."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

from stt_common import (SAMPLE_RATE, Segment, Word, check_text, find_local_model, list_local_models,
                        not_found, public_name)
from stt_common.settings import temperatures

from .settings import FasterSettings

log = logging.getLogger("faster_server.engine")

ALIASES = ("whisper-1",)

LANGUAGE_NAMES = {
    "en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian", "pt": "portuguese",
    "nl": "dutch", "ru": "russian", "zh": "chinese", "ja": "japanese", "ko": "korean", "ar": "arabic",
    "hi": "hindi", "tr": "turkish", "pl": "polish", "uk": "ukrainian", "sv": "swedish", "da": "danish",
    "no": "norwegian", "fi": "finnish", "cs": "czech", "el": "greek", "he": "hebrew", "hu": "hungarian",
    "ro": "romanian", "id": "indonesian", "vi": "vietnamese", "th": "thai", "ca": "catalan", "fa": "persian",
}


def catalogue() -> dict:
    from faster_whisper.utils import _MODELS
    return dict(_MODELS)


def language_codes() -> tuple:
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    return tuple(_LANGUAGE_CODES)


class ModelNames:
    """Maps request model names to load keys (a local folder or a hub id).

    Served by default: the configured default (whatever it is: the operator chose it), its aliases and the
    folders of the model store. Catalogue names and hub ids that are not in the store are downloaded only
    with STT_ALLOW_MODEL_DOWNLOADS=1."""

    def __init__(self, settings: FasterSettings):
        self.settings = settings
        self.default_id = settings.model
        self.default_key = self._key_for(settings.model, default=True) or settings.model

    def _key_for(self, name: str, default: bool = False) -> Optional[str]:
        s = self.settings
        downloads = default or s.allow_model_downloads
        local = find_local_model(name, s.models_dir)
        if local:
            return local
        cat = catalogue()
        if name in cat:
            repo = cat[name]
            return find_local_model(repo, s.models_dir) or (repo if downloads else None)
        if default and os.path.isabs(name):  # the operator's own folder (never from a request)
            return os.path.realpath(name)
        if (downloads and "/" in name and not name.startswith("/") and ".." not in name.split("/")
                and name.count("/") == 1):
            return name  # a hub id: faster-whisper downloads it (HF_HOME cache)
        return None

    def available(self) -> List[str]:
        out = ["whisper-1", public_name(self.default_id)]
        out += [m for m in list_local_models(self.settings.models_dir)]
        if self.settings.allow_model_downloads:
            out += list(catalogue())
        return list(dict.fromkeys(out))

    def resolve(self, name: Optional[str]) -> str:
        if name is not None:
            check_text(name, "model")
        if (not name or name in ALIASES or name == self.default_id or name == self.default_key
                or name == public_name(self.default_id)):
            return self.default_key
        key = self._key_for(name)
        if key is None and os.path.isabs(name) and os.path.isdir(self.settings.models_dir or ""):
            root = os.path.realpath(self.settings.models_dir)   # a key this resolver gave before (cache.get(key))
            if name.startswith(root + os.sep) and find_local_model(os.path.relpath(name, root), root) == name:
                key = name
        if key is None:
            more = (", or any Hugging Face id of a CTranslate2 model (org/name)"
                    if self.settings.allow_model_downloads else
                    " (other models: put them in the model store; downloads are off)")
            raise not_found(
                f"The model '{name}' does not exist or cannot be served here. Available: "
                + ", ".join(self.available()) + more + ".", param="model", code="model_not_found")
        return key


# what CTranslate2 loads on device=cuda: in the GPU variant of the image only (build arg DEVICE=cuda)
CUDA_LIBRARIES = ("libcublas.so.12", "libcudnn.so.9")


def cuda_devices() -> int:
    """GPUs CTranslate2 sees (0 without one, without its driver or without the NVIDIA container runtime); with a GPU,
    the CUDA libraries must load too, or the error says which image to build."""
    import ctypes

    import ctranslate2
    count = ctranslate2.get_cuda_device_count()
    if count:
        for name in CUDA_LIBRARIES:
            try:
                ctypes.CDLL(name)
            except OSError:
                raise RuntimeError(f"{name} is missing: this is the CPU variant of the image; build it with the "
                                   f"build argument DEVICE=cuda (group_data: the service's build_args)") from None
    return count


def load_model(key: str, settings: FasterSettings):
    from faster_whisper import WhisperModel
    if not os.path.isabs(key) and os.path.exists(key):
        # faster-whisper would take a hub id that names a folder under the working directory as that folder
        raise not_found(f"The model '{key}' cannot be served here.", param="model", code="model_not_found")
    t0 = time.monotonic()
    model = WhisperModel(key, device=settings.device, compute_type=settings.effective_compute_type,
                         cpu_threads=settings.cpu_threads, num_workers=settings.max_concurrency)
    log.info("WhisperModel(%s) ready in %.1fs", key, time.monotonic() - t0)
    return model


@dataclass
class Options:
    task: str = "transcribe"
    language: Optional[str] = None
    prompt: Optional[str] = None
    temperature: float = 0.0
    word_timestamps: bool = False
    hotwords: Optional[str] = None   # words to expect (live transcription's `keywords`)


@dataclass
class Info:
    language: str = "en"
    duration: float = 0.0


def check_language(language: Optional[str]) -> Optional[str]:
    """A Whisper language code (any model); the model's own list is checked by the app once it is loaded."""
    from stt_common import check_language as check
    return check(language, language_codes(), "Whisper")


SENTENCE_END = (".", "?", "!", "\u2026", "\u3002", "\uff1f", "\uff01")


def split_sentences(segment, model, pause: float = 1.0, max_seconds: float = 15.0) -> list:
    """One faster-whisper segment with words, cut after each sentence end, at each pause of `pause` seconds,
    and before it grows longer than `max_seconds`: segments the size of the sequential decoder's. Each part
    keeps the segment's scores; its tokens are its own text, encoded again."""
    words = segment.words or []
    if not words:
        return [segment]
    parts, current = [], []
    for i, w in enumerate(words):
        current.append(w)
        nxt = words[i + 1] if i + 1 < len(words) else None
        if nxt is None or w.word.rstrip().endswith(SENTENCE_END) or nxt.start - w.end >= pause \
                or nxt.end - current[0].start > max_seconds:
            parts.append(current)
            current = []
    if len(parts) == 1:
        return [segment]
    encode = model.hf_tokenizer.encode
    return [dataclasses.replace(segment, start=p[0].start, end=p[-1].end, text="".join(w.word for w in p), words=p,
                             tokens=encode("".join(w.word for w in p), add_special_tokens=False).ids)
            for p in parts]


def transcribe_chunks(model, chunks: Iterator[np.ndarray], opts: Options, settings: FasterSettings,
                      info: Info, job=None) -> Iterator[Segment]:
    """Transcribe consecutive audio chunks; yields Segments with absolute times. Fills `info` as it goes.
    With a `job` (stt_common.StopHandle), stops between segments once it is cancelled."""
    seg_id = 0
    offset = 0.0
    prompt = opts.prompt
    language = opts.language
    batched = None
    for chunk in chunks:
        if job is not None:
            job.check()
        dur = chunk.size / SAMPLE_RATE
        kw = dict(language=language, task=opts.task, beam_size=settings.beam_size, initial_prompt=prompt,
                  temperature=temperatures(opts.temperature), word_timestamps=opts.word_timestamps,
                  hotwords=opts.hotwords, **settings.guards)
        vad = settings.vad_filter == "true" or (settings.vad_filter == "auto" and dur >= settings.vad_min_seconds)
        if settings.batch_size > 0 and dur >= settings.batch_min_seconds:
            if batched is None:
                from faster_whisper import BatchedInferencePipeline
                batched = BatchedInferencePipeline(model)
            # No timestamp tokens: with them the batched decoder drops the sentence that ends a 30 s window
            # (one of 24 sentences lost on the e2e meeting, WER 0.105 against 0.065 without). Word timestamps
            # instead, to cut each window's text into sentence-sized segments for subtitles (+10 % time).
            segments, finfo = batched.transcribe(chunk, batch_size=settings.batch_size, vad_filter=True,
                                                 without_timestamps=True, **{**kw, "word_timestamps": True})
            segments = (part for s in segments for part in split_sentences(s, model))
        else:
            segments, finfo = model.transcribe(chunk, vad_filter=vad, **kw)
        if language is None:
            language = finfo.language
            info.language = finfo.language
        last_text = []
        for s in segments:
            if job is not None:
                job.check()   # the next segment is decoded only when asked for: stopping here stops the decoder
            words = None
            if opts.word_timestamps:
                words = [Word(w.word, w.start + offset, w.end + offset, w.probability) for w in (s.words or [])]
            yield Segment(id=seg_id, seek=int(s.seek + offset * 100), start=s.start + offset, end=s.end + offset,
                          text=s.text, tokens=list(s.tokens), temperature=float(s.temperature or 0.0),
                          avg_logprob=float(s.avg_logprob), compression_ratio=float(s.compression_ratio),
                          no_speech_prob=float(s.no_speech_prob), words=words)
            seg_id += 1
            last_text.append(s.text)
        offset += dur
        info.duration = offset
        if last_text and settings.condition_on_previous_text:  # carry context across windows, as whisper does
            prompt = "".join(last_text)[-200:].strip() or opts.prompt
