"""Uploads decoded to a disk-backed float32 array, so a long recording does not sit in RAM.

``decode_to_memmap`` streams the file through stt_common's PyAV decoder one minute at a time into a
raw float32 file next to the upload and maps it read-only: the engine then slices windows out of
it, and only the pages in use are resident. Bad input raises stt_common's 400 ``invalid_audio``.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from stt_common.uploads import iter_audio_chunks

CHUNK_SECONDS = 60.0
# what a closed DecodedAudio holds: no samples (the file and its mapping are gone)
_CLOSED = np.empty(0, dtype=np.float32)


class DecodedAudio:
    def __init__(self, array: np.ndarray, path: str | None):
        self.array, self.path = array, path

    @property
    def seconds(self) -> float:
        return len(self.array) / 16000

    def close(self) -> None:
        arr, self.array = self.array, _CLOSED
        mm = getattr(arr, "_mmap", None)
        del arr
        if mm is not None:
            try:
                mm.close()
            except (BufferError, ValueError):
                pass  # still referenced somewhere: the unlink below frees the disk when it goes
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_to_memmap(src: str, tmp_dir: str | None = None, max_seconds: float | None = None) -> DecodedAudio:
    """Decode into a float32 file; stops with stt_common's 413 ``audio_too_long`` once past ``max_seconds``
    (4 bytes x 16000 per second: a 4 h limit bounds the file at 0.9 GB)."""
    fd, path = tempfile.mkstemp(prefix="whisperx-audio-", suffix=".f32", dir=tmp_dir)
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in iter_audio_chunks(src, CHUNK_SECONDS, max_seconds):
                f.write(np.ascontiguousarray(chunk, dtype=np.float32).tobytes())
                n += len(chunk)
        arr = np.memmap(path, dtype=np.float32, mode="r", shape=(n,)) if n else np.zeros(0, np.float32)
        return DecodedAudio(arr, path)
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
