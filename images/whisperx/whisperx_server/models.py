"""Which ASR model a request's ``model`` means, and loading it (torch set up once per process).

The loaded models live in stt_common's one model manager (:class:`stt_common.ModelCache`, the engine's
``cache``); this module only says what to load and how."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stt_common import check_text, public_name

from .errors import ModelNotFound, ServiceError, map_model_load_error

if TYPE_CHECKING:
    from stt_common.models import ModelCache

    from .engine import EngineConfig

log = logging.getLogger("whisperx_server")

# whisper sizes faster-whisper knows by short name (faster_whisper.utils.available_models())
SHORT_NAMES = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
               "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
               "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo")


def hf_offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE", "") or "").strip().lower() in ("1", "true", "yes", "on")


def empty_cuda_cache(_key: str = "") -> None:
    """After a model is unloaded: hand the GPU memory it held back (a no-op without CUDA)."""
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _is_within(path: Path, root: str) -> bool:
    try:
        path.relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


class ModelLoading:
    """The engine's ASR-model part (a mixin of :class:`~whisperx_server.engine.WhisperXEngine`): needs
    ``self.cfg`` and ``self.cache``."""

    cfg: EngineConfig      # set by WhisperXEngine (annotations only: the type checker's view of the engine)
    cache: ModelCache

    def _init_loading(self) -> None:
        self._torch_ready = False
        self._init_lock = threading.Lock()

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

    def resolve_model(self, name: str | None) -> str:
        """What to hand to whisperx.load_model for a request's ``model`` (or the default).

        Served without downloads: the default (the operator chose it) and folders of the model store; short
        names and hub ids are downloads, allowed only with ``allow_downloads`` (STT_ALLOW_MODEL_DOWNLOADS)."""
        check_text(name or "", "model")
        name = (name or "").strip() or self.cfg.default_model
        default = self.cfg.default_model
        downloads = self.cfg.allow_downloads or name == default
        if os.path.isabs(name) or name.startswith("."):
            path = Path(name).resolve()
            allowed = (name == default or str(path) == str(Path(default).resolve())
                       or bool(self.cfg.models_dir and _is_within(path, self.cfg.models_dir)))
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
        name = public_name(name)   # the default may be a host path: name its folder only
        if not path.is_dir():
            raise ModelNotFound(f"Model folder {name!r} does not exist.")
        if not (path / "model.bin").is_file():
            raise ModelNotFound(f"Folder {name!r} is not a CTranslate2 Whisper model (no model.bin).")
        return str(path)

    def load_asr(self, name: str | None = None):
        """The ASR pipeline for ``name`` (or the default), from the model manager; blocking (a worker thread)."""
        return self.cache.load(self.cache.key(name))

    def _load_asr(self, arch: str):
        """The model manager's loader: ``arch`` is what :meth:`resolve_model` returned."""
        self._setup_torch()
        from .asr import load_pipeline
        log.info("loading ASR model %s (%s, %s)", arch, self.cfg.device, self.cfg.compute_type)
        t0 = time.monotonic()
        try:
            pipe = load_pipeline(arch, device=self.cfg.device, compute_type=self.cfg.compute_type,
                                 threads=self.cfg.cpu_threads, local_files_only=hf_offline(), vad=self.cfg.vad)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - every load failure becomes a clear error
            raise map_model_load_error(exc, arch) from exc
        log.info("ASR model %s loaded in %.1fs", arch, time.monotonic() - t0)
        return pipe
