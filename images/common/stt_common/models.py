"""One model manager per service: every model the service loads (the ASR models a request names, and the
helpers a pipeline needs: alignment, diarization) lives here under a key, with one idle-TTL reaper, one cap
on the request-selected models and one list for /health and the metrics.

- Request-selected models (``kind="asr"``): keys come from ``resolve`` (a request's ``model`` field),
  loaded by ``loader``; ``get``/``use`` from the event loop share concurrent loads and time out, ``load``
  blocks in a worker thread. The default is never unloaded; ``max_loaded`` caps how many are loaded.
- Helper models (any other ``kind``): ``load(key, loader, kind=...)`` from a worker thread; loaded on first
  use in that thread, one load per key at a time, unloaded after ``ttl`` idle seconds like the others.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .errors import APIError, not_found, unavailable
from .text import redact_paths

log = logging.getLogger("stt_common.models")


@dataclass
class _Entry:
    model: Any
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0
    kind: str = "asr"


ASR = "asr"   # the kind of the models a request selects (the cache's own loader)


OTHER = "other"   # the metric label every model but the configured ones shares


def public_name(key) -> str:
    """What a client or a metric may see of a load key (a str or a path): a folder's last part, never the
    host path."""
    key = os.fspath(key)
    return os.path.basename(key.rstrip("/")) or key if os.path.isabs(key) else key


class ModelCache:
    def __init__(self, loader: Callable[[str], Any], default: str, ttl: float = 600, load_timeout: float = 300,
                 metrics=None, resolve: Optional[Callable[[Optional[str]], str]] = None,
                 on_unload: Optional[Callable[[str], None]] = None, max_loaded: int = 0,
                 label: Optional[Callable[[str], str]] = None, retry_backoff: tuple = (2.0, 60.0)):
        self.loader, self.ttl, self.load_timeout = loader, ttl, load_timeout
        self.metrics, self._resolve, self._on_unload = metrics, resolve, on_unload
        self.max_loaded = max(0, int(max_loaded))   # 0 = no cap
        self._label = label
        self.retry_backoff = retry_backoff
        self.default = default
        self._default_key: Optional[str] = None
        self._models: Dict[str, _Entry] = {}
        self._loading: Dict[str, asyncio.Future] = {}
        self._lock = threading.RLock()                   # _models is shared with worker threads (load)
        self._key_locks: Dict[str, threading.Lock] = {}  # one blocking load per key at a time
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="model-load")
        self._reaper: Optional[asyncio.Task] = None

    @property
    def default_key(self) -> str:
        """The default's load key; resolved again until that works (its folder may appear later)."""
        if self._default_key is None:
            try:
                self._default_key = self._resolve(None) if self._resolve is not None else self.default
            except APIError:
                return self.default
        return self._default_key

    def key(self, name: Optional[str]) -> str:
        if self._resolve is not None:
            return self._resolve(name)
        return name or self.default_key

    def label(self, key: str) -> str:
        """A bounded metric label: configured models (the default, the model store) by name, others share one."""
        if self._label is not None:
            return self._label(key)
        if key == self.default_key or os.path.isabs(key):
            return public_name(key)
        return OTHER

    # -- queries ---------------------------------------------------------------
    def is_loaded(self, name: Optional[str] = None) -> bool:
        return (self.default_key if name is None else self.key(name)) in self._models

    def loaded(self) -> List[str]:
        """Every loaded model's key, request-selected and helper models alike."""
        with self._lock:
            return list(self._models)

    # -- loading -----------------------------------------------------------------
    async def _load(self, key: str) -> Any:
        t0 = time.monotonic()
        try:
            model = await asyncio.get_running_loop().run_in_executor(self._pool, self.loader, key)
        except APIError:
            self._count(key, "error")
            raise
        except Exception as e:  # noqa: BLE001 - reported to the caller as a clear error
            self._count(key, "error")
            log.warning("model %s could not be loaded: %s: %s", key, type(e).__name__, e)
            msg = f"Model '{public_name(key)}' could not be loaded: {type(e).__name__}: {redact_paths(str(e))}"
            raise not_found(msg, param="model", code="model_not_found") from None
        finally:
            self._loading.pop(key, None)
        self._store(key, model, ASR, t0)
        return model

    def _store(self, key: str, model: Any, kind: str, t0: float) -> _Entry:
        with self._lock:
            e = self._models[key] = _Entry(model, kind=kind)
            n = len(self._models)
        self._count(key, "ok", kind)
        if self.metrics is not None:
            self.metrics.model_load_seconds.labels(self._metric_label(key, kind)).observe(time.monotonic() - t0)
            self.metrics.models_loaded.set(n)
        log.info("loaded model %s in %.1fs", key, time.monotonic() - t0)
        return e

    def _metric_label(self, key: str, kind: str) -> str:
        return self.label(key) if kind == ASR else kind   # helper models by kind: a bounded label

    def _count(self, key: str, result: str, kind: str = ASR) -> None:
        if self.metrics is not None:
            self.metrics.model_loads.labels(self._metric_label(key, kind), result).inc()

    def load(self, key: str, loader: Optional[Callable[[], Any]] = None, kind: str = ASR) -> Any:
        """Blocking, from a worker thread (never the event loop): the model under ``key``, loaded on first use
        by ``loader()`` (by default the cache's loader, for a key that :meth:`key` returned) in the calling
        thread. One load per key at a time; a failed load caches nothing and raises what the loader raised."""
        e = self._models.get(key)
        if e is None:
            with self._key_locks.setdefault(key, threading.Lock()):
                e = self._models.get(key)
                if e is None:
                    if kind == ASR:
                        with self._lock:
                            self._make_room(key)
                    t0 = time.monotonic()
                    try:
                        model = loader() if loader is not None else self.loader(key)
                    except BaseException:
                        self._count(key, "error", kind)
                        raise
                    e = self._store(key, model, kind, t0)
        e.last_used = time.monotonic()
        return e.model

    async def _get_entry(self, key: str) -> _Entry:
        e = self._models.get(key)
        if e is not None:
            return e
        fut = self._loading.get(key)
        if fut is None:
            with self._lock:
                self._make_room(key)
            fut = asyncio.ensure_future(self._load(key))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "never retrieved"
            self._loading[key] = fut
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=self.load_timeout)
        except asyncio.TimeoutError:
            raise unavailable(f"Model '{key}' did not load within {self.load_timeout:g} s; it keeps loading in "
                              f"the background, retry later.", retry_after=30, code="model_load_timeout") from None
        return self._models[key]

    async def get(self, name: Optional[str] = None) -> Any:
        e = await self._get_entry(self.key(name))
        e.last_used = time.monotonic()
        return e.model

    @asynccontextmanager
    async def use(self, name: Optional[str] = None):
        e = await self._get_entry(self.key(name))
        e.users += 1
        e.last_used = time.monotonic()
        try:
            yield e.model
        finally:
            e.users -= 1
            e.last_used = time.monotonic()

    def _make_room(self, key: str) -> None:
        """Before loading `key`: unload the least recently used idle non-default model if at the cap, or 503."""
        if not self.max_loaded or key == self.default_key:
            return
        d = self.default_key
        reserved = 0 if (d in self._models or d in self._loading) else 1   # the default always keeps its place
        while self._n_asr() + len(self._loading) + reserved >= self.max_loaded:
            idle = [(e.last_used, k) for k, e in self._models.items()
                    if k != self.default_key and e.users == 0 and e.kind == ASR]
            if not idle:
                raise unavailable(f"{self._n_asr() + len(self._loading)} models are loaded and in use (the "
                                  f"limit is {self.max_loaded}); retry later or use the default model.",
                                  retry_after=30, code="too_many_models")
            self._drop(min(idle)[1])

    def _n_asr(self) -> int:
        """How many request-selected models are loaded (helper models do not count toward ``max_loaded``)."""
        return sum(1 for e in self._models.values() if e.kind == ASR)

    def _drop(self, k: str) -> None:
        with self._lock:
            e = self._models.pop(k, None)
            n = len(self._models)
        if e is None:
            return
        del e
        gc.collect()
        if self._on_unload is not None:   # after the collection, e.g. to hand freed GPU memory back
            try:
                self._on_unload(k)
            except Exception:  # noqa: BLE001
                log.exception("unload hook failed for %s", k)
        log.info("unloaded model %s", k)
        if self.metrics is not None:
            self.metrics.models_loaded.set(n)

    async def load_default(self) -> Any:
        return await self.get(None)

    async def keep_loading_default(self, on_error: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        """Load the default model, retrying with exponential backoff until it works (never a permanent 503):
        `on_error(message)` after each failure, `on_ok()` once loaded."""
        delay, cap = self.retry_backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.load_default()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported on /health, then retried
                msg = redact_paths(getattr(e, "message", None) or f"{type(e).__name__}: {e}")
                log.error("default model failed to load (attempt %d, next in %.0f s): %s", attempt, delay, msg)
                on_error(f"default model failed to load (attempt {attempt}, retrying in {delay:.0f} s): {msg}")
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                continue
            on_ok()
            return

    # -- unloading ---------------------------------------------------------------
    def reap(self, now: Optional[float] = None) -> List[str]:
        """Unload idle models but the default, helper models included; returns their keys."""
        if self.ttl is None or self.ttl < 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = [k for k, e in self._models.items()
                    if k != self.default_key and e.users == 0 and now - e.last_used >= self.ttl]
        for k in gone:
            self._drop(k)   # also sets the models_loaded gauge
        return gone

    def start_reaper(self, interval: Optional[float] = None) -> None:
        if self.ttl is None or self.ttl < 0 or self._reaper is not None:
            return
        every = interval if interval is not None else max(1.0, min(30.0, self.ttl / 4))

        async def loop():
            while True:
                await asyncio.sleep(every)
                self.reap()

        self._reaper = asyncio.ensure_future(loop())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        with self._lock:
            self._models.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- local model folders ---------------------------------------------------------

def find_local_model(name: str, models_dir: Optional[str]) -> Optional[str]:
    """A folder for `name` under `models_dir` (name, its last part, or an HF cache layout), else None."""
    if not models_dir or not name or not os.path.isdir(models_dir):
        return None
    if os.path.isabs(name) or ".." in name.split("/"):
        return None
    root = os.path.realpath(models_dir)
    candidates = [os.path.join(root, name), os.path.join(root, name.rsplit("/", 1)[-1])]
    if "/" in name:
        snaps = os.path.join(root, "models--" + name.replace("/", "--"), "snapshots")
        if os.path.isdir(snaps):
            candidates += sorted((os.path.join(snaps, s) for s in os.listdir(snaps)), reverse=True)
    for c in candidates:
        real = os.path.realpath(c)
        if (real == root or real.startswith(root + os.sep)) and os.path.isdir(real) and real != root:
            return real
    return None


def list_local_models(models_dir: Optional[str]) -> List[str]:
    if not models_dir or not os.path.isdir(models_dir):
        return []
    out = []
    for n in sorted(os.listdir(models_dir)):
        p = os.path.join(models_dir, n)
        if not os.path.isdir(p) or n.startswith("."):
            continue
        if n.startswith("models--"):
            out.append(n[len("models--"):].replace("--", "/"))
        else:
            out.append(n)
    return out
