"""wav2vec2 word alignment: which model for a language, loading it into the model manager (kind
``align``), and aligning a window's segments. A failure degrades to segment times; the engine says why."""
from __future__ import annotations

import ast
import importlib.util
import os
import time
from typing import TYPE_CHECKING, Any, cast

from stt_common import public_name

from .models import hf_offline

if TYPE_CHECKING:
    from stt_common.models import ModelCache

    from .engine import EngineConfig


class AlignUnavailable(Exception):
    """No alignment for this language (no model known, not cached offline, download failed): the reason."""


def default_align_models() -> tuple[dict, dict]:
    """whisperx's default alignment models per language ({language: torchaudio bundle}, {language: hub id}), read
    from its alignment module's source (two literal dicts) without importing it."""
    global _DEFAULTS
    if _DEFAULTS is None:
        found: dict[str, dict] = {"DEFAULT_ALIGN_MODELS_TORCH": {}, "DEFAULT_ALIGN_MODELS_HF": {}}
        try:
            spec = importlib.util.find_spec("whisperx.alignment")
            # whisperx missing (no spec, no origin): fails into the except below, as meant
            tree = ast.parse(open(cast(Any, spec).origin, encoding="utf-8").read())
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                        getattr(node.targets[0], "id", None) in found:
                    found[cast(ast.Name, node.targets[0]).id] = ast.literal_eval(node.value)   # it has an id
        except Exception:  # noqa: BLE001 - whisperx missing or reshaped: the real load decides
            pass
        _DEFAULTS = (found["DEFAULT_ALIGN_MODELS_TORCH"], found["DEFAULT_ALIGN_MODELS_HF"])
    return _DEFAULTS


_DEFAULTS: tuple | None = None


def hf_cached(repo_id: str, cache_dir: str | None = None) -> bool:
    """Whether a hub repo's config is in the local HuggingFace cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir), str)
    except Exception:  # noqa: BLE001 - unknown layout: let the real load decide
        return True


def torchaudio_cached(bundle_name: str) -> bool:
    """Whether torchaudio's checkpoint for a pipeline bundle is already in the torch hub cache. An empty cache is
    told without importing torchaudio (a second on a cold start, for every offline host with no checkpoint)."""
    try:
        import torch
        checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
        if not os.path.isdir(checkpoints) or not any(f.endswith((".pth", ".pt")) for f in os.listdir(checkpoints)):
            return False
        import torchaudio
        bundle = getattr(torchaudio.pipelines, bundle_name)
        fname = os.path.basename(bundle._path)
        return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", fname))
    except Exception:  # noqa: BLE001 - unknown layout: let the real load decide
        return True


class Alignment:
    """The engine's alignment part (a mixin of :class:`~whisperx_server.engine.WhisperXEngine`): needs
    ``self.cfg``, ``self.cache`` and ``self._setup_torch``."""

    cfg: EngineConfig      # set by WhisperXEngine (annotations only: the type checker's view of the engine)
    cache: ModelCache

    if TYPE_CHECKING:
        def _setup_torch(self) -> None: ...   # ModelLoading's

    ALIGN_RETRY_S = 600.0   # a failed alignment-model load is not retried for this long

    def _init_alignment(self) -> None:
        self._align_failures: dict[str, tuple[float, str]] = {}

    def align_model_name(self, language: str) -> str | None:
        return self.cfg.align_models.get(language)

    def load_align(self, language: str):
        """(model, metadata) for ``language``; raises AlignUnavailable with the reason. A failure is
        remembered for ALIGN_RETRY_S so that requests do not each wait on an unreachable download."""
        name = self.align_model_name(language)
        key = f"align:{language}:{public_name(name) if name else 'default'}"
        failed = self._align_failures.get(key)
        if failed and time.monotonic() - failed[0] < self.ALIGN_RETRY_S:
            raise AlignUnavailable(failed[1])
        try:
            return self.cache.load(key, lambda: self._load_align(language, name), kind="align")
        except AlignUnavailable as exc:
            self._align_failures[key] = (time.monotonic(), str(exc))
            raise

    def _load_align(self, language: str, name: str | None):
        # the cheap checks first: importing whisperx's alignment module (transformers' wav2vec2, torchaudio) costs
        # seconds, worth paying only for a model that can load
        torch_models, hf_models = default_align_models()
        bundle = name or torch_models.get(language) or hf_models.get(language)
        if bundle is None and (torch_models or hf_models):
            raise AlignUnavailable(f"no wav2vec2 alignment model is known for language {language!r}; "
                                   f"set STT_ALIGN_MODELS={language}=<model> to add one")
        if bundle and hf_offline() and not os.path.isdir(bundle):
            if bundle in torch_models.values() and not torchaudio_cached(bundle):
                raise AlignUnavailable(f"the alignment model for {language!r} ({bundle}) is not cached and downloads "
                                       f"are off (HF_HUB_OFFLINE=1)")
            if bundle in hf_models.values() and not hf_cached(bundle, self.cfg.align_cache_dir):
                raise AlignUnavailable(f"the alignment model for {language!r} ({bundle}) is not cached and downloads "
                                       f"are off (HF_HUB_OFFLINE=1)")
        self._setup_torch()
        import whisperx
        try:
            return whisperx.load_align_model(language_code=language, device=self.cfg.device, model_name=name,
                                             model_dir=self.cfg.align_cache_dir,
                                             model_cache_only=hf_offline())
        except ValueError as exc:
            msg = str(exc)
            if "No default align-model" in msg:
                raise AlignUnavailable(f"no wav2vec2 alignment model is known for language {language!r}; "
                                       f"set STT_ALIGN_MODELS={language}=<model> to add one") from exc
            raise AlignUnavailable(f"the alignment model for {language!r} ({name or 'default'}) could not be "
                                   f"loaded from the HuggingFace hub or its cache") from exc
        except Exception as exc:  # URLError, OSError, ...: torchaudio download failed
            raise AlignUnavailable(f"the alignment model for {language!r} could not be downloaded "
                                   f"({type(exc).__name__}); it is cached after one successful download") from exc

    def _align(self, segments, audio, language, stop=None, model=None):
        """The segments with timed words; raises AlignUnavailable (or the library's error) when it cannot.
        ``stop`` is called after each segment (it raises to end the job); ``model``: :meth:`load_align`'s."""
        import whisperx

        from .punkt_data import ensure_punkt_tab
        model, meta = model or self.load_align(language)
        ensure_punkt_tab()
        out = whisperx.align(segments, model, meta, audio, self.cfg.device, return_char_alignments=False,
                             progress_callback=(lambda _pct: stop()) if stop is not None else None)
        return out["segments"]
