"""Retiring a service turned off (`services[...].enabled` False) that an earlier deploy put on the host,
in pyinfra's own test style: the facts a stage reads in, the entries, files and commands out. What the
commands do on a real host: tests/e2e/test_deploy_options.py (sandbox host); the nginx removal against a
real nginx: tests/integration/provision/test_nginx_takeover.py.
"""

from __future__ import annotations

import hashlib
import json
import types

import pytest
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import File, Link, Sha256File

from stages.autostart_registry import entry_for, merge_services, registered, remove_services
from stages import marker
from stages.compose_projects import retire_commands
from stages.nginx_txn import nginx_apply
from stages.ops import CommandSucceeds, NginxServerBlocks
from stages.retired import retired_services
from stages.settings import Platform, read_group_data
from stages.web import retired_vhost_files

from support.autostart_config import FOREIGN
from support.pyinfra_ops import StandInHost, fact, run_op

OFF = {"whisperx": {"enabled": False}}
MARKER_WX = marker.owned_command("/opt/whisperx/docker-compose.yml")
MARKER_FASTER = marker.owned_command("/opt/whisper-faster/docker-compose.yml")


def platform(**over) -> Platform:
    return Platform.from_group_data(read_group_data("sandbox", **over))


# --- which services are retired ------------------------------------------------------------------
@pytest.mark.parametrize("ours,expected", [(True, ["whisperx"]), (False, [])])
def test_only_a_disabled_service_with_our_compose_file_is_retired(ours, expected):
    p = platform(service_overrides_extra=OFF)
    host = StandInHost(dict([fact(CommandSucceeds, ours, command=MARKER_WX),
                             fact(CommandSucceeds, True, command=MARKER_FASTER)]))
    with ctx_host.use(host):
        assert [svc.key for svc in retired_services(p)] == expected


def test_nothing_is_retired_while_every_service_is_enabled():
    p = platform()
    host = StandInHost(dict([fact(CommandSucceeds, True, command=MARKER_WX),
                             fact(CommandSucceeds, True, command=MARKER_FASTER)]))
    with ctx_host.use(host):
        assert retired_services(p) == []


def test_a_disabled_service_sharing_the_folder_of_an_enabled_one_is_never_retired():
    # an operator who points a replacement at the old folder must not see it go down
    p = platform(service_overrides_extra={"whisperx": {"enabled": False},
                                          "faster": {"project_dir": "/opt/whisperx"}})
    host = StandInHost(dict([fact(CommandSucceeds, True, command=MARKER_WX)]))
    with ctx_host.use(host):
        assert retired_services(p) == []


# --- compose down: only when a container of ours is left -----------------------------------------
def test_retire_commands_compose_down_only_with_our_containers_left():
    svc = platform(service_overrides_extra=OFF).all_services[1]
    ours = {"image": "whisperx:src-0123456789ab", "running": False}
    assert retire_commands(svc, "docker compose", {"whisperx": ours, "whisperx-worker": None}) == \
        ["cd /opt/whisperx && flock /opt/whisperx docker compose down"]
    assert retire_commands(svc, "docker-compose", {"whisperx": None, "whisperx-worker": ours}) == \
        ["cd /opt/whisperx && flock /opt/whisperx docker-compose down"]
    # already retired (second run), or a hand-made container of that name: nothing to do
    assert retire_commands(svc, "docker compose", {"whisperx": None, "whisperx-worker": None}) == []
    assert retire_commands(svc, "docker compose", {"whisperx": {"image": "handmade/whisperx:1", "running": True}}) == []
    # the image, .env and volumes stay: no --rmi, no -v, no rm
    for command in retire_commands(svc, "docker compose", {"whisperx": ours}):
        assert "--rmi" not in command and " -v" not in command and "rm " not in command


# --- nginx: our vhost files only -----------------------------------------------------------------
def test_retired_vhost_files_are_ours_and_their_links():
    svc = platform(service_overrides_extra=OFF).all_services[1]
    avail = f"/etc/nginx/sites-available/{svc.vhost}"
    links = {f"/etc/nginx/sites-enabled/{svc.vhost}": avail,
             f"/etc/nginx/sites-enabled/{svc.vhost}-http": avail + "-http"}
    items = retired_vhost_files(svc, owned=lambda path: True, link_target=links.get)
    assert items == [{"path": f"/etc/nginx/sites-enabled/{svc.vhost}-http", "absent": True},
                     {"path": avail + "-http", "absent": True},
                     {"path": f"/etc/nginx/sites-enabled/{svc.vhost}", "absent": True},
                     {"path": avail, "absent": True}]
    # a hand-made vhost of that name (no marker): left alone, and so is its link
    assert retired_vhost_files(svc, owned=lambda path: False, link_target=links.get) == []
    # a sites-enabled link pointing elsewhere is not ours to remove
    items = retired_vhost_files(svc, owned=lambda path: True, link_target=lambda path: "/srv/elsewhere")
    assert [i["path"] for i in items] == [avail + "-http", avail]


