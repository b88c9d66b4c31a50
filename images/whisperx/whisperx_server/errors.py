"""Errors the WhisperX server answers with, and the mapping from the libraries' exceptions.

Every failure a user can meet is one :class:`ServiceError`: an HTTP status, an OpenAI-style
``type``/``code``/``param`` and a message that names the cause and the fix. Handlers never let a
library exception (and its stack trace) reach the client.

:func:`map_model_load_error` does the same for an ASR model that cannot be loaded (gated, missing, not
cached offline, not a CTranslate2 model).

The runbook's troubleshooting ("401 Unauthorized or 403 Forbidden during diarization: HF_TOKEN
invalid or pyannote models not accepted") is :func:`map_diarization_load_error`: it reads the real
exception types of ``huggingface_hub`` (``GatedRepoError``, ``RepositoryNotFoundError``,
``LocalEntryNotFoundError``, ``HfHubHTTPError`` with status 401/403) and says which token to set or
which model pages to accept.

HuggingFace token problems are the *operator's* to fix, so they answer 503 (service side), never
401/403: a client must not mistake them for a wrong API key.
"""
from __future__ import annotations

import re

from stt_common.errors import APIError

DEFAULT_DIARIZATION_MODEL = "pyannote/speaker-diarization-community-1"

# the gated model pages a pipeline needs accepted, by pipeline
GATED_PAGES = {
    "pyannote/speaker-diarization-community-1": ["pyannote/speaker-diarization-community-1"],
    "pyannote/speaker-diarization-3.1": ["pyannote/speaker-diarization-3.1", "pyannote/segmentation-3.0"],
    "pyannote/speaker-diarization-3.0": ["pyannote/speaker-diarization-3.0", "pyannote/segmentation-3.0"],
    "pyannote/speaker-diarization": ["pyannote/speaker-diarization", "pyannote/segmentation"],
}


class ServiceError(APIError):
    """An error answered to the client as ``{"error": {"message", "type", "param", "code"}}`` (the shared
    ``stt_common`` error handler renders it)."""

    status_code = 500
    type = "server_error"
    code = "internal_error"
    param: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 status_code: int | None = None, headers: dict | None = None):
        cls = type(self)
        super().__init__(status_code or cls.status_code, message, type=cls.type,
                         param=param if param is not None else cls.param,
                         code=code if code is not None else cls.code, headers=headers)
        self.status_code = self.status


