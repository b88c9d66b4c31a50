"""Uploads: multipart parsed as it arrives, the file streamed to a temp file with a size cap, PyAV decoding."""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Generator, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from .errors import APIError, bad_request, too_large
from .text import check_text

SAMPLE_RATE = 16000
MAX_PARTS = 32                     # multipart parts per request, the file included (STT_MAX_FORM_PARTS)
MAX_FORM_BYTES = 64 * 1024         # all non-file parts of a request together (STT_MAX_FORM_BYTES)
_BODY_SLACK = 1024 * 1024          # multipart framing and fields on top of the file
_HEADER_LIMIT = 8 * 1024           # one part's headers


@dataclass(frozen=True)
class BulkField:
    """Form fields that carry data (audio clips as data URLs) rather than settings: they get their own bound, at
    most ``max_parts`` parts of at most ``max_part_bytes`` each, instead of sharing the small budget of the other
    non-file fields (``max_form_bytes``), which stays closed to a flood of fields. ``names``: the field's names
    (``x[]`` and ``x`` are one field)."""
    names: Tuple[str, ...]
    max_parts: int
    max_part_bytes: int

    @property
    def max_bytes(self) -> int:
        return self.max_parts * self.max_part_bytes


@dataclass
class UploadedFile:
    path: str
    filename: Optional[str]
    content_type: Optional[str]
    size: int = 0


