"""Pieces of the deploy that need no host: htpasswd edits, image tags, secrets, templates."""

from __future__ import annotations

import types

import pytest

from stages import images, secrets_env
from stages.settings import Platform, read_group_data
from stages.compose_projects import body_limit_mb, env_file

def test_secret_repr_is_masked(monkeypatch):
    s = secrets_env.Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in repr([s])


def test_missing_secret_stops_before_anything(monkeypatch):
    for name in secrets_env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(secrets_env.MissingSecret, match="WHISPER_BASIC_AUTH_USER"):
        secrets_env.load(sandbox=False)


def test_env_file_holds_only_the_services_secrets(monkeypatch):
    monkeypatch.setenv("WHISPER_BASIC_AUTH_USER", "u")
    monkeypatch.setenv("WHISPER_BASIC_AUTH_PASSWORD", "p")
    monkeypatch.setenv("WHISPER_API_KEY", "k1, k2")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    secrets = secrets_env.load(sandbox=False)
    faster = env_file(types.SimpleNamespace(secrets=("STT_API_KEYS",)), secrets).reveal()
    assert "STT_API_KEYS=k1,k2" in faster and "hf_test" not in faster
    assert "HF_TOKEN=hf_test" in env_file(types.SimpleNamespace(secrets=("STT_API_KEYS", "HF_TOKEN")), secrets).reveal()


@pytest.mark.parametrize("limit,mb", [("500M", 500), ("1G", 1024), ("1M", 1), ("512K", 1)])
def test_body_limit_mb(limit, mb):
    assert body_limit_mb(limit) == mb


def test_services_get_vhosts_and_overrides():
    data = read_group_data(domain="example.test",
                           service_overrides={"faster": {"model": "/models/x", "extra_env": {"A": "1"}}})
    svcs = {s.key: s for s in Platform.from_group_data(data).services}
    assert svcs["faster"].vhost == "whisper.example.test"
    assert svcs["whisperx"].vhost == "whisperx.example.test"
    assert svcs["faster"].model == "/models/x" and dict(svcs["faster"].extra_env) == {"A": "1"}
    assert svcs["whisperx"].model == "base"


def test_image_tag_follows_sources(tmp_path, monkeypatch):
    (tmp_path / "common").mkdir()
    (tmp_path / "faster").mkdir()
    (tmp_path / "common" / "a.py").write_text("a")
    (tmp_path / "faster" / "Dockerfile").write_text("FROM x")
    (tmp_path / "faster" / "__pycache__").mkdir()
    (tmp_path / "faster" / "__pycache__" / "a.pyc").write_text("junk")
    monkeypatch.setattr(images, "IMAGES", tmp_path)
    svc = types.SimpleNamespace(image_name="whisper-faster", sources=("common", "faster"), build_args={})
    data = types.SimpleNamespace(base_image="python:3.11-slim", build_ca_bundle="")
    tag = images.image_tag(svc, data)
    assert tag.startswith("whisper-faster:src-")
    (tmp_path / "faster" / "__pycache__" / "a.pyc").write_text("other junk")
    assert images.image_tag(svc, data) == tag  # caches don't count
    (tmp_path / "common" / "a.py").write_text("b")
    assert images.image_tag(svc, data) != tag  # a shared source does
    other = types.SimpleNamespace(base_image="other:1", build_ca_bundle="")
    assert images.image_tag(svc, other) != images.image_tag(svc, data)
    with_arg = types.SimpleNamespace(image_name="whisper-faster", sources=("common", "faster"), build_args={"A": "1"})
    assert images.image_tag(with_arg, data) != images.image_tag(svc, data)  # so does a build arg


def test_host_has_api_key_reads_only_digests():
    from stages.ops import env_line_digest
    from stages.compose_projects import host_has_api_key

    assert not host_has_api_key(None)   # no .env yet: a first deploy generates a key
    assert not host_has_api_key([[None, env_line_digest("# header")], ["STT_API_KEYS", env_line_digest("STT_API_KEYS=")]])
    assert host_has_api_key([["STT_API_KEYS", env_line_digest("STT_API_KEYS=sk-abc")], ["HF_TOKEN", "x"]])
