"""docker_autostart.config_file: the runbook's config.json format, defaults, validation."""

import json

import pytest

from docker_autostart import config_file as cfgmod
from docker_autostart.config_file import ConfigError, parse_config, parse_text

RUNBOOK = """{
  "services": {
    "whisper.srv759970.hstgr.cloud": {
      "name": "Whisper API (faster-whisper)",
      "composeDir": "/opt/whisper-faster",
      "proxyPort": 8001,
      "blocking": true,
      "containers": ["faster-whisper"]
    },
    "whisperx.srv759970.hstgr.cloud": {
      "name": "WhisperX API (with diarization)",
      "composeDir": "/opt/whisperx",
      "proxyPort": 8002,
      "blocking": true,
      "containers": ["whisperx"]
    }
  }
}"""


def entry(**over):
    base = {"name": "W", "composeDir": "/opt/w", "proxyPort": 8001, "blocking": True, "containers": ["w"]}
    base.update(over)
    return base


def test_runbook_example_parses_with_defaults():
    cfg = parse_text(RUNBOOK)
    assert sorted(cfg.services) == ["whisper.srv759970.hstgr.cloud", "whisperx.srv759970.hstgr.cloud"]
    svc = cfg.services["whisper.srv759970.hstgr.cloud"]
    assert (svc.name, svc.compose_dir, svc.proxy_port, svc.blocking, svc.containers) == (
        "Whisper API (faster-whisper)", "/opt/whisper-faster", 8001, True, ("faster-whisper",))
    # no readinessPath (the runbook's format): ready once the port answers HTTP at all
    assert svc.idle_timeout == 1800 and svc.readiness_path is None
    assert svc.max_wait == 300 and svc.upstream_timeout == 600


def test_optional_keys_override_defaults():
    svc = parse_config({"services": {"a.test": entry(idleTimeout=60, readinessPath="/ready", maxWait=12.5,
                                                     upstreamTimeout=30, wakePath="/_wake")}}).services["a.test"]
    assert (svc.idle_timeout, svc.readiness_path, svc.max_wait, svc.upstream_timeout, svc.wake_path) == \
        (60, "/ready", 12.5, 30, "/_wake")
    assert parse_config({"services": {"a.test": entry()}}).services["a.test"].wake_path is None


def test_docker_start_names_every_container_and_the_files_they_are_made_from():
    quick = {"containers": ["w", "w-worker"], "madeFrom": ["/opt/w/docker-compose.yml", "/opt/w/.env"]}
    svc = parse_config({"services": {"a.test": entry(dockerStart=quick)}}).services["a.test"]
    assert svc.docker_start is not None
    assert (svc.docker_start.containers, svc.docker_start.made_from) == (
        ("w", "w-worker"), ("/opt/w/docker-compose.yml", "/opt/w/.env"))
    assert parse_config({"services": {"a.test": entry()}}).services["a.test"].docker_start is None


def test_idle_timeout_zero_means_never_stop():
    assert parse_config({"services": {"a.test": entry(idleTimeout=0)}}).services["a.test"].idle_timeout == 0


def test_unknown_keys_are_ignored_everywhere():
    cfg = parse_config({"logLevel": "debug", "services": {"a.test": entry(custom=[1, 2], port=3)}, "x": None})
    assert list(cfg.services) == ["a.test"]


def test_hostnames_are_case_insensitive_and_lookup_uses_lowercase():
    cfg = parse_config({"services": {"Whisper.Example.COM.": entry()}})
    assert cfg.lookup("whisper.example.com").host == "whisper.example.com"
    assert cfg.lookup(None) is None


def test_same_host_twice_in_different_case_is_refused():
    with pytest.raises(ConfigError, match="listed twice"):
        parse_config({"services": {"a.test": entry(), "A.TEST": entry()}})


def test_missing_services_key_is_an_empty_config():
    assert parse_config({"other": 1}).services == {}


@pytest.mark.parametrize("bad, message", [
    ({"composeDir": None}, "'composeDir' is required"),
    ({"composeDir": "relative/dir"}, "absolute path"),
    ({"proxyPort": "abc"}, "'proxyPort' must be a port number"),
    ({"proxyPort": 0}, "'proxyPort' must be a port number"),
    ({"proxyPort": 70000}, "'proxyPort' must be a port number"),
    ({"proxyPort": True}, "'proxyPort' must be a port number"),
    ({"blocking": "yes"}, "'blocking' must be true or false"),
    ({"containers": []}, "'containers' must be a non-empty list"),
    ({"containers": "w"}, "'containers' must be a non-empty list"),
    ({"containers": ["w", ""]}, "'containers' must be a non-empty list"),
    ({"name": 3}, "'name' must be a string"),
    ({"readinessPath": "health"}, "'readinessPath' must be a path"),
    ({"wakePath": "wake"}, "'wakePath' must be a path"),
    ({"wakePath": "/"}, "'wakePath' must be a path"),
    ({"idleTimeout": -1}, "'idleTimeout' must be >= 0"),
    ({"maxWait": 0}, "'maxWait' must be > 0"),
    ({"upstreamTimeout": "600"}, "'upstreamTimeout' must be a number"),
    ({"maxWait": False}, "'maxWait' must be a number"),
    ({"dockerStart": True}, "dockerStart: must be an object"),
    ({"dockerStart": {"containers": ["w"]}}, "'madeFrom' must be a non-empty list of absolute paths"),
    ({"dockerStart": {"containers": ["w"], "madeFrom": [".env"]}}, "'madeFrom' must be a non-empty list"),
    ({"dockerStart": {"containers": [], "madeFrom": ["/a"]}}, "'containers' must be a non-empty list"),
    ({"dockerStart": {"containers": ["w-worker"], "madeFrom": ["/a"]}}, "must include the entry's own containers"),
])
def test_invalid_entries_are_refused_naming_host_and_key(bad, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"services": {"a.test": entry(**bad)}})
    assert message in str(err.value) and "services['a.test']" in str(err.value)


def test_port_given_as_digit_string_is_accepted():
    assert parse_config({"services": {"a.test": entry(proxyPort="8001")}}).services["a.test"].proxy_port == 8001


def test_defaults_for_name_and_blocking():
    raw = entry()
    del raw["name"], raw["blocking"]
    svc = parse_config({"services": {"a.test": raw}}).services["a.test"]
    assert svc.name == "a.test" and svc.blocking is True


@pytest.mark.parametrize("data, message", [
    ([], "top level must be a JSON object"),
    ({"services": []}, "'services' must be an object"),
    ({"services": {"a.test": "x"}}, "must be an object"),
    ({"services": {"a.test:8080": entry()}}, "not a hostname"),
])
def test_invalid_shapes(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_broken_json_message():
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_text('{"services": {')


def test_load_and_signature(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(ConfigError, match="cannot read"):
        cfgmod.load(str(path))
    assert cfgmod.file_signature(str(path)) is None
    path.write_text(json.dumps({"services": {"a.test": entry()}}))
    sig = cfgmod.file_signature(str(path))
    assert cfgmod.load(str(path)).services["a.test"].proxy_port == 8001
    path.write_text(json.dumps({"services": {"a.test": entry(proxyPort=8002)}}))
    assert cfgmod.file_signature(str(path)) != sig


def test_unchanged_entries_compare_equal_so_reload_keeps_their_state():
    one = parse_text(RUNBOOK).services
    two = parse_text(RUNBOOK).services
    assert one == two
