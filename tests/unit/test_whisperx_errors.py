"""images/whisperx: HuggingFace failures become errors that name the cause and the fix.

The hub is out of reach on the test bed, so a real 401/403/gated answer cannot be provoked. These tests
build the exceptions the way huggingface_hub itself does - its own ``hf_raise_for_status`` classifies a
hub-shaped HTTP response (status + ``X-Error-Code`` header) into ``GatedRepoError``,
``RepositoryNotFoundError`` or ``HfHubHTTPError`` - and ``LocalEntryNotFoundError`` is raised for real by
``hf_hub_download(local_files_only=True)`` on an empty cache. Only the HTTP answer is made up.
"""
import pytest

hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub is needed for its exception types")
pytest.importorskip("stt_common.errors", reason="stt_common (images/common) is needed for the error shape")

from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,  # noqa: E402
                                    RepositoryNotFoundError)
from huggingface_hub.utils import hf_raise_for_status  # noqa: E402

from whisperx_server.errors import (DiarizationUnavailable, map_diarization_load_error,  # noqa: E402
                                    token_malformed_error, token_missing_error)

MODEL = "pyannote/speaker-diarization-community-1"
URL = f"https://huggingface.co/{MODEL}/resolve/main/config.yaml"


def _response(status, error_code=None, message="", url=URL):
    headers = {"X-Error-Code": error_code} if error_code else {}
    if error_code or message:
        headers["X-Error-Message"] = message or error_code
    major = int(hub.__version__.split(".")[0])
    if major < 1:  # huggingface_hub 0.x (what whisperx 3.8 pins) speaks requests
        import requests
        r = requests.Response()
        r.status_code = status
        r.url = url
        r.headers.update(headers)
        r._content = b"{}"
        r.request = requests.Request("GET", url).prepare()
        return r
    import importlib
    httpx = importlib.import_module("httpx2") if importlib.util.find_spec("httpx2") else importlib.import_module("httpx")
    return httpx.Response(status, headers=headers, content=b"{}", request=httpx.Request("GET", url))


def hub_error(status, error_code=None, message=""):
    """The exception huggingface_hub raises for this HTTP answer from the hub."""
    with pytest.raises(HfHubHTTPError) as info:
        hf_raise_for_status(_response(status, error_code, message))
    return info.value


def test_gated_model_names_the_pages_to_accept():
    exc = hub_error(403, "GatedRepo", "Access to model pyannote/speaker-diarization-community-1 is restricted")
    assert isinstance(exc, GatedRepoError)
    err = map_diarization_load_error(exc, token_set=True, model=MODEL)
    assert isinstance(err, DiarizationUnavailable)
    assert err.status == 503 and err.code == "hf_model_gated"
    assert f"https://huggingface.co/{MODEL}" in err.message
    assert "Agree and access repository" in err.message
    assert "Traceback" not in err.message


def test_gated_legacy_pipeline_lists_segmentation_too():
    exc = hub_error(403, "GatedRepo")
    err = map_diarization_load_error(exc, token_set=True, model="pyannote/speaker-diarization-3.1")
    assert "https://huggingface.co/pyannote/segmentation-3.0" in err.message
    assert "https://huggingface.co/pyannote/speaker-diarization-3.1" in err.message


def test_invalid_token_401():
    exc = hub_error(401, "RepoNotFound", "Invalid credentials in Authorization header")
    assert isinstance(exc, RepositoryNotFoundError)
    err = map_diarization_load_error(exc, token_set=True, model=MODEL)
    assert err.code == "hf_token_invalid"
    assert "401" in err.message and "settings/tokens" in err.message and "HF_TOKEN" in err.message
    # the operator's problem: never a 401/403 the client would take for a wrong API key
    assert err.status == 503


def test_plain_401_without_error_code():
    exc = hub_error(401)
    assert isinstance(exc, HfHubHTTPError)
    err = map_diarization_load_error(exc, token_set=True, model=MODEL)
    assert err.code == "hf_token_invalid"


def test_403_forbidden_is_access_not_accepted():
    exc = hub_error(403)
    err = map_diarization_load_error(exc, token_set=True, model=MODEL)
    assert err.code == "hf_model_gated" and MODEL in err.message


def test_not_cached_and_offline_is_local_entry_not_found(tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download
    with pytest.raises(LocalEntryNotFoundError) as info:
        hf_hub_download(MODEL, "config.yaml", cache_dir=str(tmp_path), local_files_only=True)
    err = map_diarization_load_error(info.value, token_set=True, model=MODEL)
    assert err.code == "hf_hub_unreachable"
    assert "HF_HUB_OFFLINE" in err.message and "STT_DIARIZATION_BACKEND=offline" in err.message
    # without a token the real cause is the missing token
    err = map_diarization_load_error(info.value, token_set=False, model=MODEL)
    assert err.code == "hf_token_missing"


def test_missing_and_malformed_token_messages():
    err = token_missing_error(MODEL)
    assert err.code == "hf_token_missing" and "HF_TOKEN" in err.message
    assert f"https://huggingface.co/{MODEL}" in err.message
    body = err.body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == "diarize"
    err = token_malformed_error()
    assert err.code == "hf_token_invalid" and "hf_" in err.message


def test_unknown_exception_never_leaks_a_trace():
    err = map_diarization_load_error(RuntimeError("boom\nTraceback (most recent call last)"), token_set=True)
    assert err.code == "diarization_load_failed" and err.status == 503
