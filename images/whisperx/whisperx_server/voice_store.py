"""Enrolled voices, per caller, on disk: embeddings only, never audio.

One JSON file per caller in ``STT_SPEAKERS_DIR`` (the deploy mounts ``<speakers_dir>/<service>`` of the host there),
named by a hash of the caller's identity (the jobs' ``owner_of``: whatever identifies a caller for the jobs
identifies them here). A file holds each voice's name, when it was enrolled and changed, how many clips and seconds
of speech made it, and one unit vector per embedding model (``offline:resemblyzer``, ``pyannote:<model>``): the
backend that diarizes a request compares its clusters with the vector made by its own model.

Writes are atomic (a temp file, fsync, rename) under an exclusive lock per caller (flock: the API's processes and
threads take turns); reads need no lock. A caller holds at most ``max_voices`` voices.

Deleting a voice rewrites the caller's file without it (the last voice deleted removes the file). That is the only
place the server keeps it; jobs accepted before the deletion carry a copy of the vector in their parameters until
they finish and expire (job TTL) or are deleted, and backups taken before keep theirs until they rotate out
(docs/speakers.md).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from datetime import datetime, timezone
from typing import Any, List, cast

import numpy as np

from stt_common import APIError, bad_request, not_found

from .voices import Voice, mean_vector

VERSION = 1


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class VoiceStore:
    def __init__(self, folder: str | None, max_voices: int = 100):
        self.folder = folder or None
        self.max_voices = max_voices

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def _check(self) -> None:
        if not self.enabled:
            raise APIError(503, "Enrolled voices are not configured on this server (STT_SPEAKERS_DIR).",
                           type="server_error", code="speakers_unavailable")

    def _path(self, caller: str) -> str:
        digest = hashlib.sha256(f"caller:{caller}".encode()).hexdigest()[:32]
        return os.path.join(cast(str, self.folder), f"{digest}.json")   # after _check(): configured

    def _read(self, caller: str) -> dict:
        self._check()
        try:
            with open(self._path(caller), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"version": VERSION, "voices": {}}
        if not isinstance(data, dict) or not isinstance(data.get("voices"), dict):
            raise APIError(500, "The voice store of this caller is damaged.", code="speakers_damaged")
        return data

    @contextlib.contextmanager
    def _locked(self, caller: str):
        self._check()
        os.makedirs(cast(str, self.folder), mode=0o700, exist_ok=True)
        path = self._path(caller)
        fd = os.open(path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)   # releases the lock

    def _write(self, path: str, data: dict) -> None:
        if not data["voices"]:   # the empty lock file stays: another process may be waiting on it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        tmp = f"{path}.{os.getpid()}.part"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(cast(str, self.folder), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # ---------------------------------------------------------------- the API's operations

    @staticmethod
    def describe(v: dict) -> dict:
        return {"object": "speaker", "name": v["name"], "clips": v["clips"], "speech_seconds": v["speech_seconds"],
                "created_at": v["created_at"], "updated_at": v["updated_at"], "embedders": sorted(v["embeddings"])}

    def list(self, caller: str) -> list[dict]:
        voices = self._read(caller)["voices"]
        return [self.describe(voices[k]) for k in sorted(voices, key=str.casefold)]

    def _find(self, voices: dict, name: str) -> str | None:
        key = name.casefold()
        return next((k for k in voices if k.casefold() == key), None)

    def get(self, caller: str, name: str) -> dict:
        voices = self._read(caller)["voices"]
        k = self._find(voices, name)
        if k is None:
            raise not_found(f"No enrolled speaker {name!r}.", param="name", code="speaker_not_found")
        return self.describe(voices[k])

    def enroll(self, caller: str, name: str, embeddings: dict[str, tuple[np.ndarray, float]], clips: int,
               append: bool = False) -> tuple[dict, bool]:
        """Store a voice (``embeddings``: {embedder id: (vector, seconds of speech)}); with ``append``, add the clips to
        an existing voice of that name (each model's vector the mean weighted by seconds of speech). (The voice's
        description, True when it is new.)"""
        with self._locked(caller) as path:
            data = self._read(caller)
            voices = data["voices"]
            k = self._find(voices, name)
            now = _iso(time.time())
            seconds = max(s for _, s in embeddings.values())
            if k is not None and not append:
                raise APIError(409, f"A speaker named {voices[k]['name']!r} is already enrolled: send append=true to "
                                    f"add these clips to it, or delete it first.", param="name", code="speaker_exists")
            if k is None:
                if len(voices) >= self.max_voices:
                    raise bad_request(f"At most {self.max_voices} enrolled speakers per caller: delete one first.",
                                      param="name", code="too_many_speakers")
                entry: dict[str, Any] = {"name": name, "created_at": now, "clips": 0, "speech_seconds": 0.0,
                                         "embeddings": {}, "weights": {}}
                voices[name] = entry
            else:
                entry = voices[k]
            for model, (vec, secs) in embeddings.items():
                old = entry["embeddings"].get(model)
                parts = [(np.asarray(vec, np.float32), secs)]
                if old is not None:
                    parts.append((np.asarray(old, np.float32), float(entry["weights"].get(model) or 1.0)))
                entry["embeddings"][model] = [round(float(x), 6) for x in mean_vector(parts)]
                entry["weights"][model] = round(sum(w for _, w in parts), 3)
            entry["clips"] += clips
            entry["speech_seconds"] = round(entry["speech_seconds"] + seconds, 2)
            entry["updated_at"] = now
            self._write(path, data)
            return self.describe(entry), k is None

    def delete(self, caller: str, name: str) -> dict:
        with self._locked(caller) as path:
            data = self._read(caller)
            k = self._find(data["voices"], name)
            if k is None:
                raise not_found(f"No enrolled speaker {name!r}.", param="name", code="speaker_not_found")
            del data["voices"][k]
            self._write(path, data)
        return {"object": "speaker", "name": k, "deleted": True}

    def voices(self, caller: str, names: List[str], embedder: str) -> List[Voice]:   # List: `list` is a method here
        """The named voices as the diarizing backend's model (``embedder``) made them; 400 for a name the caller
        never enrolled, 409 for a voice enrolled while another backend diarized (enroll it again)."""
        if not names:
            return []
        stored = self._read(caller)["voices"]
        out = []
        for name in names:
            k = self._find(stored, name)
            if k is None:
                raise bad_request(f"No enrolled speaker {name!r}: enroll it with POST /v1/speakers first.",
                                  param="speakers", code="speaker_not_found")
            vec = stored[k]["embeddings"].get(embedder)
            if vec is None:
                raise APIError(409, f"Speaker {k!r} was enrolled with another diarization model "
                                    f"({', '.join(sorted(stored[k]['embeddings']))}); this server diarizes with "
                                    f"{embedder}: enroll the voice again.", param="speakers",
                               code="speaker_model_mismatch")
            out.append(Voice(k, np.asarray(vec, np.float32), embedder, source="enrolled"))
        return out
