"""The WhisperX pipeline behind the routes: batched ASR, wav2vec2 alignment, speaker labels.

Request handlers only see :meth:`WhisperXEngine.run` (audio in, a plain-dict result out) and
:class:`~whisperx_server.errors.ServiceError`. Heavy imports (torch, whisperx, pyannote) happen on
first use so that the module imports without them.

Memory on long audio: the audio is handled in windows of ``window_s`` seconds (cut at the quietest
moment near each boundary), so ASR and alignment work on one window at a time; only the compact
result (segments/words) grows with duration. Diarization needs the whole recording for consistent
speaker labels, so it receives the full 16 kHz float32 array (230 MB per hour), which the caller may
hand over as a disk-backed ``numpy.memmap``.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import (DEFAULT_DIARIZATION_MODEL, DiarizationUnavailable, InvalidRequest, ModelNotFound,
                     ModelUnavailable, ServiceError, map_diarization_load_error, token_malformed_error,
                     token_missing_error)

log = logging.getLogger("whisperx_server")

SAMPLE_RATE = 16000
# whisper sizes faster-whisper knows by short name (faster_whisper.utils.available_models())
SHORT_NAMES = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
               "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
               "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo")


@dataclass
class EngineConfig:
    default_model: str = "base"
    device: str = "cpu"
    compute_type: str = "int8"
    threads: int = 0                     # 0 = all cores
    batch_size: int = 8
    models_dir: str = "/models"
    model_ttl: float = 600.0             # idle seconds before a non-default model is unloaded; -1 never
    hf_token: str = ""
    diarization_backend: str = "auto"    # auto | pyannote | offline
    diarization_model: str = DEFAULT_DIARIZATION_MODEL
    align_models: dict[str, str] = field(default_factory=dict)   # language -> model name/folder
    align_cache_dir: str | None = None
    window_s: float = 1200.0             # ASR/alignment window on long audio
    allowed_model_roots: tuple[str, ...] = ()
    allow_downloads: bool = False        # short names / hub ids beyond the default and the store (opt-in)

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "EngineConfig":
        device = env.get("STT_DEVICE", "cpu") or "cpu"
        align_models = {}
        for item in (env.get("STT_ALIGN_MODELS", "") or "").split(","):
            if "=" in item:
                lang, name = item.split("=", 1)
                align_models[lang.strip()] = name.strip()
        cfg = cls(
            default_model=env.get("STT_MODEL") or "base",
            device=device,
            compute_type=env.get("STT_COMPUTE_TYPE") or ("float16" if device == "cuda" else "int8"),
            threads=int(env.get("STT_CPU_THREADS", "0") or 0),
            batch_size=int(env.get("STT_BATCH_SIZE", "8") or 8),
            models_dir=env.get("STT_MODELS_DIR", "/models") or "/models",
            model_ttl=float(env.get("STT_MODEL_TTL", "600") or 600),
            hf_token=(env.get("HF_TOKEN") or "").strip(),
            diarization_backend=(env.get("STT_DIARIZATION_BACKEND") or "auto").strip().lower(),
            diarization_model=env.get("STT_DIARIZATION_MODEL") or DEFAULT_DIARIZATION_MODEL,
            align_models=align_models,
            align_cache_dir=env.get("STT_ALIGN_MODEL_DIR") or None,
            window_s=float(env.get("STT_WINDOW_SECONDS", "1200") or 1200),
            allow_downloads=(env.get("STT_ALLOW_MODEL_DOWNLOADS") or "").strip().lower() in ("1", "true", "yes", "on"),
        )
        for k, v in overrides.items():
            setattr(cfg, k, v)
        if cfg.diarization_backend not in ("auto", "pyannote", "offline"):
            raise ValueError("STT_DIARIZATION_BACKEND must be auto, pyannote or offline")
        return cfg

    @property
    def cpu_threads(self) -> int:
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)


class _Slot:
    __slots__ = ("value", "last_used", "pinned")

    def __init__(self, value, pinned):
        self.value, self.last_used, self.pinned = value, time.monotonic(), pinned


class ModelCache:
    """Loaded models by key with an idle TTL; pinned entries (the default ASR model) never expire.
    Loads of one key are serialised; a failed load caches nothing."""

    def __init__(self, ttl: float, on_unload: Callable[[str], None] | None = None):
        self.ttl = ttl
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._on_unload = on_unload

    def get(self, key: str, loader: Callable[[], Any], pinned: bool = False):
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.last_used = time.monotonic()
                return slot.value
            klock = self._key_locks.setdefault(key, threading.Lock())
        with klock:
            with self._lock:
                slot = self._slots.get(key)
                if slot is not None:
                    slot.last_used = time.monotonic()
                    return slot.value
            value = loader()
            with self._lock:
                self._slots[key] = _Slot(value, pinned)
            return value

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def __contains__(self, key):
        with self._lock:
            return key in self._slots

    def sweep(self, now: float | None = None) -> list[str]:
        """Unload entries idle for longer than the TTL; returns their keys."""
        if self.ttl is None or self.ttl < 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = [k for k, s in self._slots.items() if not s.pinned and now - s.last_used > self.ttl]
            for k in gone:
                del self._slots[k]
        if gone:
            gc.collect()
            _empty_cuda_cache()
            for k in gone:
                log.info("unloaded idle model %s", k)
                if self._on_unload:
                    self._on_unload(k)
        return gone


def _empty_cuda_cache():
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _clean_float(x) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    return round(f, 3)


def quiet_cut_points(audio: np.ndarray, window_s: float, search_s: float = 5.0) -> list[int]:
    """Sample offsets splitting ``audio`` into windows of about ``window_s`` seconds, each cut at the
    quietest 100 ms within ``search_s`` seconds before the nominal boundary."""
    n = len(audio)
    win = int(window_s * SAMPLE_RATE)
    if win <= 0 or n <= win:
        return [0, n]
    cuts = [0]
    frame = SAMPLE_RATE // 10
    while n - cuts[-1] > win:
        nominal = cuts[-1] + win
        lo = max(cuts[-1] + frame, nominal - int(search_s * SAMPLE_RATE))
        seg = np.asarray(audio[lo:nominal], dtype=np.float32)
        k = len(seg) // frame
        if k >= 1:
            energy = np.square(seg[: k * frame].reshape(k, frame)).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * frame + frame // 2
        else:
            cut = nominal
        cuts.append(cut)
    cuts.append(n)
    return cuts


class WhisperXEngine:
    def __init__(self, config: EngineConfig):
        self.cfg = config
        self.cache = ModelCache(config.model_ttl)
        self._torch_ready = False
        self._init_lock = threading.Lock()
        self.last_diarization_backend: str | None = None
        self._align_failures: dict[str, tuple[float, str]] = {}
        self._diarize_failure: tuple | None = None

    # ---------------------------------------------------------------- setup
    def _setup_torch(self):
        if self._torch_ready:
            return
        with self._init_lock:
            if self._torch_ready:
                return
            os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            if self.cfg.device == "cpu":
                torch.set_num_threads(self.cfg.cpu_threads)
                try:
                    torch.set_num_interop_threads(max(1, min(2, self.cfg.cpu_threads)))
                except RuntimeError:
                    pass  # already set once in this process
            self._torch_ready = True

    # ---------------------------------------------------------------- ASR model
    def resolve_model(self, name: str | None) -> str:
        """What to hand to whisperx.load_model for a request's ``model`` (or the default).

        Served without downloads: the default (the operator chose it) and folders of the model store; short
        names and hub ids are downloads, allowed only with ``allow_downloads`` (STT_ALLOW_MODEL_DOWNLOADS)."""
        from stt_common import check_text
        check_text(name or "", "model")
        name = (name or "").strip() or self.cfg.default_model
        default = self.cfg.default_model
        downloads = self.cfg.allow_downloads or name == default
        roots = [self.cfg.models_dir, *self.cfg.allowed_model_roots]
        if os.path.isabs(name) or name.startswith("."):
            path = Path(name).resolve()
            allowed = (name == default or str(path) == str(Path(default).resolve())
                       or any(_is_within(path, r) for r in roots if r))
            if not allowed:
                raise ModelNotFound(f"Model folder {name!r} is outside the model store; put it there and pass "
                                    f"its name.")
            return self._check_folder(path, name)
        if "/" not in name and "\\" not in name and name not in ("..", "."):
            local = Path(self.cfg.models_dir) / name
            if local.is_dir():
                return self._check_folder(local, name)
        if name in SHORT_NAMES and downloads:
            return name
        if downloads and "/" in name and ".." not in name.split("/") and not name.startswith("/"):
            return name  # a hub repo id, e.g. Systran/faster-whisper-small
        if not self.cfg.allow_downloads:
            raise ModelNotFound(
                f"Unknown model {name!r}: this server serves its default model and the folders of its model "
                f"store ({', '.join(self.store_models()) or 'none'}); downloads of other models are off.")
        raise ModelNotFound(
            f"Unknown model {name!r}. Use one of {', '.join(SHORT_NAMES)}, a HuggingFace repo id of a "
            f"CTranslate2 Whisper model (e.g. Systran/faster-whisper-small), or the name of a folder in the "
            f"model store.")

    def store_models(self) -> list[str]:
        root = Path(self.cfg.models_dir)
        try:
            return sorted(p.name for p in root.iterdir() if (p / "model.bin").is_file())
        except OSError:
            return []

    @staticmethod
    def _check_folder(path: Path, name: str) -> str:
        from stt_common import public_name
        name = public_name(name)   # the default may be a host path: name its folder only
        if not path.is_dir():
            raise ModelNotFound(f"Model folder {name!r} does not exist.")
        if not (path / "model.bin").is_file():
            raise ModelNotFound(f"Folder {name!r} is not a CTranslate2 Whisper model (no model.bin).")
        return str(path)

    def load_asr(self, name: str | None = None):
        arch = self.resolve_model(name)
        pinned = arch == self.resolve_model(None)
        return self.cache.get(f"asr:{arch}", lambda: self._load_asr(arch), pinned=pinned)

    def load_asr_uncached(self, key: str):
        """Loader for stt_common's ModelCache: ``key`` is what :meth:`resolve_model` returned."""
        return self._load_asr(key)

    def _load_asr(self, arch: str):
        self._setup_torch()
        import whisperx
        log.info("loading ASR model %s (%s, %s)", arch, self.cfg.device, self.cfg.compute_type)
        t0 = time.monotonic()
        try:
            pipe = whisperx.load_model(arch, device=self.cfg.device, compute_type=self.cfg.compute_type,
                                       threads=self.cfg.cpu_threads,
                                       download_root=None, local_files_only=_hf_offline())
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - every load failure becomes a clear error
            raise _map_model_load_error(exc, arch) from exc
        log.info("ASR model %s loaded in %.1fs", arch, time.monotonic() - t0)
        return pipe

    @property
    def default_loaded(self) -> bool:
        try:
            return f"asr:{self.resolve_model(None)}" in self.cache
        except ServiceError:
            return False

    # ---------------------------------------------------------------- alignment
    def align_model_name(self, language: str) -> str | None:
        return self.cfg.align_models.get(language)

    DIARIZE_RETRY_S = 60.0  # a refused pyannote download is answered from memory for this long
    ALIGN_RETRY_S = 600.0   # a failed alignment-model load is not retried for this long

    def load_align(self, language: str):
        """(model, metadata) for ``language``; raises _AlignUnavailable with the reason. A failure is
        remembered for ALIGN_RETRY_S so that requests do not each wait on an unreachable download."""
        name = self.align_model_name(language)
        key = f"align:{language}:{name or 'default'}"
        failed = self._align_failures.get(key)
        if failed and time.monotonic() - failed[0] < self.ALIGN_RETRY_S:
            raise _AlignUnavailable(failed[1])
        try:
            return self.cache.get(key, lambda: self._load_align(language, name))
        except _AlignUnavailable as exc:
            self._align_failures[key] = (time.monotonic(), str(exc))
            raise

    def _load_align(self, language: str, name: str | None):
        self._setup_torch()
        import whisperx
        from whisperx.alignment import DEFAULT_ALIGN_MODELS_TORCH
        bundle = name or DEFAULT_ALIGN_MODELS_TORCH.get(language)
        if _hf_offline() and bundle in DEFAULT_ALIGN_MODELS_TORCH.values() and not _torchaudio_cached(bundle):
            raise _AlignUnavailable(f"the alignment model for {language!r} ({bundle}) is not cached and downloads "
                                    f"are off (HF_HUB_OFFLINE=1)")
        try:
            return whisperx.load_align_model(language_code=language, device=self.cfg.device, model_name=name,
                                             model_dir=self.cfg.align_cache_dir,
                                             model_cache_only=_hf_offline())
        except ValueError as exc:
            msg = str(exc)
            if "No default align-model" in msg:
                raise _AlignUnavailable(f"no wav2vec2 alignment model is known for language {language!r}; "
                                        f"set STT_ALIGN_MODELS={language}=<model> to add one") from exc
            raise _AlignUnavailable(f"the alignment model for {language!r} ({name or 'default'}) could not be "
                                    f"loaded from the HuggingFace hub or its cache") from exc
        except Exception as exc:  # URLError, OSError, ...: torchaudio download failed
            raise _AlignUnavailable(f"the alignment model for {language!r} could not be downloaded "
                                    f"({type(exc).__name__}); it is cached after one successful download") from exc

    def _align(self, segments, audio, language):
        """Aligned segments, or None with a reason when alignment is unavailable."""
        from .punkt_data import ensure_punkt_tab
        import whisperx
        model, meta = self.load_align(language)
        ensure_punkt_tab()
        out = whisperx.align(segments, model, meta, audio, self.cfg.device, return_char_alignments=False)
        return out["segments"]

    # ---------------------------------------------------------------- diarization
    def diarization_backend(self) -> str:
        b = self.cfg.diarization_backend
        if b == "auto":
            return "pyannote" if self.cfg.hf_token else "offline"
        return b

    def _offline_diarizer(self):
        def load():
            try:
                from diarize_offline import OfflineDiarizer
            except ImportError as exc:
                raise DiarizationUnavailable(
                    f"The offline diarization backend is not installed ({exc}); set HF_TOKEN to use pyannote.",
                    code="diarization_unavailable") from exc
            return OfflineDiarizer(device=self.cfg.device, threads=self.cfg.cpu_threads)
        return self.cache.get("diarize:offline", load)

    def _pyannote_diarizer(self):
        token = self.cfg.hf_token
        model = self.cfg.diarization_model
        if not token:
            raise token_missing_error(model)
        if not token.startswith("hf_"):
            raise token_malformed_error()

        key = f"diarize:pyannote:{model}"
        failed = self._diarize_failure
        if failed and failed[0] == key and time.monotonic() - failed[1] < self.DIARIZE_RETRY_S:
            raise failed[2]

        def load():
            self._setup_torch()
            try:
                from whisperx.diarize import DiarizationPipeline
                return DiarizationPipeline(model_name=model, token=token, device=self.cfg.device)
            except Exception as exc:  # noqa: BLE001
                raise map_diarization_load_error(exc, token_set=True, model=model) from exc
        try:
            return self.cache.get(key, load)
        except ServiceError as err:
            # a hub refusal does not change within seconds: answer it again without a new download attempt
            self._diarize_failure = (key, time.monotonic(), err)
            raise

    def check_diarization(self):
        """Raise the configuration error diarization would meet (missing/invalid token, gated model)."""
        if self.diarization_backend() == "pyannote":
            self._pyannote_diarizer()
        else:
            self._offline_diarizer()

    def diarize(self, audio: np.ndarray, *, num_speakers=None, min_speakers=None, max_speakers=None):
        backend = self.diarization_backend()
        diarizer = self._pyannote_diarizer() if backend == "pyannote" else self._offline_diarizer()
        self.last_diarization_backend = backend
        try:
            df = diarizer(audio, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("diarization failed")
            raise ServiceError(f"Diarization failed ({type(exc).__name__}).", code="diarization_failed") from exc
        return df, backend

    # ---------------------------------------------------------------- the pipeline
    def run(self, audio: np.ndarray, *, asr=None, model: str | None = None, language: str | None = None,
            align: bool = True, diarize: bool = False, num_speakers: int | None = None,
            min_speakers: int | None = None, max_speakers: int | None = None,
            batch_size: int | None = None, job=None) -> dict:
        """``job`` (stt_common.Job): checked between windows and after each ASR batch; stops the run once
        cancelled (client gone, time limit)."""
        check_speaker_hints(num_speakers, min_speakers, max_speakers)
        stop = job.check if job is not None else (lambda: None)
        language = (language or "").strip().lower() or None
        if diarize:  # fail fast on a configuration error, before minutes of ASR
            self.check_diarization()
        pipe = asr if asr is not None else self.load_asr(model)
        multilingual = bool(pipe.model.model.is_multilingual)
        if not multilingual:
            if language not in (None, "en"):
                raise InvalidRequest(f"Model {model or self.cfg.default_model!r} is English-only; "
                                     f"it cannot transcribe language {language!r}.", param="language")
            language = "en"
        duration = len(audio) / SAMPLE_RATE
        batch = batch_size or self.cfg.batch_size
        diar_info = None
        df = None
        if diarize:
            # diarize first: ASR then runs on speaker turns, so a segment never spans two speakers, even
            # where no alignment model gives word times
            t1 = time.monotonic()
            df, backend = self.diarize(audio, num_speakers=num_speakers, min_speakers=min_speakers,
                                       max_speakers=max_speakers)
            speakers = sorted({str(x) for x in df["speaker"]}) if len(df) else []
            diar_info = {"backend": backend, "speakers": speakers, "seconds": round(time.monotonic() - t1, 3)}
            groups = group_spans(speaker_turn_spans(df, audio), self.cfg.window_s)
        else:
            cuts = quiet_cut_points(audio, self.cfg.window_s)
            groups = [(a, b, None) for a, b in zip(cuts[:-1], cuts[1:])]
        t0 = time.monotonic()
        segments: list[dict] = []
        align_info = {"status": "disabled"} if not align else None
        for w0, w1, spans in groups:
            stop()
            chunk = np.ascontiguousarray(audio[w0:w1], dtype=np.float32)
            if language is None:
                language = self._detect_language(pipe, chunk, spans[0][0] - w0 if spans else 0)
            if spans is None:
                res = pipe.transcribe(chunk, batch_size=batch, language=language,
                                      progress_callback=lambda _pct: stop())   # after each batch
                segs = res["segments"]
            else:
                segs = asr_on_spans(pipe, chunk, [(a - w0, b - w0) for a, b in spans], batch, language, stop)
            stop()
            segs = [s for s in segs if s.get("text", "").strip()]
            if align and segs and (align_info is None or align_info["status"] == "aligned"):
                try:
                    segs = self._align(segs, chunk, language)
                    align_info = {"status": "aligned", "language": language,
                                  "model": self.align_model_name(language) or "default"}
                except _AlignUnavailable as exc:
                    align_info = {"status": "unavailable", "language": language,
                                  "reason": f"{exc}; timestamps are per segment, words are not timed"}
                    log.warning("alignment unavailable: %s", exc)
                except Exception as exc:  # noqa: BLE001 - degrade, never fail the transcription
                    log.exception("alignment failed")
                    align_info = {"status": "unavailable", "language": language,
                                  "reason": f"alignment failed ({type(exc).__name__}); timestamps are per segment"}
            if align_info is None or align_info["status"] != "aligned":
                segs = [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segs]
            offset = w0 / SAMPLE_RATE
            for s in segs:
                segments.append(_offset_segment(s, offset))
            del chunk
            if hasattr(job, "progress"):   # an asynchronous job (stt_common.jobs) reports how far it got
                job.progress(w1 / SAMPLE_RATE)
        if align_info is None:
            align_info = {"status": "skipped", "language": language, "reason": "no speech to align"}
        asr_s = time.monotonic() - t0
        result: dict[str, Any] = {"segments": segments, "language": language}
        if diarize:
            import whisperx
            result = whisperx.assign_word_speakers(df, result, fill_nearest=True)
        out = {
            "segments": [_public_segment(s, diarize) for s in result["segments"]],
            "language": language,
            "duration": round(duration, 3),
            "alignment": align_info,
        }
        if diar_info is not None:
            out["diarization"] = diar_info
        out["timings"] = {"asr_align_seconds": round(asr_s, 3)}
        return out

    @staticmethod
    def _detect_language(pipe, chunk, first_speech: int = 0) -> str:
        chunk = chunk[max(0, first_speech):]  # detect where someone speaks
        return pipe.detect_language(np.ascontiguousarray(chunk[: 30 * SAMPLE_RATE]))

    def sweep(self):
        return self.cache.sweep()


class _AlignUnavailable(Exception):
    pass


def speaker_turn_spans(df, audio, max_s: float = 28.0, merge_gap: float = 0.6, pad: float = 0.15) -> list:
    """(start_sample, end_sample) spans to transcribe: the diarizer's turns, consecutive turns of one
    speaker merged across short gaps, turns longer than ``max_s`` cut at quiet points (whisper reads
    30 s at a time)."""
    n = len(audio)
    rows = sorted((float(r.start), float(r.end), str(r.speaker)) for r in df.itertuples()) if df is not None else []
    turns: list[list] = []
    for st, en, spk in rows:
        if en <= st:
            continue
        if turns and turns[-1][2] == spk and st - turns[-1][1] <= merge_gap:
            turns[-1][1] = max(turns[-1][1], en)
        else:
            turns.append([st, en, spk])
    spans = []
    for st, en, _ in turns:
        a = max(0, int((st - pad) * SAMPLE_RATE))
        b = min(n, int((en + pad) * SAMPLE_RATE))
        if b - a < SAMPLE_RATE // 10:
            continue
        cuts = quiet_cut_points(audio[a:b], max_s, search_s=min(5.0, max_s / 3))
        spans += [(a + c0, a + c1) for c0, c1 in zip(cuts[:-1], cuts[1:]) if c1 > c0]
    return spans


def group_spans(spans: list, window_s: float) -> list:
    """Spans grouped into windows of at most ``window_s`` seconds: [(w0, w1, [spans])]."""
    groups: list = []
    limit = int(window_s * SAMPLE_RATE)
    for a, b in spans:
        if groups and b - groups[-1][0] <= limit:
            g = groups[-1]
            groups[-1] = (g[0], max(g[1], b), g[2] + [(a, b)])
        else:
            groups.append((a, b, [(a, b)]))
    return groups


def asr_on_spans(pipe, audio: np.ndarray, spans: list, batch_size: int, language: str, stop=None) -> list[dict]:
    """whisperx's batched ASR over given spans (instead of its own VAD chunks): one segment per span."""
    from faster_whisper.tokenizer import Tokenizer
    if not spans:
        return []
    tokenizer = pipe.tokenizer
    if tokenizer is None or tokenizer.language_code != language or tokenizer.task != "transcribe":
        pipe.tokenizer = Tokenizer(pipe.model.hf_tokenizer, pipe.model.model.is_multilingual,
                                   task="transcribe", language=language)
    try:
        data = ({"inputs": np.ascontiguousarray(audio[a:b])} for a, b in spans)
        out = []
        for (a, b), res in zip(spans, pipe(data, batch_size=batch_size, num_workers=0)):
            if stop is not None:
                stop()
            text = res["text"]
            if batch_size in (0, 1, None) and isinstance(text, list):
                text = text[0]
            out.append({"text": text, "start": round(a / SAMPLE_RATE, 3), "end": round(b / SAMPLE_RATE, 3)})
        return out
    finally:
        if pipe.preset_language is None:
            pipe.tokenizer = None


def check_speaker_hints(num_speakers, min_speakers, max_speakers):
    for name, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if v is not None and (not isinstance(v, int) or v < 1 or v > 64):
            raise InvalidRequest(f"{name} must be a whole number between 1 and 64.", param=name)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise InvalidRequest("min_speakers must not exceed max_speakers.", param="min_speakers")
    if num_speakers is not None:
        if (min_speakers is not None and num_speakers < min_speakers) or \
           (max_speakers is not None and num_speakers > max_speakers):
            raise InvalidRequest("num_speakers must lie between min_speakers and max_speakers.", param="num_speakers")


def _offset_segment(s: dict, offset: float) -> dict:
    seg = dict(s)
    for k in ("start", "end"):
        if _clean_float(seg.get(k)) is not None:
            seg[k] = float(seg[k]) + offset
    if "words" in seg:
        words = []
        for w in seg["words"]:
            w = dict(w)
            for k in ("start", "end"):
                if _clean_float(w.get(k)) is not None:
                    w[k] = float(w[k]) + offset
            words.append(w)
        seg["words"] = words
    return seg


def _public_segment(s: dict, diarized: bool) -> dict:
    seg = {"start": _clean_float(s.get("start")), "end": _clean_float(s.get("end")),
           "text": str(s.get("text", "")).strip()}
    if diarized:
        seg["speaker"] = s.get("speaker")
    words = []
    for w in s.get("words") or []:
        word = {"word": str(w.get("word", "")), "start": _clean_float(w.get("start")),
                "end": _clean_float(w.get("end")), "score": _clean_float(w.get("score"))}
        if diarized:
            word["speaker"] = w.get("speaker", seg.get("speaker"))
        words.append(word)
    seg["words"] = words
    return seg


def _is_within(path: Path, root: str) -> bool:
    try:
        path.relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def _torchaudio_cached(bundle_name: str) -> bool:
    """Whether torchaudio's checkpoint for a pipeline bundle is already in the torch hub cache."""
    try:
        import torch
        import torchaudio
        bundle = getattr(torchaudio.pipelines, bundle_name)
        fname = os.path.basename(bundle._path)
        return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", fname))
    except Exception:  # noqa: BLE001 - unknown layout: let the real load decide
        return True


def _hf_offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE", "") or "").strip().lower() in ("1", "true", "yes", "on")


def _map_model_load_error(exc: BaseException, arch: str) -> ServiceError:
    from stt_common import public_name
    arch = public_name(arch)   # a folder's name, never the host path
    try:
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError)
    except ImportError:  # pragma: no cover
        GatedRepoError = HfHubHTTPError = LocalEntryNotFoundError = RepositoryNotFoundError = ()  # type: ignore
    if isinstance(exc, GatedRepoError):
        return ModelUnavailable(f"Model {arch!r} is gated on the HuggingFace hub; accept its conditions and set HF_TOKEN.")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(f"Model {arch!r} does not exist on the HuggingFace hub.")
    if isinstance(exc, LocalEntryNotFoundError):
        return ModelUnavailable(f"Model {arch!r} is not in the local cache and the HuggingFace hub cannot be reached; "
                                f"put the model in the model store or allow one download.")
    if isinstance(exc, HfHubHTTPError):
        return ModelUnavailable(f"The HuggingFace hub failed while downloading model {arch!r}; retry later.")
    if isinstance(exc, (OSError, ConnectionError)):
        return ModelUnavailable(f"Model {arch!r} could not be loaded ({type(exc).__name__}): not cached here and "
                                f"not downloadable.")
    if isinstance(exc, (RuntimeError, ValueError)) and "model" in str(exc).lower():
        return ModelNotFound(f"Model {arch!r} could not be loaded as a CTranslate2 Whisper model.")
    return ServiceError(f"Model {arch!r} could not be loaded ({type(exc).__name__}).", code="model_load_failed")
