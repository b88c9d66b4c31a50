"""The WhisperX form fields beyond stt_common's TranscriptionForm (diarize, speaker hints, align), OpenAI's model
names, the response formats of each endpoint, and the fields' documentation for /docs: one place for the API and
the jobs plug-in."""
from __future__ import annotations

from typing import Optional

from stt_common import TranscriptionForm, bad_request

TRANSCRIBE_FORMATS = ("json", "srt", "vtt", "text")
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
OPENAI_DEFAULT_ALIASES = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}
OPENAI_DIARIZE_ALIASES = {"gpt-4o-transcribe-diarize"}


def openai_model_and_diarize(form, fields, known: bool = False) -> tuple:
    """(model, diarize) of an OpenAI-style form: OpenAI's model names mean our default model, the
    -diarize one with diarization; diarize defaults to on for response_format=diarized_json and with known
    speakers (``known``)."""
    model, diarize = form.model, wants_diarization(fields, known, form.response_format == "diarized_json")
    if model in OPENAI_DEFAULT_ALIASES:
        return None, diarize
    if model in OPENAI_DIARIZE_ALIASES:
        return None, True
    return model, diarize


def wants_diarization(fields, known: bool, default: bool) -> bool:
    """``diarize``, on by default where known speakers are given (``known``), with which diarize=false is a
    contradiction (400)."""
    if not known:
        return form_bool(fields, "diarize", default)
    if not form_bool(fields, "diarize", True):
        raise bad_request("Known speakers need diarization: remove diarize=false.", param="diarize",
                          code="invalid_value")
    return True


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def form_bool(fields, name: str, default: bool) -> bool:
    v = fields.get(name)
    if not v or not v[-1].strip():
        return default
    s = v[-1].strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise bad_request(f"Invalid value for '{name}': expected true or false.", param=name, code="invalid_value")


def form_int(fields, name: str) -> Optional[int]:
    v = fields.get(name)
    if not v or not v[-1].strip():
        return None
    try:
        return int(v[-1].strip())
    except ValueError:
        raise bad_request(f"Invalid value for '{name}': expected a whole number.", param=name,
                          code="invalid_value") from None


EXTRA_DOC = {
    "diarize": {"type": "boolean", "default": False, "description": "Label speakers (SPEAKER_00, ...)."},
    "num_speakers": {"type": "integer", "minimum": 1, "description": "Exact number of speakers, if known."},
    "min_speakers": {"type": "integer", "minimum": 1},
    "max_speakers": {"type": "integer", "minimum": 1},
    "align": {"type": "boolean", "default": True,
              "description": "wav2vec2 word alignment; degrades to segment times (and says so) when unavailable."},
    "prompt": {"type": "string", "description": "Text that guides vocabulary and style (names, terms, "
                                                "punctuation), given to the decoder before each chunk of speech."},
    "known_speaker_names[]": {
        "type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 4,
        "description": "Names of known speakers (OpenAI's field), one per known_speaker_references[] clip, in the "
                       "same order: the speaker clusters their voices match are labelled with these names; the "
                       "others keep SPEAKER_xx. Implies diarize."},
    "known_speaker_references[]": {
        "type": "array", "items": {"type": "string"}, "maxItems": 4,
        "description": "One clip per name, 2 to 10 s of that voice alone, as a data URL "
                       "(data:audio/wav;base64,...; any format FFmpeg decodes). Embedded, never stored."},
    "speakers": {"type": "string", "description": "Enrolled voices (POST /v1/speakers) to look for, "
                                                  "comma-separated: name1,name2. Implies diarize."},
    "speaker_threshold": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "Similarity a speaker cluster needs to take a known voice's name (default: "
                                         "the server's STT_SPEAKER_THRESHOLD, else its diarization model's). Each "
                                         "segment reports its own speaker_similarity."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                    "description": "0: the decoder's fallback ladder (0, 0.2 ... 1.0) that the server's guards "
                                   "climb on a chunk that loops or is unlikely; above 0: sampled at that value."},
}


def transcribe_openapi() -> dict:
    body = TranscriptionForm.openapi_body(extra_properties=EXTRA_DOC, formats=TRANSCRIBE_FORMATS, stream=False)
    props = body["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    props["model"]["description"] = ("tiny, base, small, medium, large-v2, large-v3, a HuggingFace repo id or a "
                                     "folder in STT_MODELS_DIR; omitted = the server default")
    props.pop("timestamp_granularities[]", None)
    return body
