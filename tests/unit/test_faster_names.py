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
    # only configured models by default: catalogue names and hub ids would be downloads
    for bad in ("nope", "/etc", "../x", "a/b/c", "tiny.en", "someone/faster-whisper-x", "etc/ssl"):
        with pytest.raises(APIError) as e:
            n.resolve(bad)
        assert e.value.status == 404 and e.value.param == "model" and "whisper-1" in e.value.message
    assert "my-model" in n.available() and "whisper-1" in n.available() and "tiny.en" not in n.available()
    with pytest.raises(APIError) as e:
        n.resolve("x\x00y")
    assert e.value.status == 400 and e.value.param == "model"


def test_downloads_are_an_opt_in(tmp_path):
    n = ModelNames(FasterSettings(model="Systran/faster-whisper-small", models_dir=str(tmp_path),
                                  allow_model_downloads=True))
    assert n.resolve("tiny.en") == "Systran/faster-whisper-tiny.en"
    assert n.resolve("someone/faster-whisper-x") == "someone/faster-whisper-x"
    assert "tiny.en" in n.available()
    for bad in ("/etc", "../x", "a/b/c"):
        with pytest.raises(APIError):
            n.resolve(bad)


def test_language_check():
    assert check_language("fr") == "fr" and check_language(None) is None
    for bad in ("xx", "english"):
        with pytest.raises(APIError) as e:
            check_language(bad)
        assert e.value.status == 400 and "fr" in e.value.message