class Upload:
    """One received multipart request: the fields and the file on disk (``files``: every file part where a
    route takes several, in the order sent; ``path`` and friends describe the first)."""

    source_url: Optional[str]   # set by stt_common.audio_url's receive: the audio's URL, when sent as one

    def __init__(self, tmp_dir: Optional[str]):
        self.tmp_dir = tmp_dir
        fd, self.path = tempfile.mkstemp(prefix="stt-upload-", dir=tmp_dir)
        self._fh = os.fdopen(fd, "wb")
        self.filename: Optional[str] = None
        self.content_type: Optional[str] = None
        self.size = 0
        self.has_file = False
        self.fields: Dict[str, List[str]] = {}
        self.files: List[UploadedFile] = []
        self._extra: List[UploadedFile] = []

    def next_file(self, filename: Optional[str], content_type: Optional[str]) -> UploadedFile:
        """Open the temp file of the next file part (the first one is ``path``)."""
        if not self.files:
            f = UploadedFile(self.path, filename, content_type)
            self.filename, self.content_type = filename, content_type
        else:
            self.close_file()
            fd, path = tempfile.mkstemp(prefix="stt-upload-", dir=self.tmp_dir)
            self._fh = os.fdopen(fd, "wb")
            f = UploadedFile(path, filename, content_type)
            self._extra.append(f)
        self.files.append(f)
        return f

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        v = self.fields.get(name)
        return v[-1] if v else default

    def close_file(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def cleanup(self) -> None:
        """Remove the temp files; safe to call more than once. Also when closing one fails (a full disk refuses the
        last buffered bytes): nothing half-written stays behind."""
        try:
            self.close_file()
        except OSError:
            pass
        finally:
            for path in [self.path] + [f.path for f in self._extra]:
                if path:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            self.path_removed = True

    def __repr__(self) -> str:
        return f"Upload(filename={self.filename!r}, size={self.size}, fields={list(self.fields)})"


class _Receiver:
    def __init__(self, up: Upload, max_bytes: int, file_field: str, max_parts: int = MAX_PARTS,
                 max_form_bytes: int = MAX_FORM_BYTES, max_files: int = 1, bulk: Sequence[BulkField] = ()):
        self.up, self.max_bytes, self.file_field = up, max_bytes, file_field
        self.max_parts, self.max_form_bytes, self.max_files = max_parts, max_form_bytes, max_files
        self.parts = 0
        self.form_bytes = 0         # every non-file byte: values and part headers, repeated names included
        self.bulk = {name: b for b in bulk for name in b.names}
        self.bulk_parts: Dict[Tuple[str, ...], int] = {}
        self.in_bulk: Optional[BulkField] = None
        self.current: Optional[UploadedFile] = None
        self.hname = b""
        self.hvalue = b""
        self.headers: Dict[bytes, bytes] = {}
        self.name: Optional[str] = None
        self.is_file = False
        self.buf = bytearray()
        self.error: Optional[APIError] = None

    def on_part_begin(self):
        self.parts += 1
        if self.parts > self.max_parts:
            raise _Abort(bad_request(f"Too many multipart parts: at most {self.max_parts} per request.",
                                     code="too_many_fields"))
        self.headers = {}
        self.name, self.is_file, self.buf, self.in_bulk = None, False, bytearray(), None

    def _count(self, n: int) -> None:
        self.form_bytes += n
        if self.form_bytes > self.max_form_bytes:
            raise _Abort(APIError(413, f"Too much form data: the non-file fields may hold at most "
                                       f"{self.max_form_bytes // 1024} KiB together.", code="form_too_large"))

    def on_header_field(self, data, start, end):
        self._count(end - start)
        self.hname += data[start:end]

    def on_header_value(self, data, start, end):
        self._count(end - start)
        self.hvalue += data[start:end]
        if len(self.hvalue) > _HEADER_LIMIT:
            raise _Abort(bad_request("Malformed multipart part: header too long.", code="invalid_multipart"))

    def on_header_end(self):
        self.headers[self.hname.lower()] = self.hvalue
        self.hname, self.hvalue = b"", b""

    def on_headers_finished(self):
        disp, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        if disp != b"form-data" or name is None:
            raise _Abort(bad_request("Malformed multipart part: missing Content-Disposition name.",
                                     code="invalid_multipart"))
        self.name = check_text(name.decode("utf-8", "replace"), "field name")
        if self.name == self.file_field:
            if len(self.up.files) >= self.max_files:
                raise _Abort(bad_request(f"Only one '{self.file_field}' may be sent." if self.max_files == 1 else
                                         f"At most {self.max_files} '{self.file_field}' parts may be sent.",
                                         param=self.file_field))
            self.is_file = True
            self.up.has_file = True
            fn = opts.get(b"filename")
            ct = self.headers.get(b"content-type")
            self.current = self.up.next_file(fn.decode("utf-8", "replace") if fn is not None else None,
                                             ct.decode("latin-1") if ct else None)
        elif self.name in self.bulk:
            b = self.in_bulk = self.bulk[self.name]
            n = self.bulk_parts[b.names] = self.bulk_parts.get(b.names, 0) + 1
            if n > b.max_parts:
                raise _Abort(bad_request(f"Too many '{b.names[0]}' values: at most {b.max_parts} per request.",
                                         param=b.names[0], code="too_many_fields"))

    def on_part_data(self, data, start, end):
        n = end - start
        if self.is_file:
            self.up.size += n      # all file parts together
            self.current.size += n
            if self.up.size > self.max_bytes:
                raise _Abort(too_large(f"File too large: the limit is {self.max_bytes // (1024 * 1024)} MB."))
            self.up._fh.write(data[start:end])
        elif self.in_bulk is not None:
            b = self.in_bulk
            if len(self.buf) + n > b.max_part_bytes:
                raise _Abort(APIError(413, f"A '{b.names[0]}' value is too large: at most "
                                           f"{b.max_part_bytes // 1024} KiB each.", param=b.names[0],
                                      code="field_too_large"))
            self.buf += data[start:end]
        else:
            self._count(n)
            self.buf += data[start:end]

    def on_part_end(self):
        if not self.is_file and self.name is not None:
            value = check_text(self.buf.decode("utf-8", "replace"), self.name, multiline=True)
            self.up.fields.setdefault(self.name, []).append(value)


@asynccontextmanager
async def _nogate():
    yield


def upload_limits(settings) -> dict:
    """receive_upload's limits from STTSettings."""
    return {"max_bytes": settings.max_upload_bytes, "tmp_dir": settings.tmp_dir,
            "max_parts": settings.max_form_parts, "max_form_bytes": settings.max_form_bytes}


def _body_limit(max_bytes: int, bulk: Sequence[BulkField]) -> int:
    return max_bytes + _BODY_SLACK + sum(b.max_bytes for b in bulk)


class _Abort(Exception):
    def __init__(self, err: APIError):
        self.err = err


@asynccontextmanager
async def receive_upload(request: Request, max_bytes: int, file_field: str = "file",
                         tmp_dir: Optional[str] = None, require_file: bool = True, max_parts: int = MAX_PARTS,
                         max_form_bytes: int = MAX_FORM_BYTES, gate=None, max_files: int = 1,
                         bulk: Sequence[BulkField] = ()) -> AsyncIterator[Upload]:
    """`gate`: an async context manager held while the body is received (InferenceExecutor.receiving()).
    `max_files`: file parts accepted (`Upload.files`), `max_bytes` bounding them together. `bulk`: fields with
    their own bound (BulkField)."""
    body_limit = _body_limit(max_bytes, bulk)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise bad_request("Expected a multipart/form-data body with the audio in the 'file' field.",
                          param=file_field, code="invalid_content_type")
    boundary = params.get(b"boundary")
    if not boundary:
        raise bad_request("multipart/form-data without a boundary.", code="invalid_multipart")
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > body_limit:
        raise too_large(f"File too large: the limit is {max_bytes // (1024 * 1024)} MB.")

    up = Upload(tmp_dir)
    try:
        rec = _Receiver(up, max_bytes, file_field, max_parts, max_form_bytes, max_files, bulk)
        callbacks = {k: getattr(rec, k) for k in (
            "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
            "on_header_end", "on_headers_finished")}
        parser = MultipartParser(boundary, cast("MultipartCallbacks", callbacks))
        total = 0
        try:
            async with (gate if gate is not None else _nogate()):
                async for chunk in request.stream():
                    if chunk:
                        total += len(chunk)
                        if total > body_limit:
                            raise _Abort(too_large(f"File too large: the limit is {max_bytes // (1024 * 1024)} MB."))
                        parser.write(chunk)
                parser.finalize()
        except _Abort as a:
            raise a.err from None
        except APIError:
            raise
        except MultipartParseError as e:
            raise bad_request(f"Malformed multipart body: {e}", code="invalid_multipart") from None
        except ClientDisconnect:
            raise APIError(400, "Client disconnected during upload.", code="client_disconnected") from None
        up.close_file()
        if require_file and (not up.has_file or up.size == 0):
            raise bad_request(f"'{file_field}' is required: send the audio as a non-empty multipart file.",
                              param=file_field, code="missing_file" if not up.has_file else "empty_file")
        yield up
    finally:
        up.cleanup()


# ---------------------------------------------------------------- decoding

def _open(src):
    import av
    try:
        return av.open(src, mode="r", metadata_errors="ignore")
    except Exception as e:  # noqa: BLE001 - any failure to open is a bad upload
        raise bad_request(f"Could not decode the audio file: {_short(e)}", param="file", code="invalid_audio") from None


def audio_duration(src) -> Optional[float]:
    """The length the file's header states (None when it states none, e.g. a raw stream); 400 if unreadable."""
    container = _open(src)
    try:
        if not container.streams.audio:
            raise bad_request("The file holds no audio stream.", param="file", code="invalid_audio")
        return container.duration / 1_000_000 if container.duration else None
    finally:
        container.close()


def _short(e: Exception) -> str:
    """FFmpeg's reason without the errno and the server-side temp file name."""
    s = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return re.sub(r"\S*stt-upload-\S*", "", str(s)).strip(" :'")[:200]


def audio_too_long(max_seconds: float) -> APIError:
    return APIError(413, f"Audio too long: at most {_hms(max_seconds)} per request; split the recording.",
                    param="file", code="audio_too_long")


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s} s"


