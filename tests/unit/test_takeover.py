"""Takeover rules that need no host: the `nginx -T` parser, what gets disabled, secret checks,
the .env merge script (run here with this machine's python3, as the host runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from pyinfra.api import OperationError

from stages import secrets_env
from stages.nginx_conf import claims, duplicates, listen_port, parse_dump
from stages.nginx_txn import plan_disable
from stages.ops import ENV_SCRIPT, env_line_digest
from stages.secrets_env import Secret
from stages.compose_projects import env_values
from stages.web import nginx_regex, render_auth_map

DUMP = r"""nginx: the configuration file /etc/nginx/nginx.conf syntax is ok
# configuration file /etc/nginx/nginx.conf:
http {
    ssl_session_timeout 10m;   # the host's own
    map_hash_bucket_size 128;
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
stream { server { listen 9999; } }

# configuration file /etc/nginx/conf.d/up.conf:
upstream app { server 127.0.0.1:3000; }
map $http_x $y { "a;b{c}" 1; default 0; }

# configuration file /etc/nginx/sites-enabled/whisperx:
server {
    listen 443 ssl http2;
    server_name whisperx.example.test;   # hand-made
    location / { proxy_pass http://127.0.0.1:8890; add_header X "}{;#" always; }
}
server {
    if ($host = whisperx.example.test) { return 301 https://$host$request_uri; }
    listen 80;
    server_name whisperx.example.test;
    return 404;
}

# configuration file /etc/nginx/sites-enabled/blog:
server {
    listen [::]:443 ssl;
    listen 127.0.0.1:8443 ssl;
    server_name blog.example.test www.blog.example.test;
}
server { server_name "*.example.test"; }
"""


def test_parser_finds_server_blocks_with_ports_and_names():
    blocks = parse_dump(DUMP)
    assert [(b["file"].rsplit("/", 1)[1], b["ports"], b["names"]) for b in blocks] == [
        ("whisperx", [443], ["whisperx.example.test"]),
        ("whisperx", [80], ["whisperx.example.test"]),
        ("blog", [443, 8443], ["blog.example.test", "www.blog.example.test"]),
        ("blog", [80], ["*.example.test"]),  # no listen: port 80
    ]
    assert blocks[0]["ssl"] and blocks[0]["line"] == 1


@pytest.mark.parametrize("args,port", [(["443", "ssl"], 443), (["[::]:443"], 443), (["127.0.0.1:8443"], 8443),
                                       (["*:80"], 80), (["127.0.0.1"], 80), (["[::1]"], 80),
                                       (["unix:/run/x.sock"], None), ([], 80)])
def test_listen_ports(args, port):
    assert listen_port(args) == port


def test_claims_only_exact_names_on_our_ports():
    blocks = parse_dump(DUMP)
    assert len(claims(blocks, ["whisperx.example.test"], [443])) == 1
    assert len(claims(blocks, ["WhisperX.example.test"], [80, 443])) == 2
    assert claims(blocks, ["other.example.test"], [80, 443]) == []  # a wildcard claims no exact name
    assert duplicates(blocks + blocks[:1], ["whisperx.example.test"], [443]) == {"whisperx.example.test:443": 2}


def test_plan_disable_keeps_our_files_and_refuses_shared_files():
    blocks = parse_dump(DUMP)
    plan = plan_disable(blocks, ["whisperx.example.test"], [80, 443], ours=set())
    assert list(plan) == ["/etc/nginx/sites-enabled/whisperx"] and len(plan["/etc/nginx/sites-enabled/whisperx"]) == 2
    assert plan_disable(blocks, ["whisperx.example.test"], [443], ours={"/etc/nginx/sites-enabled/whisperx"}) == {}
    with pytest.raises(OperationError, match="blog.example.test"):  # disabling would take the blog down
        plan_disable(blocks, ["www.blog.example.test"], [443], ours=set())
    in_main = [{"file": "/etc/nginx/nginx.conf", "line": 3, "ports": [443], "names": ["whisper.example.test"]}]
    with pytest.raises(OperationError, match="own file"):
        plan_disable(in_main, ["whisper.example.test"], [443], ours=set())


def test_parser_runs_as_a_script_and_returns_no_content():
    out = subprocess.run([sys.executable, "stages/nginx_conf.py"], input=DUMP + "\nmap $x $y { \"Bearer sk-secret\" 1; }\n",
                         capture_output=True, text=True, check=True).stdout
    assert "sk-secret" not in out and "proxy_pass" not in out
    assert len(json.loads(out)) == 4


def _env(monkeypatch, **values):
    for name in secrets_env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_absent_variables_are_none_explicit_empty_clears(monkeypatch):
    _env(monkeypatch, WHISPER_BASIC_AUTH_USER="whisper", HF_TOKEN="")
    loaded = secrets_env.load(sandbox=False)
    assert loaded["WHISPER_API_KEY"] is None and loaded["WHISPER_BASIC_AUTH_PASSWORD"] is None
    assert loaded["HF_TOKEN"] is not None and loaded["HF_TOKEN"].reveal() == ""
    values = env_values(types.SimpleNamespace(secrets=("STT_API_KEYS", "HF_TOKEN")), loaded)
    assert values["STT_API_KEYS"] is None and values["HF_TOKEN"].reveal() == ""


@pytest.mark.parametrize("key", ['sk-"quoted"', "sk-$host", "sk-a;b", "sk a", "sk-{x}", "sk-\\x"])
def test_unsafe_api_keys_are_refused_without_showing_them(monkeypatch, key):
    _env(monkeypatch, WHISPER_BASIC_AUTH_USER="whisper", WHISPER_BASIC_AUTH_PASSWORD="pw", WHISPER_API_KEY="good-key," + key)
    with pytest.raises(secrets_env.UnsafeSecret, match="key #2") as err:
        secrets_env.load(sandbox=False)
    assert key not in str(err.value)


@pytest.mark.parametrize("user", ["who:ever", "a b", "x$y", 'q"', ""])
def test_unsafe_basic_auth_user_is_refused(monkeypatch, user):
    _env(monkeypatch, WHISPER_BASIC_AUTH_USER=user, WHISPER_BASIC_AUTH_PASSWORD="pw")
    with pytest.raises((secrets_env.UnsafeSecret, secrets_env.MissingSecret)):
        secrets_env.load(sandbox=False)


def test_unsafe_hf_token_is_refused(monkeypatch):
    _env(monkeypatch, WHISPER_BASIC_AUTH_USER="whisper", HF_TOKEN="abc$def")
    with pytest.raises(secrets_env.UnsafeSecret, match="HF_TOKEN"):
        secrets_env.load(sandbox=False)


def test_auth_map_escapes_keys_and_needs_no_bucket_size():
    data = types.SimpleNamespace(basic_auth_realm="Whisper services")
    text = render_auth_map(data, ["sk-a.b+c/d=="])
    assert '"~^Bearer sk-a\\.b\\+c/d==$" 1;' in text
    assert "map_hash_bucket_size" not in "".join(l for l in text.splitlines() if not l.startswith("#"))
    with pytest.raises(secrets_env.UnsafeSecret):
        render_auth_map(data, ["sk-$host"])
    assert nginx_regex("https://portal.x.test") == "https://portal\\.x\\.test"
    with pytest.raises(ValueError):
        nginx_regex('a"b')


def _script(*args):
    return subprocess.run([sys.executable, "-c", ENV_SCRIPT, *args], capture_output=True, text=True, check=True).stdout


def test_env_merge_keeps_absent_values_and_digest_matches(tmp_path):
    old = tmp_path / "old.env"
    old.write_text('# hand-made\nexport HF_TOKEN = "tok-123"\nOTHER=1\n')
    given = tmp_path / "given"
    given.write_text("# header\nSTT_API_KEYS=k1\n")
    out = tmp_path / "out.env"
    _script("merge", str(old), str(given), str(out), "STT_API_KEYS", "HF_TOKEN")
    assert out.read_text() == "# header\nSTT_API_KEYS=k1\nHF_TOKEN=tok-123\n"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    digests = json.loads(_script("digest", str(out)))
    assert digests == [[None, env_line_digest("# header")], ["STT_API_KEYS", env_line_digest("STT_API_KEYS=k1")],
                       ["HF_TOKEN", env_line_digest("HF_TOKEN=tok-123")]]
    # the old file's digest names the variable, never its value
    assert "tok-123" not in _script("digest", str(old))
    # an explicit empty value clears; an absent one with no old value is written empty
    given.write_text("# header\nHF_TOKEN=\n")
    _script("merge", str(old), str(given), str(out), "STT_API_KEYS", "HF_TOKEN")
    assert out.read_text() == "# header\nSTT_API_KEYS=\nHF_TOKEN=\n"


def test_secret_values_never_in_repr():
    assert "x" not in repr(Secret("x" * 3))


def _data(**over):
    from stages.settings import Platform, read_group_data

    return Platform.from_group_data(read_group_data(**over))


def test_nginx_files_keep_the_hosts_auth_map_when_no_key_is_given():
    from stages.web import nginx_files

    data = _data()
    given = nginx_files(data, {"WHISPER_API_KEY": Secret("sk-one")}, with_https=True)
    absent = nginx_files(data, {"WHISPER_API_KEY": None}, with_https=False)
    auth = [f for f in given if f["path"].endswith("whisper-platform-auth.conf")][0]
    assert not auth["keep_existing"] and isinstance(auth["content"], Secret) and auth["mode"] == "600"
    assert [f for f in absent if f["path"].endswith("whisper-platform-auth.conf")][0]["keep_existing"]
    paths = {f["path"] for f in given}
    assert "/etc/nginx/sites-enabled/whisper.srv759970.hstgr.cloud" in paths
    assert "/etc/nginx/sites-enabled/whisper.srv759970.hstgr.cloud" not in {f["path"] for f in absent}


def test_only_our_images_count_as_ours():
    from stages.compose_projects import is_ours

    svc = types.SimpleNamespace(image_name="whisperx")
    assert is_ours("whisperx:src-0123456789ab", svc)
    assert not is_ours("whisperx-whisperx", svc) and not is_ours("whisperx_whisperx:latest", svc)
    assert not is_ours("fedirz/faster-whisper-server:latest-cpu", types.SimpleNamespace(image_name="whisper-faster"))