def _nginx_apply(facts, files):
    state = types.SimpleNamespace(is_executing=False, config=types.SimpleNamespace(DIFF=False))
    with ctx_state.use(state):
        return run_op(nginx_apply, [fact(NginxServerBlocks, [], nginx="nginx"),
                                    fact(File, None, path="/var/lib/wp/nginx-pending"), *facts],
                      files=files, names=["whisper.sandbox.test"], ports=[443],
                      backup_root="/var/backups/wp/nginx", state_dir="/var/lib/wp")


def test_nginx_apply_removes_absent_files_in_the_transaction_with_a_rollback():
    avail, enabled = "/etc/nginx/sites-available/whisperx.x", "/etc/nginx/sites-enabled/whisperx.x"
    text, commands, host = _nginx_apply(
        [fact(File, {"mode": 644}, path=avail), fact(Link, {"link_target": avail}, path=enabled)],
        [{"path": enabled, "absent": True}, {"path": avail, "absent": True}])
    assert f"Will remove {enabled} (a retired service's; kept in" in host.logs[0]
    # both kept in the backup folder, removed, then nginx -t with the automatic rollback
    assert [t for t in text if t.startswith("rm -f /etc")] == [f"rm -f {enabled}", f"rm -f {avail}"]
    assert sum(f"cp -a {p} " in t for t in text for p in (avail, enabled)) == 2
    assert "nginx -t" in text[-1] and ".rollback.sh" in text[-1]
    rollback = [c for c in commands if getattr(c, "dest", "").endswith(".rollback.sh")][0].src.getvalue().decode()
    assert f"cp -a {avail.lstrip('/')} {avail}" in rollback and f"cp -a {enabled.lstrip('/')} {enabled}" in rollback
    log = [c for c in commands if getattr(c, "dest", "").endswith("changes.log")][0].src.getvalue().decode()
    assert f"removed {avail}" in log


def test_nginx_apply_with_absent_files_already_gone_does_nothing():
    avail = "/etc/nginx/sites-available/whisperx.x"
    text, _, host = _nginx_apply([fact(File, None, path=avail), fact(Link, None, path=avail)],
                                 [{"path": avail, "absent": True}])
    assert text == [] and host.noops


def test_nginx_apply_keeps_other_files_when_only_absent_ones_change():
    ours = "/etc/nginx/conf.d/whisper-platform.conf"
    avail = "/etc/nginx/sites-available/whisperx.x"
    text, _, _ = _nginx_apply(
        [fact(File, {"mode": 644}, path=ours), fact(Sha256File, hashlib.sha256(b"x\n").hexdigest(), path=ours),
         fact(File, {"mode": 644}, path=avail)],
        [{"path": ours, "content": "x\n", "mode": "644"}, {"path": avail, "absent": True}])
    assert not any(t.startswith("upload") and ours in t for t in text)
    assert f"rm -f {avail}" in text


# --- the autostart entry: cut out, every other byte kept -----------------------------------------


def test_removing_the_entry_we_added_gives_back_the_file_byte_for_byte():
    p = platform()
    entries = {svc.vhost: entry_for(svc, p) for svc in p.services}
    merged = merge_services(FOREIGN, entries)
    assert remove_services(merged, list(entries)) == FOREIGN
    # one of two: the other stays as it was written
    one = remove_services(merged, ["whisperx.sandbox.test"])
    assert json.loads(one)["services"].keys() == {"blog.example.test", "wiki.example.test", "whisper.sandbox.test"}
    assert one.startswith(merged[: merged.index('"whisperx.sandbox.test"') - len(",\n        ")])


@pytest.mark.parametrize("gone,expected", [
    ("a.test", '{"services": {"b.test": {"x": 2}, "c.test": {"x": 3}}, "k": 1}'),
    ("b.test", '{"services": {"a.test": {"x": 1}, "c.test": {"x": 3}}, "k": 1}'),
    ("c.test", '{"services": {"a.test": {"x": 1}, "b.test": {"x": 2}}, "k": 1}'),
    ("z.test", '{"services": {"a.test": {"x": 1}, "b.test": {"x": 2}, "c.test": {"x": 3}}, "k": 1}'),
])
def test_remove_first_middle_last_or_absent_entry(gone, expected):
    text = '{"services": {"a.test": {"x": 1}, "b.test": {"x": 2}, "c.test": {"x": 3}}, "k": 1}'
    assert remove_services(text, [gone]) == expected


def test_remove_the_only_entry_and_files_without_services():
    assert remove_services('{\n  "services": {\n    "a.test": {"x": 1}\n  }\n}\n', ["a.test"]) == '{\n  "services": {}\n}\n'
    assert remove_services('{"other": 1}', ["a.test"]) == '{"other": 1}'
    assert remove_services(None, ["a.test"]) is None


def test_registered_reads_one_entry():
    assert registered(FOREIGN, "wiki.example.test")["composeDir"] == "/opt/wiki"
    assert registered(FOREIGN, "nope.test") is None and registered(None, "x") is None
    assert registered("[1]", "x") is None
