"""The WhisperX pipeline behind the routes: batched ASR, wav2vec2 alignment, speaker labels.

Request handlers only see :meth:`WhisperXEngine.run` (audio in, a plain-dict result out) and
:class:`~whisperx_server.errors.ServiceError`. Heavy imports (torch, whisperx, pyannote) happen on
first use so that the module imports without them.

The engine is put together from one part per responsibility: :mod:`.models` (which ASR model a name
means, loading it: :mod:`.asr`), :mod:`.alignment`, :mod:`.diarization`, :mod:`.transcription` (batched ASR on
VAD chunks or speaker turns), :mod:`.speakers` (a speaker per word, segments cut at speaker changes),
:mod:`.windows` (where long audio is cut) and :mod:`.segments` (the client's segment shape).
Every model it loads (ASR, alignment, diarization) lives in one :class:`stt_common.ModelCache`, the
engine's ``cache``: one idle TTL, one list on /health.

Memory on long audio: the audio is handled in windows of ``window_s`` seconds (cut at the quietest
moment near each boundary), so ASR and alignment work on one window at a time; only the compact
result (segments/words) grows with duration. Diarization needs the whole recording for consistent
speaker labels, so it receives the full 16 kHz float32 array (230 MB per hour), which the caller may
hand over as a disk-backed ``numpy.memmap``.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stt_common import JobStopped, ModelCache

from .alignment import Alignment, AlignUnavailable
from .decoding import decoding
from .diarization import Diarization, check_speaker_hints
from .errors import DEFAULT_DIARIZATION_MODEL, InvalidRequest
from .models import ModelLoading, empty_cuda_cache
from .segments import offset_segment, public_segment
from .speakers import SpeakerTurns, assign_speakers
from .transcription import asr_on_spans, detect_language
from .windows import SAMPLE_RATE, group_spans, quiet_cut_points, speaker_turn_spans

__all__ = ["SAMPLE_RATE", "EngineConfig", "WhisperXEngine", "check_speaker_hints", "group_spans",
           "quiet_cut_points", "speaker_turn_spans"]

log = logging.getLogger("whisperx_server")


@dataclass
class EngineConfig:
    """Built from the STT_* settings by ``whisperx_server.settings.engine_config`` (the one environment parser)."""
    default_model: str = "base"
    device: str = "cpu"
    compute_type: str = "int8"
    threads: int = 0                     # 0 = all cores
    batch_size: int = 8
    models_dir: str = "/models"
    model_ttl: float = 600.0             # idle seconds before a model but the default is unloaded; -1 never
    model_load_timeout: float = 300.0    # a request waits this long for a model that is loading
    max_loaded_models: int = 0           # request-selected ASR models loaded at once; 0 = no cap
    hf_token: str = ""
    diarization_backend: str = "auto"    # auto | pyannote | offline
    diarization_model: str = DEFAULT_DIARIZATION_MODEL
    align_models: dict[str, str] = field(default_factory=dict)   # language -> model name/folder
    align_cache_dir: str | None = None
    window_s: float = 1200.0             # ASR/alignment window on long audio
    diarize_order: str = "words"         # words: full-context ASR, speakers per word | turns: ASR per speaker turn
    speaker_threshold: float | None = None   # known speakers: cluster-voice similarity that names; None: per backend
    vad: str = "silero"                  # ASR chunks: silero (shipped ONNX model) | pyannote (whisperx's default)
    allow_downloads: bool = False        # short names / hub ids beyond the default and the store (opt-in)
    guards: dict[str, Any] = field(default_factory=dict)   # GuardSettings.guards: the decoder's thresholds

    @property
    def cpu_threads(self) -> int:
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)


class WhisperXEngine(ModelLoading, Alignment, Diarization):
    def __init__(self, config: EngineConfig):
        self.cfg = config
        self._init_loading()
        self._init_alignment()
        self._init_diarization()
        # the one model manager: ASR models by resolved name (the default never unloaded), alignment and
        # diarization models by "align:<language>:<model>" / "diarize:<backend>..."
        self.cache = ModelCache(loader=self._load_asr, default=config.default_model, ttl=config.model_ttl,
                                load_timeout=config.model_load_timeout,
                                resolve=self.resolve_model, max_loaded=config.max_loaded_models,
                                on_unload=empty_cuda_cache)

    def run(self, audio: np.ndarray, *, asr=None, model: str | None = None, language: str | None = None,
            align: bool = True, diarize: bool = False, num_speakers: int | None = None,
            min_speakers: int | None = None, max_speakers: int | None = None,
            batch_size: int | None = None, prompt: str | None = None, temperature: float = 0.0,
            voices: list | None = None, reference_clips: list | None = None,
            speaker_threshold: float | None = None, job=None) -> dict:
        """``job`` (stt_common.StopHandle): checked between windows, between the VAD's batches, after each ASR batch,
        after each aligned segment and within diarization's steps; stops the run once cancelled (client gone,
        time limit). ``prompt`` and ``temperature`` (OpenAI's) and the server's guards apply to this run's ASR
        only (:func:`.decoding.decoding`).

        With ``diarize``, the order is the configured ``diarize_order``: ``words`` (ASR over the VAD's chunks with
        full context, words timed, each word given the speaker of its time, segments cut where the speaker
        changes: :mod:`.speakers`) or ``turns`` (ASR on each speaker turn: a segment never spans two speakers,
        short turns lose their context).

        Known speakers (:mod:`.voices`): ``voices`` (:class:`.voices.Voice`, enrolled or already embedded) and
        ``reference_clips`` [(name, 16 kHz audio)] to embed first name the clusters they match (at
        ``speaker_threshold``, else the server's); segments report ``speaker_similarity`` and
        ``diarization.known_speakers`` says which name went where."""
        check_speaker_hints(num_speakers, min_speakers, max_speakers)
        stop = job.check if job is not None else (lambda: None)
        language = (language or "").strip().lower() or None
        if diarize:  # fail fast on a configuration error, before minutes of ASR
            self.check_diarization()
        voices = list(voices or [])
        if diarize and reference_clips:   # a clip without speech is a 400 before minutes of ASR
            voices += self.embed_references(reference_clips)
        threshold = self.speaker_threshold(speaker_threshold) if voices else None
        pipe = asr if asr is not None else self.load_asr(model)
        multilingual = bool(pipe.model.model.is_multilingual)
        if not multilingual:
            if language not in (None, "en"):
                raise InvalidRequest(f"Model {model or self.cfg.default_model!r} is English-only; "
                                     f"it cannot transcribe language {language!r}.", param="language")
            language = "en"
        duration = len(audio) / SAMPLE_RATE
        batch = batch_size or self.cfg.batch_size
        order = self.cfg.diarize_order if diarize else None
        clock = Phases()
        turns = None
        diar_info = None
        if diarize:
            # the whole recording at once: speaker labels stay consistent across windows
            steps: dict = {}
            with clock("diarize"):
                turns, backend = self.diarize(audio, num_speakers=num_speakers, min_speakers=min_speakers,
                                              max_speakers=max_speakers, stop=stop, timings=steps)
            for k, v in steps.items():
                clock.seconds[f"diarize_{k}"] = v
            diar_info = {"backend": backend, "speakers": turns.speakers, "order": order,
                         "seconds": round(clock.seconds["diarize"], 3)}
        if order == "turns":
            assert turns is not None   # order is set only when diarizing, which set turns
            groups = group_spans(speaker_turn_spans(turns.turns, audio), self.cfg.window_s)
        else:
            cuts = quiet_cut_points(audio, self.cfg.window_s)
            groups = [(a, b, None) for a, b in zip(cuts[:-1], cuts[1:])]
        segments: list[dict] = []
        words_by = None          # "wav2vec2" | "whisper" | None: who timed the words
        align_info: dict[str, Any] | None = {"status": "disabled"} if not align else None
        for w0, w1, spans in groups:
            stop()
            chunk = np.ascontiguousarray(audio[w0:w1], dtype=np.float32)
            with decoding(pipe, self.cfg.guards, prompt, temperature, stop):   # this request's, exclusively
                if language is None:
                    with clock("language"):
                        language = detect_language(pipe, chunk, spans[0][0] - w0 if spans else 0)
                aligner = None
                if align and (align_info is None or align_info["status"] == "aligned"):
                    aligner, align_info = self._aligner(language, align_info)
                # words are wanted with alignment asked for and whenever speakers are given per word; without a
                # wav2vec2 model for the language, Whisper times them itself (cross-attention)
                whisper_words = aligner is None and (align or order == "words")
                if spans is None:
                    with clock("vad"):
                        spans = pipe.speech_chunks(chunk, stop)
                else:
                    spans = [(a - w0, b - w0) for a, b in spans]
                with clock("asr"):
                    segs = asr_on_spans(pipe, chunk, spans, batch, language, stop, words=whisper_words,
                                        timings=clock.seconds)
            stop()
            if aligner is not None and segs:
                try:
                    with clock("align"):
                        segs = self._align(segs, chunk, language, stop, aligner)
                    words_by = "wav2vec2"
                except JobStopped:
                    raise
                except Exception as exc:  # noqa: BLE001 - degrade, never fail the transcription
                    log.exception("alignment failed")
                    align_info = {"status": "unavailable", "language": language,
                                  "reason": f"alignment failed ({type(exc).__name__}); timestamps are per segment"}
                    segs = [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segs]
            elif whisper_words:
                words_by = words_by or "whisper"
            else:
                segs = [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segs]
            offset = w0 / SAMPLE_RATE
            for s in segs:
                segments.append(offset_segment(s, offset))
            del chunk
            if hasattr(job, "progress"):   # an asynchronous job (stt_common.jobs) reports how far it got
                job.progress(w1 / SAMPLE_RATE)
        if "words" in clock.seconds:   # timed inside the ASR phase: shown apart
            clock.seconds["asr"] -= clock.seconds["words"]
        if align_info is None:
            align_info = {"status": "skipped", "language": language, "reason": "no speech to align"}
        if align_info["status"] != "aligned" and words_by == "whisper":
            align_info["words"] = "whisper"
            if "reason" in align_info:
                align_info["reason"] += "; words are timed by Whisper's own word timestamps (coarser)"
        if diarize:
            # diarizing set these above (and threshold where there are voices)
            assert turns is not None and order is not None and diar_info is not None
            with clock("speakers"):
                segments = self.label_speakers(segments, turns, order)
            if voices:
                assert threshold is not None
                with clock("voices"):
                    segments, naming = self.name_speakers(segments, turns, voices, threshold, audio, stop)
                diar_info["speakers"] = [naming.names.get(k, k) for k in turns.speakers]
                diar_info["speaker_threshold"] = threshold
                diar_info["known_speakers"] = naming.summary(voices)
        out: dict[str, Any] = {
            "segments": [public_segment(s, diarize) for s in segments],
            "language": language,
            "duration": round(duration, 3),
            "alignment": align_info,
        }
        if diar_info is not None:
            out["diarization"] = diar_info
        metrics = getattr(self.cache, "metrics", None)   # the server's (stt_common.Metrics); none in a worker
        if metrics is not None and hasattr(metrics, "phase_seconds"):
            metrics.startup("first_inference")
            stepped = any(k.startswith("diarize_") for k in clock.seconds)
            for k, v in clock.seconds.items():
                if not (k == "diarize" and stepped):   # the offline backend's steps are counted one by one
                    metrics.phase_seconds.labels(k).inc(v)
        asr_align = sum(clock.seconds.get(k, 0.0) for k in ("language", "vad", "asr", "words", "align"))
        out["timings"] = {"asr_align_seconds": round(asr_align, 3),
                          **{f"{k}_seconds": round(v, 3) for k, v in clock.seconds.items()}}
        return out

    def label_speakers(self, segments: list[dict], turns: SpeakerTurns, order: str) -> list[dict]:
        """Speakers per word and segment (:mod:`.speakers`); in the ``words`` order, segments cut where the speaker
        changes. ``turns.embeddings`` holds one embedding per speaker cluster, for naming the clusters."""
        return assign_speakers(segments, turns, per_word=order == "words")

    def _aligner(self, language: str, info: dict | None) -> tuple:
        """(the alignment model for ``language`` or None, the alignment info to report)."""
        try:
            model = self.load_align(language)
        except AlignUnavailable as exc:
            log.warning("alignment unavailable: %s", exc)
            return None, {"status": "unavailable", "language": language, "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001
            log.exception("alignment model failed to load")
            return None, {"status": "unavailable", "language": language,
                          "reason": f"alignment model failed to load ({type(exc).__name__})"}
        return model, {"status": "aligned", "language": language,
                       "model": self.align_model_name(language) or "default"}


class Phases:
    """Seconds spent per named phase of one run (a phase entered twice adds up)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t0
