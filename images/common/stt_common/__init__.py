"""Shared API glue of the speech-to-text images (see README.md for the public API)."""
from .audio_url import receive_audio
from .auth import check_key, require_api_key
from .errors import (APIError, bad_request, error_body, install_error_handlers, not_found, too_large,
                     unauthorized, unavailable)
from .executor import InferenceExecutor, StopHandle, JobStopped, StreamHandle
from .formats import (RESPONSE_FORMATS, Segment, Transcript, Word, join_text, render_transcript, to_diarized_json,
                      to_json, to_srt, to_text, to_verbose_json, to_vtt, transcript_from_dict, transcript_to_dict)
from .forms import TranscriptionForm
from .metrics import Metrics, MetricsMiddleware, metrics_router
from .languages import check_language, model_languages, whisper_languages
from .models import ModelCache, find_local_model, list_local_models, public_name
from .text import check_text, has_control, redact_paths
from .settings import STTSettings
from .uploads import (SAMPLE_RATE, BulkField, Upload, UploadedFile, audio_duration, audio_too_long, decode_audio,
                      decode_audio_sync, iter_audio_chunks, receive_upload, upload_limits)


def __getattr__(name: str):
    """The FastAPI app's construction (`create_app`, `AppRuntime`) is loaded by the API only: a job worker imports
    this package without it."""
    if name in ("AppRuntime", "create_app"):
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "receive_audio", "check_key", "require_api_key",
    "APIError", "bad_request", "error_body", "install_error_handlers", "not_found", "too_large", "unauthorized",
    "unavailable",
    "InferenceExecutor", "StopHandle", "JobStopped", "StreamHandle",
    "RESPONSE_FORMATS", "Segment", "Transcript", "Word", "join_text", "render_transcript", "to_diarized_json",
    "to_json", "to_srt", "to_text", "to_verbose_json", "to_vtt", "transcript_from_dict", "transcript_to_dict",
    "TranscriptionForm", "Metrics", "MetricsMiddleware", "metrics_router",
    "check_language", "model_languages", "whisper_languages",
    "ModelCache", "find_local_model", "list_local_models", "public_name",
    "check_text", "has_control", "redact_paths", "STTSettings",
    "SAMPLE_RATE", "BulkField", "Upload", "UploadedFile", "audio_duration", "audio_too_long", "decode_audio",
    "decode_audio_sync", "iter_audio_chunks", "receive_upload", "upload_limits",
    "AppRuntime", "create_app",
]
