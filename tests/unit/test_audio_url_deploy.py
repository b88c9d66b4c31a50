"""Audio by URL on the host: a job's download runs in whichever process takes the job on the front, the model
worker or, for worker hosts, the relay, so the relay gets the service's size limit and its STT_URL_* settings
(an operator's private-bucket network), which its own environment block would otherwise drop."""
from __future__ import annotations

import dataclasses

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from stages.compose_projects import compose_values
from stages.settings import REPO, Platform, read_group_data


def test_the_relay_downloads_under_the_services_url_settings():
    p = Platform.from_group_data(read_group_data("sandbox"))
    svc = p.service("faster")
    svc = dataclasses.replace(svc, extra_env={**svc.extra_env, "STT_URL_ALLOW_NETWORKS": "10.20.0.0/16",
                                              "STT_URL_TIMEOUT": "120", "STT_OTHER": "x"})
    env = Environment(loader=FileSystemLoader(str(REPO / "templates/compose")), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    doc = yaml.safe_load(env.get_template("service.yml.j2").render(
        **{**compose_values(svc, p, relays=2), "image_tag": "whisper-faster:src-x"}))
    api, relay = doc["services"]["faster-whisper"]["environment"], doc["services"]["faster-whisper-relay"]["environment"]
    assert api["STT_URL_ALLOW_NETWORKS"] == relay["STT_URL_ALLOW_NETWORKS"] == "10.20.0.0/16"
    assert relay["STT_URL_TIMEOUT"] == "120" and relay["STT_MAX_UPLOAD_MB"] == api["STT_MAX_UPLOAD_MB"]
    assert "STT_OTHER" not in relay   # only what the download needs
