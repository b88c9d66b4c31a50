"""TranscriptionForm: OpenAI's field rules, every bad value a 400 with its param."""
import pytest

from stt_common import APIError, TranscriptionForm


def parse(**fields):
    return TranscriptionForm.parse({k: v if isinstance(v, list) else [v] for k, v in fields.items()})


def test_defaults():
    f = parse()
    assert (f.model, f.response_format, f.temperature, f.stream, f.word_timestamps) == (None, "json", 0.0, False, False)


def test_word_granularity_with_verbose_json():
    f = parse(response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
    assert f.word_timestamps and f.segment_timestamps


@pytest.mark.parametrize("fields,param", [
    ({"response_format": "xml"}, "response_format"),
    ({"response_format": "diarized_json"}, "response_format"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": "1.5"}, "temperature"),
    ({"language": "english!"}, "language"),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
    ({"timestamp_granularities[]": "char", "response_format": "verbose_json"}, "timestamp_granularities"),
    ({"stream": "maybe"}, "stream"),
    ({"stream": "true", "response_format": "srt"}, "stream"),
])
def test_bad_fields(fields, param):
    with pytest.raises(APIError) as e:
        parse(**fields)
    assert e.value.status == 400 and e.value.param == param
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_stream_refused_where_not_allowed():
    with pytest.raises(APIError):
        TranscriptionForm.parse({"stream": ["true"]}, allow_stream=False)


def test_openapi_body_lists_fields():
    props = TranscriptionForm.openapi_body()["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "model", "response_format", "timestamp_granularities[]", "stream"} <= set(props)
