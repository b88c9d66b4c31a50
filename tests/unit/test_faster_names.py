"""faster_server model names: aliases, local folders, catalogue, hub ids, 404 listing what is available."""
import pytest

from faster_server.engine import ModelNames, check_language
from faster_server.settings import FasterSettings
from stt_common import APIError


def test_resolution(tmp_path):
    (tmp_path / "my-model").mkdir()
    n = ModelNames(FasterSettings(model="Systran/faster-whisper-small", models_dir=str(tmp_path)))
    assert n.resolve(None) == n.resolve("whisper-1") == n.resolve("Systran/faster-whisper-small") == n.default_key
    assert n.resolve("my-model") == str((tmp_path / "my-model").resolve())
    assert n.resolve("tiny.en") == "Systran/faster-whisper-tiny.en"
    assert n.resolve("someone/faster-whisper-x") == "someone/faster-whisper-x"
    for bad in ("nope", "/etc", "../x", "a/b/c"):
        with pytest.raises(APIError) as e:
            n.resolve(bad)
        assert e.value.status == 404 and e.value.param == "model" and "whisper-1" in e.value.message
    assert "my-model" in n.available() and "whisper-1" in n.available()


def test_language_check():
    assert check_language("fr") == "fr" and check_language(None) is None
    with pytest.raises(APIError):
        check_language("xx")
