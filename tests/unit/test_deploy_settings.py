"""stages.settings: group_data becomes one checked Platform per host; every bad value stops the
deploy with an error naming its key. The real group files (all, production, sandbox, brownfield)
must pass."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest

from stages.settings import GroupDataError, Platform, ServiceEntry, read_group_data
from stages.signals import changed


def build(**over):
    return Platform.from_group_data(read_group_data(**over))


def services_with(which: str, **fields):
    entries = copy.deepcopy(read_group_data()["services"])
    for entry in entries:
        if entry["key"] == which:
            entry.update(fields)
    return entries


@pytest.mark.parametrize("groups", [(), ("production",), ("sandbox",), ("brownfield",)])
def test_every_group_file_passes(groups):
    p = Platform.from_group_data(read_group_data(*groups))
    assert [s.key for s in p.services] == ["faster", "whisperx"]
    assert all(isinstance(s, ServiceEntry) for s in p.services)


def test_settings_are_frozen_and_overrides_merge_per_service():
    p = build(service_overrides={"whisperx": {"extra_env": {"X": "1"}}},
              service_overrides_extra={"whisperx": {"max_queue": 3}})
    wx = p.service("whisperx")
    assert wx.max_queue == 3 and wx.extra_env["X"] == "1" and wx.extra_env["STT_BATCH_SIZE"] == "8"
    assert p.service("faster").max_queue == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tls_mode = "selfsigned"
    with pytest.raises(TypeError):
        wx.extra_env["Y"] = "2"


def test_disabled_service_is_left_out():
    p = build(service_overrides={"whisperx": {"enabled": False}})
    assert [s.key for s in p.services] == ["faster"] and len(p.all_services) == 2


@pytest.mark.parametrize("over,key,message", [
    ({"tls_mode": "acme"}, "tls_mode", "not one of letsencrypt, selfsigned"),
    ({"docker_install": "yes"}, "docker_install", "not one of"),
    ({"domain": "Bad_Domain"}, "domain", "not a DNS name"),
    ({"services": None}, "services", "missing"),
    ({"http_port": 0}, "http_port", "not a port"),
    ({"https_port": "127.0.0.1:x"}, "https_port", "PORT, IPV4:PORT, [IPV6]:PORT or *:PORT"),
    # values written into nginx's config: nothing but an address and a port (a `;` or a newline would add directives)
    ({"https_port": "127.0.0.1 ssl; return 200:443"}, "https_port", "PORT, IPV4:PORT"),
    ({"http_port": "80\n    include /etc/passwd;\n    listen 81"}, "http_port", "PORT, IPV4:PORT"),
    ({"http_port": "999.1.1.1:80"}, "http_port", "valid IP address"),
    ({"link_address": "10.0.0.1; x"}, "link_address", "not an IP address"),
    ({"job_quota_jobs": -1}, "job_quota_jobs", "0 or more"),
    ({"webhook_timeout": 0}, "webhook_timeout", "from 1 to 120"),
    ({"https_port": True}, "https_port", "must be"),
    ({"redis_port": "6379"}, "redis_port", "must be a port number"),
    ({"autostart_port": 70000}, "autostart_port", "not a port"),
    ({"autostart_install": "no"}, "autostart_install", "must be bool"),
    ({"autostart_wake_path": "wake"}, "autostart_wake_path", "a path such as"),
    ({"autostart_wake_path": "/a b"}, "autostart_wake_path", "a path such as"),
    ({"jobs_enabled": 1}, "jobs_enabled", "must be bool"),
    ({"proxy_timeout": -1}, "proxy_timeout", "positive"),
    ({"job_retries": -1}, "job_retries", "0 or more"),
    ({"body_limit": "lots"}, "body_limit", "a size"),
    ({"state_dir": "var/lib"}, "state_dir", "absolute path"),
    ({"htpasswd_file": "/etc/nginx/ht passwd"}, "htpasswd_file", "absolute path"),
    ({"basic_auth_realm": 'a"b'}, "basic_auth_realm", "without"),
    ({"cors_origin": "portal.example"}, "cors_origin", "an origin"),
    ({"app_user": "Root!"}, "app_user", "a user name"),
    ({"letsencrypt_email": "a b"}, "letsencrypt_email", "email"),
    ({"build_wheelhouse": "relative/dir"}, "build_wheelhouse", "absolute path"),
    ({"redis_maxmemory": "a lot"}, "redis_maxmemory", "Redis size"),
    ({"services": []}, "services", "no service is enabled"),
    ({"services": {"faster": {}}}, "services", "a list"),
])
def test_host_wide_checks_name_the_key(over, key, message):
    with pytest.raises(GroupDataError, match=re.escape(message)) as err:
        build(**over)
    assert err.value.key == key
    assert str(err.value).startswith(f"group_data: {key}: ") and "nothing was changed on the host" in str(err.value)


def test_a_knob_no_group_sets_takes_its_declared_default():
    """The defaults live in the one declaration (stages/settings.py), not in a group file: a host whose group data
    leaves a knob out, or an inventory passing None, gets the declared default, checked like any value."""
    from stages.settings import defaults

    values = read_group_data()
    del values["domain"]
    values["job_ttl"] = None
    p = Platform.from_group_data(values)
    assert p.domain == defaults()["domain"] == "srv759970.hstgr.cloud" and p.job_ttl == defaults()["job_ttl"]


@pytest.mark.parametrize("fields,key,message", [
    ({"secrets": ["STT_API_KEYS", "HF_TOKN"]}, "services[whisperx].secrets", "unknown secret 'HF_TOKN'"),
    ({"secrets": ["HF_TOKEN", "HF_TOKEN"]}, "services[whisperx].secrets", "twice"),
    ({"secrets": "HF_TOKEN"}, "services[whisperx].secrets", "a list of secret names"),
    ({"port": 99999}, "services[whisperx].port", "not a port"),
    ({"port": "8002"}, "services[whisperx].port", "a port number"),
    ({"port": 8001}, "services[whisperx].port", "also services[faster].port"),
    ({"port": 8890}, "services[whisperx].port", "also autostart_port"),
    ({"port": 6379}, "services[whisperx].port", "also redis_port"),
    ({"container": "faster-whisper"}, "services[whisperx].container", "also services[faster].container"),
    ({"container": "bad name"}, "services[whisperx].container", "a container name"),
    ({"project_dir": "/opt/whisper-faster"}, "services[whisperx].project_dir", "also services[faster]"),
    ({"project_dir": "opt/x"}, "services[whisperx].project_dir", "absolute path"),
    ({"subdomain": "whisper"}, "services[whisperx].vhost", "also services[faster].vhost"),
    ({"subdomain": "Whisper_X"}, "services[whisperx].subdomain", "a DNS label"),
    ({"image_name": "WhisperX"}, "services[whisperx].image_name", "image name"),
    ({"image_dir": "nowhere"}, "services[whisperx].image_dir", "images/nowhere/Dockerfile does not exist"),
    ({"device": "gpu"}, "services[whisperx].device", "not one of cpu, cuda"),
    ({"mem_limit": "6 GB"}, "services[whisperx].mem_limit", "a size"),
    ({"cpus": 0}, "services[whisperx].cpus", "positive"),
    ({"max_concurrency": 0}, "services[whisperx].max_concurrency", "positive"),
    ({"max_queue": 1.5}, "services[whisperx].max_queue", "must be int"),
    ({"blocking": "yes"}, "services[whisperx].blocking", "must be bool"),
    ({"extra_env": {"BAD NAME": "1"}}, "services[whisperx].extra_env['BAD NAME']", "a variable name"),
    ({"extra_env": {"A": 'x"y'}}, "services[whisperx].extra_env['A']", "quote"),
    ({"build_args": {"TORCH_INDEX_URL": ["a"]}}, "services[whisperx].build_args['TORCH_INDEX_URL']", "must be"),
    ({"worker_module": "whisperx server"}, "services[whisperx].worker_module", "module path"),
    ({"key": "Whisper X"}, "services[Whisper X].key", "short lowercase name"),
    # values written into compose files and config.json: a newline would add keys (privileged: true)
    ({"name": "WhisperX\n    privileged: true"}, "services[whisperx].name", "a name of letters"),
    ({"model": 'base"\n    privileged: true\n    x: "'}, "services[whisperx].model", "a model name"),
    ({"model": "base large"}, "services[whisperx].model", "a model name"),
    ({"compute_type": "int8\n    privileged: true"}, "services[whisperx].compute_type", "not one of"),
    ({"gpu": True}, "services[whisperx].gpu", "unknown setting"),
])
def test_service_checks_name_the_key(fields, key, message):
    with pytest.raises(GroupDataError, match=re.escape(message)) as err:
        build(services=services_with("whisperx", **fields))
    assert err.value.key == key


@pytest.mark.parametrize("listen", [80, "8080", "127.0.0.1:8443", "[::1]:8443", "*:443"])
def test_listen_values_nginx_takes(listen):
    assert build(https_port=listen).https_port == listen


@pytest.mark.parametrize("model", ["Systran/faster-whisper-small", "base", "large-v3", "/models/tiny.en",
                                   "org/model@rev", "distil-whisper/distil-large-v3"])
def test_model_names_the_services_take(model):
    assert build(service_overrides={"faster": {"model": model}}).service("faster").model == model


def test_missing_service_setting_and_duplicate_key():
    entries = services_with("whisperx")
    del entries[1]["model"]
    with pytest.raises(GroupDataError, match="missing") as err:
        build(services=entries)
    assert err.value.key == "services[whisperx].model"
    entries = services_with("whisperx", key="faster")
    with pytest.raises(GroupDataError, match="two entries") as err:
        build(services=entries)
    assert err.value.key == "services[faster]"


def test_overrides_name_unknown_services_and_settings():
    with pytest.raises(GroupDataError, match="no service has this key") as err:
        build(service_overrides={"fastr": {"model": "x"}})
    assert err.value.key == "service_overrides['fastr']"
    with pytest.raises(GroupDataError, match="unknown setting") as err:
        build(service_overrides_extra={"faster": {"max_quue": 3}})
    assert err.value.key == "services[faster].max_quue"
    with pytest.raises(GroupDataError, match="also services") as err:
        build(service_overrides={"faster": {"port": 8002}})
    assert err.value.key == "services[whisperx].port"


def test_listen_values_keep_their_address():
    p = build(https_port="127.0.0.1:8443", http_port=80)
    assert (p.https_port, p.https_listen_port, p.http_listen_port) == ("127.0.0.1:8443", 8443, 80)


class _Op:
    def __init__(self, did):
        self.did = did

    def did_change(self):
        return self.did


def test_changed_signal():
    yes, no = _Op(True), _Op(False)
    assert changed(no, yes)() and not changed(no, None)() and not changed()()
    assert not changed(yes, unless=yes)() and changed(yes, unless=None)()
    assert not changed(yes, unless=(no, yes))() and changed(yes, unless=(no,))()


def test_group_files_hold_only_what_differs():
    defaults, production = read_group_data(), read_group_data("production")
    assert production == defaults   # srv759970 runs all.py's values
    sandbox, brownfield = read_group_data("sandbox"), read_group_data("brownfield")
    offline = {"base_image", "seed_images", "build_ca_bundle", "build_wheelhouse", "model_uploads",
               "service_overrides", "autostart_idle_timeout"}
    assert {k for k in brownfield if brownfield[k] != defaults[k]} <= offline
    assert all(brownfield[k] == sandbox[k] for k in offline)
    assert brownfield["domain"] == defaults["domain"] and brownfield["tls_mode"] == "letsencrypt"


@pytest.mark.parametrize("repo", ["", "https://nvidia.example/libnvidia-container/stable/deb/amd64",
                                  "file:/srv/nvidia-standin", "https://m.example/ubuntu jammy main"])
def test_nvidia_apt_repo_accepts_a_repository_or_nothing(repo):
    assert build(nvidia_apt_repo=repo).nvidia_apt_repo == repo


@pytest.mark.parametrize("repo", ["nvidia", "https://x.example/'; rm -rf /", "deb https://x.example/ /"])
def test_nvidia_apt_repo_refuses_what_is_no_repository(repo):
    with pytest.raises(GroupDataError, match="nvidia_apt_repo"):
        build(nvidia_apt_repo=repo)


@pytest.mark.parametrize("count,ok", [("all", True), (2, True), (0, False), ("some", False)])
def test_gpu_count(count, ok):
    services = services_with("faster", gpu_count=count)
    if ok:
        assert build(services=services).service("faster").gpu_count == count
    else:
        with pytest.raises(GroupDataError, match=r"services\[faster\]\.gpu_count"):
            build(services=services)


def test_wake_path_reaches_the_autostart_entries_only_when_set():
    from stages.autostart_registry import entry_for
    off = build()
    assert off.autostart_wake_path == "" and all("wakePath" not in entry_for(s, off) for s in off.services)
    on = build(autostart_wake_path="/_autostart/wake")
    assert {entry_for(s, on)["wakePath"] for s in on.services} == {"/_autostart/wake"}
