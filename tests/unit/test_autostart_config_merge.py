"""config.json registration keeps every byte that is not ours."""

import json

import pytest

from stages.autostart_registry import ConfigError, merge_services
from support.autostart_config import FOREIGN

OURS = {
    "whisper.example.test": {"name": "W", "composeDir": "/opt/whisper-faster", "proxyPort": 8001,
                             "blocking": True, "containers": ["faster-whisper"]},
}


def test_new_file_gets_a_services_object():
    text = merge_services(None, OURS)
    assert json.loads(text) == {"services": OURS}


def test_foreign_entries_stay_byte_for_byte_and_ours_are_added():
    text = merge_services(FOREIGN, OURS)
    data = json.loads(text)
    assert data["services"]["whisper.example.test"] == OURS["whisper.example.test"]
    assert data["logLevel"] == "debug"
    # everything before our insertion point is untouched, and so is the tail
    head = FOREIGN[: FOREIGN.index('"custom": [1, 2]\n        }') + len('"custom": [1, 2]\n        }')]
    assert text.startswith(head)
    assert text.endswith('\n    },\n    "logLevel": "debug"\n}\n')


def test_second_merge_changes_nothing():
    once = merge_services(FOREIGN, OURS)
    assert merge_services(once, OURS) == once


def test_changed_entry_is_replaced_in_place_only():
    once = merge_services(FOREIGN, OURS)
    changed = {k: dict(v, proxyPort=8101) for k, v in OURS.items()}
    twice = merge_services(once, changed)
    assert json.loads(twice)["services"]["whisper.example.test"]["proxyPort"] == 8101
    assert twice.replace("8101", "8001") == once


def test_empty_services_object():
    text = merge_services('{"services": {}}\n', OURS)
    assert json.loads(text) == {"services": OURS}


def test_config_without_services_key():
    text = merge_services('{"other": 1}\n', OURS)
    assert json.loads(text) == {"services": OURS, "other": 1}


def test_broken_json_is_refused_not_overwritten():
    with pytest.raises(ConfigError):
        merge_services('{"services": {', OURS)
