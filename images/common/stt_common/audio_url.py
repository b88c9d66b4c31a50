"""Audio by URL: ``file_url`` in place of the ``file`` part of a transcription form, fetched by the server.

Why ``file_url``: it sits in the same multipart form as ``file``, whose place it takes (one of the two), and says
what it is; Deepgram calls the field ``url`` (in a JSON body), AssemblyAI ``audio_url``, OpenAI has none.

Every fetch goes through :mod:`stt_common.outbound`, the guard the webhooks use: http(s) only, the name resolved
once and every address checked (loopback, private, link-local, shared, reserved ... refused unless the operator
allows them: ``STT_URL_ALLOW_PRIVATE``, ``STT_URL_ALLOW_NETWORKS``), the connection pinned to the checked
address, no redirect followed, one deadline for all of it (``STT_URL_TIMEOUT``), and the body capped while it
streams at the upload limit (``STT_MAX_UPLOAD_MB``). The status and the content type are checked before the body is
read. Decoding then applies the same duration limit as to an upload.

Errors (OpenAI's shape, ``param`` ``file_url``): 400 ``invalid_url`` (not http(s), malformed), 400
``url_forbidden`` (an address the server may not reach); 422 ``url_unreachable`` (no such host, refused, no
answer), ``url_timeout`` (not all there within ``STT_URL_TIMEOUT``), ``url_redirect``, ``url_fetch_failed`` (the
server answered an error), ``url_too_large``, ``url_unsupported_type`` (HTML, JSON, text ...), ``url_empty``.
Operators' view: docs/audio-url.md.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Mapping, Optional
from urllib.parse import urlsplit

from . import outbound
from .errors import APIError, bad_request

FIELD = "file_url"
# what a recording may be served as: audio, the video containers recordings come in, or bytes without a claim
_TYPES = ("audio/", "video/")
_GENERIC = {"", "application/octet-stream", "binary/octet-stream", "application/ogg", "application/mp4",
            "application/x-matroska", "application/x-mpegurl"}


def url_policy(settings) -> outbound.AddressPolicy:
    return outbound.policy_from(getattr(settings, "url_allow_private", False),
                                getattr(settings, "url_allow_networks", ""))


def _unprocessable(message: str, code: str) -> APIError:
    return APIError(422, message, param=FIELD, code=code)


def refusal(e: outbound.OutboundError, max_bytes: int) -> APIError:
    """An outbound failure as the client's error."""
    if e.reason == "invalid_url":
        return bad_request(f"Invalid file_url: {e.message}.", param=FIELD, code="invalid_url")
    if e.reason == "forbidden_address":
        return bad_request(f"file_url may not point there: {e.message}. The server fetches audio from public "
                           "addresses only.", param=FIELD, code="url_forbidden")
    if e.reason == "redirect":
        return _unprocessable(f"file_url was not fetched: {e.message}. Send the final URL.", "url_redirect")
    if e.reason == "too_large":
        return _unprocessable(f"The audio at file_url is larger than the upload limit ({_mb(max_bytes)}).",
                              "url_too_large")
    if e.reason == "timeout":
        return _unprocessable(f"file_url was not fetched in time: {e.message} (the download's limit).",
                              "url_timeout")
    return _unprocessable(f"file_url could not be fetched: {e.message}.", "url_unreachable")


def check_url(url: str, settings) -> str:
    """A URL worth queueing (a job fetches it later, in its worker): well formed, and not a literal address the
    server may not reach (names are resolved and checked when fetched)."""
    url = (url or "").strip()
    try:
        outbound.check_address(outbound.parse_url(url), url_policy(settings))
    except outbound.OutboundError as e:
        raise refusal(e, settings.max_upload_bytes) from None
    return url