def _iter_frames(src, max_seconds: Optional[float] = None) -> Iterator[np.ndarray]:
    """Yield float32 mono 16 kHz arrays, one per decoded frame group; 413 once past `max_seconds`."""
    import av
    container = _open(src)
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    seconds = cast(float, max_seconds)   # the limit's, read only where limit is set
    done = 0
    try:
        if not container.streams.audio:
            raise bad_request("The file holds no audio stream.", param="file", code="invalid_audio")
        stream = container.streams.audio[0]
        if limit is not None and container.duration and container.duration / 1_000_000 > seconds + 1:
            raise audio_too_long(seconds)  # the header says so: refuse before decoding anything
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1)
                    done += a.size
                    if limit is not None and done > limit:   # headers lie: the count of decoded samples decides
                        raise audio_too_long(seconds)
                    yield a
        except av.error.InvalidDataError:
            pass  # a damaged tail: keep what decoded (faster-whisper does the same)
        for out in resampler.resample(None):
            a = out.to_ndarray().reshape(-1)
            done += a.size
            if limit is not None and done > limit:
                raise audio_too_long(seconds)
            yield a
    except APIError:
        raise
    except Exception as e:  # noqa: BLE001 - FFmpeg errors on user data are 400s
        raise bad_request(f"Could not decode the audio file: {_short(e)}", param="file", code="invalid_audio") from None
    finally:
        container.close()


def decode_audio_sync(src: Union[str, os.PathLike, "object"], max_seconds: Optional[float] = None) -> np.ndarray:
    """Decode any PyAV-readable file to 16 kHz mono float32 (no gc.collect(), unlike faster-whisper)."""
    parts = list(_iter_frames(src, max_seconds))
    if not parts:
        raise bad_request("The file holds no decodable audio.", param="file", code="invalid_audio")
    audio = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if audio.size == 0:
        raise bad_request("The file holds no decodable audio.", param="file", code="invalid_audio")
    return np.ascontiguousarray(audio, dtype=np.float32)


async def decode_audio(src, max_seconds: Optional[float] = None) -> np.ndarray:
    return await run_in_threadpool(decode_audio_sync, src, max_seconds)


def iter_audio_chunks(src, seconds: float, max_seconds: Optional[float] = None) -> Generator[np.ndarray, None, None]:
    """Consecutive float32 chunks of `seconds` (the last one shorter): memory bounded by one chunk."""
    n = max(1, int(seconds * SAMPLE_RATE))
    buf: List[np.ndarray] = []
    have = 0
    any_audio = False
    for part in _iter_frames(src, max_seconds):
        buf.append(part)
        have += part.size
        while have >= n:
            joined = np.concatenate(buf) if len(buf) > 1 else buf[0]
            any_audio = True
            yield np.ascontiguousarray(joined[:n])
            rest = joined[n:]
            buf, have = ([rest] if rest.size else []), rest.size
    if have:
        any_audio = True
        yield np.ascontiguousarray(np.concatenate(buf) if len(buf) > 1 else buf[0])
    if not any_audio:
        raise bad_request("The file holds no decodable audio.", param="file", code="invalid_audio")
