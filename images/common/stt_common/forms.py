"""The transcription/translation form fields, validated into OpenAI-shaped 400s."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from pydantic import BaseModel

from .errors import bad_request
from .formats import RESPONSE_FORMATS

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class TranscriptionForm(BaseModel):
    model: Optional[str] = None
    language: Optional[str] = None
    prompt: Optional[str] = None
    temperature: float = 0.0
    response_format: str = "json"
    timestamp_granularities: List[str] = ["segment"]
    stream: bool = False
    extra: Dict[str, str] = {}

    @property
    def word_timestamps(self) -> bool:
        return "word" in self.timestamp_granularities

    @property
    def segment_timestamps(self) -> bool:
        return "segment" in self.timestamp_granularities

    @classmethod
    def parse(cls, fields: Dict[str, List[str]],
              allowed_formats: Sequence[str] = ("json", "text", "srt", "vtt", "verbose_json"),
              allow_stream: bool = True, require_model: bool = False) -> "TranscriptionForm":
        def last(name: str) -> Optional[str]:
            v = fields.get(name)
            return v[-1] if v else None

        model = (last("model") or "").strip() or None
        if require_model and not model:
            raise bad_request("'model' is required.", param="model", code="missing_model")

        language = (last("language") or "").strip() or None
        if language is not None:
            language = language.lower()
            if not (2 <= len(language) <= 8) or not language.replace("-", "").isalpha():
                raise bad_request(f"Invalid language '{language}': use an ISO-639-1 code such as 'en'.",
                                  param="language", code="invalid_language")

        temperature = 0.0
        t = last("temperature")
        if t is not None and t.strip() != "":
            try:
                temperature = float(t)
            except ValueError:
                raise bad_request(f"Invalid temperature '{t}': expected a number between 0 and 1.",
                                  param="temperature", code="invalid_value") from None
            if not (0.0 <= temperature <= 1.0):
                raise bad_request(f"Invalid temperature {temperature}: expected a number between 0 and 1.",
                                  param="temperature", code="invalid_value")

        rf = (last("response_format") or "json").strip() or "json"
        if rf not in allowed_formats:
            known = rf in RESPONSE_FORMATS
            raise bad_request(
                f"Invalid response_format '{rf}'" + (" for this endpoint" if known else "")
                + f": expected one of {', '.join(allowed_formats)}.",
                param="response_format", code="invalid_value")

        grans: List[str] = []
        for key in ("timestamp_granularities[]", "timestamp_granularities"):
            for v in fields.get(key, []):
                grans.extend(p.strip() for p in v.split(",") if p.strip())
        for g in grans:
            if g not in ("segment", "word"):
                raise bad_request(f"Invalid timestamp_granularities value '{g}': expected 'segment' or 'word'.",
                                  param="timestamp_granularities", code="invalid_value")
        if grans and rf != "verbose_json":
            raise bad_request("timestamp_granularities is only supported with response_format 'verbose_json'.",
                              param="timestamp_granularities", code="invalid_value")
        if not grans:
            grans = ["segment"]

        stream = False
        s = last("stream")
        if s is not None:
            sl = s.strip().lower()
            if sl in _TRUE:
                stream = True
            elif sl not in _FALSE:
                raise bad_request(f"Invalid stream value '{s}': expected true or false.", param="stream",
                                  code="invalid_value")
        if stream and not allow_stream:
            raise bad_request("stream is not supported on this endpoint.", param="stream", code="invalid_value")
        if stream and rf not in ("json", "text"):
            raise bad_request(f"stream=true is not supported with response_format '{rf}': use json or text.",
                              param="stream", code="invalid_value")

        known_fields = {"model", "language", "prompt", "temperature", "response_format", "timestamp_granularities[]",
                 "timestamp_granularities", "stream"}
        extra = {k: v[-1] for k, v in fields.items() if k not in known_fields and v}
        prompt = last("prompt")
        return cls(model=model, language=language, prompt=prompt or None, temperature=temperature,
                   response_format=rf, timestamp_granularities=list(dict.fromkeys(grans)), stream=stream,
                   extra=extra)

    @staticmethod
    def openapi_body(extra_properties: Optional[dict] = None, formats: Sequence[str] = (
            "json", "text", "srt", "vtt", "verbose_json"), stream: bool = True, language: bool = True,
                     required: Sequence[str] = ()) -> dict:
        props = {
            "file": {"type": "string", "format": "binary",
                     "description": "Audio in any format FFmpeg/PyAV decodes (mp3, wav, m4a, flac, ogg, webm...). "
                                    "This or file_url."},
            "file_url": {"type": "string", "format": "uri", "description": (
                "Instead of file: the recording's http(s) URL, fetched by the server (public addresses only, no "
                "redirects followed, the upload's size limit; a job fetches it when it starts).")},
            "model": {"type": "string", "description": "Model name; `whisper-1` is the server's default."},
            "prompt": {"type": "string", "description": "Text to guide the style or continue a previous segment."},
            "response_format": {"type": "string", "enum": list(formats), "default": "json"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        }
        if language:
            props["language"] = {"type": "string", "description": "ISO-639-1 code of the input language."}
            props["timestamp_granularities[]"] = {
                "type": "array", "items": {"type": "string", "enum": ["segment", "word"]},
                "description": "Only with response_format=verbose_json."}
        if stream:
            props["stream"] = {"type": "boolean", "default": False,
                               "description": "Server-sent events: transcript.text.delta ... transcript.text.done."}
        props.update(extra_properties or {})
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": list(required), "properties": props}}}}}