def answer_check(max_bytes: int):
    """What a download's answer must be before its body is read: 200, a media type a recording comes as, and no
    Content-Length above the cap (a body without one, or lying, is cut at the cap while it streams)."""
    def check(status: int, reason: str, headers: Mapping[str, str]) -> None:
        if status != 200:
            raise _unprocessable(f"The server of file_url answered {status} {reason}".strip() + ".",
                                 "url_fetch_failed")
        lower = {k.lower(): v for k, v in headers.items()}
        media = lower.get("content-type", "").split(";", 1)[0].strip().lower()
        if not (media.startswith(_TYPES) or media in _GENERIC):
            raise _unprocessable(f"file_url serves {media!r}, not audio: link the recording itself (audio/*, "
                                 "video/*).", "url_unsupported_type")
        length = lower.get("content-length", "").strip()
        if length.isdigit() and int(length) > max_bytes:
            raise _unprocessable(f"The audio at file_url is larger than the upload limit ({_mb(max_bytes)}).",
                                 "url_too_large")
    return check


def _mb(n: int) -> str:
    return f"{n // (1024 * 1024)} MB"


def fetch(url: str, dest: str, settings, max_bytes: Optional[int] = None) -> int:
    """Download ``url`` into the file ``dest`` under the guard's rules; the bytes written. Raises the client's
    APIError (see the module's docstring); ``dest`` is left empty on failure."""
    cap = int(max_bytes or settings.max_upload_bytes)
    try:
        with open(dest, "wb") as sink:
            resp = outbound.request(url, sink=sink, max_bytes=cap, deadline_s=float(settings.url_timeout),
                                    policy=url_policy(settings), check_headers=answer_check(cap),
                                    headers={"Accept": "audio/*, video/*;q=0.9, application/octet-stream;q=0.5"},
                                    user_agent="whisper-platform (file_url)")
    except outbound.OutboundError as e:
        _truncate(dest)
        raise refusal(e, cap) from None
    except APIError:
        _truncate(dest)
        raise
    if resp.length == 0:
        raise _unprocessable("file_url answered an empty body.", "url_empty")
    return resp.length


def fetch_for_job(url: str, audio: str, settings) -> Optional[int]:
    """A job's download, in its worker: into ``audio`` (the file its submission left empty) through a ``.part``
    file renamed when complete, so a retry after a worker died mid-download starts over instead of decoding half a
    file. None when the audio is there already (an earlier attempt fetched it); else the bytes fetched."""
    from .dependencies import check_free_space

    if os.path.exists(audio) and os.path.getsize(audio) > 0:
        return None
    cap = int(settings.max_upload_bytes)
    check_free_space(os.path.dirname(audio) or ".", cap, int(getattr(settings, "jobs_min_free_mb", 0)) << 20)
    part = audio + ".part"
    try:
        n = fetch(url, part, settings, cap)
        os.replace(part, audio)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return n


def _truncate(path: str) -> None:
    try:
        os.truncate(path, 0)
    except OSError:
        pass


@asynccontextmanager
async def receive_audio(request, settings, *, fetch_now: bool = True, gate=None, **limits):
    """:func:`stt_common.uploads.receive_upload` with ``file_url`` accepted in place of the ``file`` part. With
    ``fetch_now`` the URL is fetched into the upload's temp file before the block runs (a synchronous request: the
    upload's limits apply, and ``gate()``, a fresh context manager per call such as ``executor.receiving``, is held
    while the body arrives and again while the URL is fetched); without, it is only checked and left in
    ``up.source_url`` (a job: its worker fetches it)."""
    from starlette.concurrency import run_in_threadpool

    from .uploads import receive_upload

    async with receive_upload(request, require_file=False, gate=gate() if gate else None, **limits) as up:
        url = (up.fields.get(FIELD) or [""])[-1].strip()
        up.source_url = None
        if url and up.has_file and up.size > 0:
            raise bad_request("Send the audio either as 'file' or as 'file_url', not both.", param=FIELD,
                              code="invalid_value")
        if not url:
            if not up.has_file or up.size == 0:
                raise bad_request("'file' is required: send the audio as a non-empty multipart file, or its URL in "
                                  "'file_url'.", param="file", code="missing_file" if not up.has_file else "empty_file")
        else:
            url = check_url(url, settings)
            up.filename = up.filename or (os.path.basename(urlsplit(url).path) or None)
            if fetch_now:
                async with (gate() if gate else _nothing()):
                    up.size = await run_in_threadpool(fetch, url, up.path, settings, limits.get("max_bytes"))
            up.source_url = url
        yield up


@asynccontextmanager
async def _nothing():
    yield