class InvalidRequest(ServiceError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ModelNotFound(InvalidRequest):
    status_code = 404            # as stt_common's model cache answers for faster
    code = "model_not_found"
    param = "model"


class ModelUnavailable(ServiceError):
    """A valid model name whose weights cannot be had (hub unreachable, not in the cache)."""
    status_code = 503
    code = "model_unavailable"
    param = "model"


class DiarizationUnavailable(ServiceError):
    """Diarization asked for but not possible with this server's configuration."""
    status_code = 503
    code = "diarization_unavailable"
    param = "diarize"


def _model_pages(model: str, exc: BaseException | None = None) -> list[str]:
    pages = list(GATED_PAGES.get(model, [model]))
    # the repo the hub actually refused, when the exception says (e.g. a sub-model of the pipeline)
    repo = _repo_from_exception(exc) if exc is not None else None
    if repo and repo not in pages:
        pages.append(repo)
    return [f"https://huggingface.co/{p}" for p in pages]


_REPO_RE = re.compile(r"huggingface\.co/(?:api/models/)?([\w.-]+/[\w.-]+?)(?:/resolve/|/revision/|/tree/|$|\s|\)|')")


def _repo_from_exception(exc: BaseException) -> str | None:
    urls = []
    resp = getattr(exc, "response", None)
    if resp is not None and getattr(resp, "url", None):
        urls.append(str(resp.url))
    urls.append(str(exc))
    for text in urls:
        m = _REPO_RE.search(text)
        if m:
            return m.group(1)
    return None


def _status_of(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def token_missing_error(model: str = DEFAULT_DIARIZATION_MODEL, offline_reason: str | None = None) -> DiarizationUnavailable:
    pages = " and ".join(_model_pages(model))
    msg = (f"Diarization with pyannote needs a HuggingFace token, and HF_TOKEN is not set. Fix: create a "
           f"read token at https://huggingface.co/settings/tokens, accept the user conditions at {pages}, "
           f"then set HF_TOKEN in the service's environment (.env) and restart it.")
    if offline_reason:
        msg += f" The offline diarization backend cannot stand in: {offline_reason}."
    return DiarizationUnavailable(msg, code="hf_token_missing")


def token_malformed_error() -> DiarizationUnavailable:
    return DiarizationUnavailable(
        "HF_TOKEN is set but is not a HuggingFace access token (they start with 'hf_'); pyannote ignores "
        "it and the gated diarization model cannot be downloaded. Fix: put a read token from "
        "https://huggingface.co/settings/tokens in HF_TOKEN and restart the service.",
        code="hf_token_invalid")


def map_diarization_load_error(exc: BaseException, *, token_set: bool,
                               model: str = DEFAULT_DIARIZATION_MODEL) -> ServiceError:
    """Turn what loading the pyannote pipeline raised into an error that says what to do."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    pages = " and ".join(_model_pages(model, exc))
    if isinstance(exc, GatedRepoError):
        return DiarizationUnavailable(
            f"The HuggingFace token is valid but its account has not accepted the user conditions of the "
            f"gated diarization model. Fix: sign in with that account, open {pages}, click 'Agree and "
            f"access repository', then retry (no restart needed). A fine-grained token also needs "
            f"'Read access to contents of all public gated repos you can access'.",
            code="hf_model_gated")
    if isinstance(exc, LocalEntryNotFoundError):
        if not token_set:
            return token_missing_error(model)
        return DiarizationUnavailable(
            f"The diarization model {model} is not in the local HuggingFace cache and the hub cannot be "
            f"reached (offline mode or no network). Fix: let the service reach huggingface.co once (unset "
            f"HF_HUB_OFFLINE) so it downloads the model into its cache volume (HF_HOME), or pre-fill that "
            f"volume; or use STT_DIARIZATION_BACKEND=offline.",
            code="hf_hub_unreachable")
    if isinstance(exc, RepositoryNotFoundError):
        status = _status_of(exc)
        if not token_set:
            return token_missing_error(model)
        if status == 401:
            return _invalid_token(pages)
        return DiarizationUnavailable(
            f"The HuggingFace hub answers that {model} does not exist or that this token may not see it. "
            f"Fix: check STT_DIARIZATION_MODEL, and that the HF_TOKEN account accepted the conditions at {pages}.",
            code="hf_model_not_found")
    if isinstance(exc, HfHubHTTPError):
        status = _status_of(exc)
        if status == 401:
            return _invalid_token(pages) if token_set else token_missing_error(model)
        if status == 403:
            return DiarizationUnavailable(
                f"The HuggingFace hub refused the download (403 Forbidden): the token lacks access to the gated "
                f"model. Fix: accept the user conditions at {pages} with the token's account, and give a "
                f"fine-grained token read access to public gated repos.",
                code="hf_model_gated")
        return DiarizationUnavailable(
            f"The HuggingFace hub failed while downloading {model} (HTTP {status}). Retry later; the model is "
            f"cached after the first successful download.", code="hf_hub_error")
    if isinstance(exc, (OSError, ConnectionError)):
        return DiarizationUnavailable(
            f"The diarization model {model} could not be downloaded ({type(exc).__name__}). Fix: let the "
            f"service reach huggingface.co once or pre-fill its HF cache volume; or use "
            f"STT_DIARIZATION_BACKEND=offline.", code="hf_hub_unreachable")
    return DiarizationUnavailable(
        f"The diarization model {model} could not be loaded ({type(exc).__name__}); see the service log.",
        code="diarization_load_failed")


def _invalid_token(pages: str) -> DiarizationUnavailable:
    return DiarizationUnavailable(
        f"The HuggingFace hub answered 401 Unauthorized: HF_TOKEN is invalid, expired or revoked (or "
        f"STT_DIARIZATION_MODEL names a repo that does not exist). "
        f"Fix: create a new read token at https://huggingface.co/settings/tokens, make sure its account "
        f"accepted the conditions at {pages}, update HF_TOKEN in the service's .env and restart it.",
        code="hf_token_invalid")


def map_model_load_error(exc: BaseException, arch: str) -> ServiceError:
    """Turn what loading an ASR model raised into an error that names the model (its folder's name, never the
    host path) and the cause."""
    from stt_common import public_name
    arch = public_name(arch)
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
