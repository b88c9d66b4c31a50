"""The takeover rules against a real nginx on this machine (a private prefix, plain HTTP on
127.0.0.1), driven by the real operation through `pyinfra @local`: no sandbox host needed.

- a host whose http{} already sets ssl_session_timeout, ssl_session_cache and
  map_hash_bucket_size accepts our rendered files (`nginx -t`);
- a hand-made block claiming our name is disabled, kept in the backup folder, logged; one
  block per name afterwards; a foreign site keeps answering throughout;
- a candidate that fails `nginx -t` is rolled back: previous files back, new ones removed,
  nginx still serving, the deploy fails with nginx's own message;
- `--dry` lists what it would disable and changes nothing; a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import types
import urllib.request

import pytest

from stages import link
from stages.settings import REPO as _REPO, Platform, read_group_data
from stages.nginx_conf import duplicates, parse_dump, server_blocks
from stages.web import render_auth_map, render_http_vhost, render_https_vhost, render_shared, render_tls_params

REPO = _REPO
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PYINFRA = str(REPO / ".venv" / "bin" / "pyinfra")
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (make docker installs it)")
NAME = "whisperx.test.example"
SECRET_KEY = "sk-takeover-" + "s" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settled(port: int, host: str, expected: tuple[int, str], timeout: float = 15) -> tuple[int, str]:
    """The answer once a reload has settled: during a reload the old workers still accept connections
    beside the new ones for a moment, so wait for ten expected answers in a row."""
    deadline = time.monotonic() + timeout
    streak, got = 0, None
    while streak < 10 and time.monotonic() < deadline:
        got = _get(port, host)
        streak = streak + 1 if got == expected else 0
        time.sleep(0.05)
    return got


def _get(port: int, host: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError as e:  # refused, reset, timeout: a failed request
        return 0, str(e)


def _tree(root) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            out[rel] = ("-> " + os.readlink(p)) if os.path.islink(p) else hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture()
def host(tmp_path):
    root = tmp_path / "nginx"
    for d in ("conf.d", "snippets", "sites-available", "sites-enabled", "logs"):
        (root / d).mkdir(parents=True)
    port = _free_port()
    (root / "nginx.conf").write_text(f"""
daemon on; worker_processes 1; user root;
error_log {root}/logs/error.log; pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    # the host's own http-level settings: ours must not collide with them
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
    map_hash_bucket_size 128;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    include {root}/conf.d/*.conf;
    include {root}/sites-enabled/*;
}}
""")
    (root / "sites-available" / "whisperx").write_text(
        f'server {{\n    listen 127.0.0.1:{port};\n    server_name {NAME};\n    return 200 "handmade\\n";\n}}\n')
    (root / "sites-enabled" / "whisperx").symlink_to(root / "sites-available" / "whisperx")
    (root / "sites-available" / "blog").write_text(
        f'server {{\n    listen 127.0.0.1:{port};\n    server_name blog.test.example;\n    return 200 "blog\\n";\n}}\n')
    (root / "sites-enabled" / "blog").symlink_to(root / "sites-available" / "blog")
    nginx = f"{NGINX} -p {root} -c {root}/nginx.conf"
    subprocess.run(nginx.split(), check=True)
    for _ in range(50):
        if (root / "nginx.pid").exists():
            break
        time.sleep(0.1)
    assert _get(port, NAME) == (200, "handmade\n")
    yield types.SimpleNamespace(root=root, port=port, nginx=nginx, backups=tmp_path / "backups", state=tmp_path / "state")
    subprocess.run([*nginx.split(), "-s", "stop"], capture_output=True)


def _ours(port: int, body: str = "ours") -> str:
    return f'# managed by whisper-platform\nserver {{\n    listen 127.0.0.1:{port};\n    server_name {NAME};\n    return 200 "{body}\\n";\n}}\n'


def _apply(h, files, *args, check=True, names=None, ports=None):
    cfg = {
        "files": files, "names": [NAME] if names is None else names, "ports": [h.port] if ports is None else ports, "backup_root": str(h.backups), "state_dir": str(h.state),
        "nginx_dir": str(h.root), "reload": f"{h.nginx} -s reload", "nginx": h.nginx,
    }
    proc = subprocess.run([PYINFRA, "@local", "tests/integration/provision/txn_deploy.py",
                           *([] if "--dry" in args else ["-y"]), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TXN_CONFIG": json.dumps(cfg), "PYTHONPATH": str(REPO)})
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _files(h, body="ours"):
    return [
        {"path": f"{h.root}/sites-available/{NAME}", "content": _ours(h.port, body), "mode": "644"},
        {"path": f"{h.root}/sites-enabled/{NAME}", "link": f"{h.root}/sites-available/{NAME}"},
        {"path": f"{h.root}/conf.d/whisper-platform-auth.conf", "secret": True, "mode": "600",
         "content": f'map $http_authorization $whisper_test {{ default 0; "~^Bearer {SECRET_KEY}$" 1; }}\n'},
    ]


class Prober(threading.Thread):
    """Requests to the foreign site in a loop, bounded in time and count, while a deploy runs."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.results, self.stop = port, [], threading.Event()

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.results) < 5000:
            self.results.append(_get(self.port, "blog.test.example"))
            time.sleep(0.02)


def test_our_rendered_files_pass_nginx_t_next_to_the_hosts_http_settings(host):
    """The host sets ssl_session_* and map_hash_bucket_size in http{}: our files add none of them."""
    values = read_group_data(domain="test.example", tls_mode="selfsigned", selfsigned_dir=str(host.root / "tls"),
                  listen_ipv6=False, http_port=f"127.0.0.1:{_free_port()}", https_port=f"127.0.0.1:{_free_port()}",
                  acme_webroot=str(host.root / "acme"), htpasswd_file=str(host.root / "htpasswd"))
    data = Platform.from_group_data(values)
    (host.root / "tls").mkdir()
    svc = data.services[0]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={svc.vhost}",
                    "-keyout", str(host.root / "tls" / f"{svc.vhost}.key"),
                    "-out", str(host.root / "tls" / f"{svc.vhost}.crt")], check=True, capture_output=True)
    long_key = "sk-" + "k" * 200  # longer than any default map hash bucket
    (host.root / "conf.d" / "whisper-platform.conf").write_text(render_shared(data))
    (host.root / "proxy-key.conf").write_text('default "Bearer pk-test";\n')   # stages/identity.py's line
    (host.root / "conf.d" / "whisper-platform-auth.conf").write_text(render_auth_map(
        data, [long_key, "sk-$host".replace("$", "")], proxy_key_conf=str(host.root / "proxy-key.conf")))
    (host.root / "snippets" / "whisper-platform-tls.conf").write_text(render_tls_params())
    (host.root / "sites-enabled" / "ours-http").write_text(render_http_vhost(svc, data))
    (host.root / "sites-enabled" / "ours").write_text(render_https_vhost(svc, data).replace(
        "include snippets/", f"include {host.root}/snippets/"))
    check = subprocess.run([*host.nginx.split(), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # nothing at http{} level of ours but maps of our own variables
    for name in ("whisper-platform.conf", "whisper-platform-auth.conf"):
        text = (host.root / "conf.d" / name).read_text()
        top = [line.split()[0] for line in text.splitlines() if line and not line[0].isspace() and line[0] not in "#}"]
        assert set(top) == {"map"}, (name, top)
    # the redirect names the vhost, never $host
    assert f"return 308 https://{svc.vhost}$request_uri;" in render_http_vhost(svc, data)


def test_dry_run_lists_and_changes_nothing(host):
    before = _tree(host.root)
    out = _apply(host, _files(host), "--dry", "--diff")
    text = out.stdout + out.stderr
    assert f"Will disable {host.root}/sites-enabled/whisperx" in text
    assert f"Will create {host.root}/sites-available/{NAME}" in text
    assert "secret, contents not shown" in text and SECRET_KEY not in text
    assert _tree(host.root) == before and not host.backups.exists()


def test_takeover_disables_the_handmade_block_keeps_it_and_converges(host):
    prober = Prober(host.port)
    prober.start()
    out = _apply(host, _files(host), "-v")
    settled = _settled(host.port, NAME, (200, "ours\n"))
    prober.stop.set()
    prober.join()
    assert SECRET_KEY not in out.stdout + out.stderr
    assert prober.results and all(r == (200, "blog\n") for r in prober.results)
    assert settled == (200, "ours\n")
    assert not (host.root / "sites-enabled" / "whisperx").exists()
    assert (host.root / "sites-available" / "whisperx").exists()  # the target stays
    [backup] = [p for p in host.backups.iterdir() if p.is_dir()]
    kept = backup / str(host.root / "sites-enabled" / "whisperx").lstrip("/")
    assert kept.is_symlink() and "whisperx" in (host.backups / "changes.log").read_text()
    assert oct(backup.stat().st_mode & 0o777) == "0o700"
    dump = subprocess.run([*host.nginx.split(), "-T"], capture_output=True, text=True)
    assert duplicates(parse_dump(dump.stdout), [NAME], [host.port]) == {}
    assert "conflicting server name" not in dump.stderr
    assert oct((host.root / "conf.d" / "whisper-platform-auth.conf").stat().st_mode & 0o777) == "0o600"
    # second run: nothing to do, no new backup
    again = _apply(host, _files(host), "--json")
    assert json.loads(again.stdout)["results"]["totals"]["success"] == 0, again.stdout[-2000:]
    assert len([p for p in host.backups.iterdir() if p.is_dir()]) == 1
    # rollback by hand: the backup's restore.sh puts the hand-made site back
    subprocess.run(["sh", str(backup / "restore.sh")], check=True, capture_output=True)
    assert _settled(host.port, NAME, (200, "handmade\n")) == (200, "handmade\n")


def test_failed_nginx_t_restores_every_file_and_keeps_serving(host):
    _apply(host, _files(host))
    before = _tree(host.root)
    broken = _files(host, body="new")
    broken.append({"path": f"{host.root}/conf.d/whisper-platform.conf", "mode": "644",
                   "content": "ssl_session_timeout 1d;\n"})  # duplicate of the host's http{} setting
    out = _apply(host, broken, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert '"ssl_session_timeout" directive is duplicate' in text  # nginx's own message
    assert "previous files are back in place" in text
    assert _tree(host.root) == before  # changed file restored, new file removed
    assert _settled(host.port, NAME, (200, "ours\n")) == (200, "ours\n")   # the first apply's reload
    assert _get(host.port, "blog.test.example") == (200, "blog\n")
    assert not (host.state / "nginx-pending").exists()


def test_a_failed_rollback_is_reported_not_swallowed(host, tmp_path):
    """nginx -t fails and putting the files back fails too (here: the backup's copy vanished, as on a disk
    error): the deploy says both, points at restore.sh, and keeps the pending marker for the next run."""
    _apply(host, _files(host))
    wrapper = tmp_path / "nginx-wrapper"
    auth = f"{host.root}/conf.d/whisper-platform-auth.conf".lstrip("/")
    wrapper.write_text(f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = "-t" ]; then rm -f {host.backups}/*/{auth}; echo 'nginx: [emerg] broken on purpose' >&2; exit 1; fi
done
exec {host.nginx} "$@"
""")
    wrapper.chmod(0o755)
    changed = _files(host, body="new")
    changed[2]["content"] = changed[2]["content"].replace(SECRET_KEY, SECRET_KEY + "2")
    out = _apply(types.SimpleNamespace(**{**vars(host), "nginx": str(wrapper)}), changed, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "broken on purpose" in text
    assert "putting the previous files back failed" in text and "restore.sh" in text, text[-3000:]
    assert "previous files are back in place" not in text
    assert (host.state / "nginx-pending").exists()


def test_old_copies_of_the_auth_map_are_rotated_out_of_the_backups(host):
    from stages.nginx_txn import SECRET_BACKUPS_KEPT

    auth = f"{host.root}/conf.d/whisper-platform-auth.conf".lstrip("/")
    for i in range(SECRET_BACKUPS_KEPT + 3):
        files = _files(host)
        files[2]["content"] = files[2]["content"].replace(SECRET_KEY, f"{SECRET_KEY}{i}")
        _apply(host, files)
        time.sleep(1.1)   # one backup folder per second
    backups = sorted(p for p in host.backups.iterdir() if p.is_dir())
    holding = [b for b in backups if (b / auth).exists()]
    assert holding == backups[-SECRET_BACKUPS_KEPT:], [b.name for b in backups]
    assert all(f"{SECRET_KEY}0" not in (b / auth).read_text() for b in holding)
    # an older backup's restore.sh still runs, and says what it no longer holds
    restored = subprocess.run(["sh", str(backups[1] / "restore.sh")], capture_output=True, text=True)
    assert restored.returncode == 0 and "not kept any more (rotated)" in restored.stderr, restored


def test_server_blocks_of_one_file():
    blocks = server_blocks("/x", "server { listen 80; server_name a.test; }\n")
    assert blocks[0]["names"] == ["a.test"]


def test_retired_site_leaves_in_the_transaction_and_comes_back_on_a_failed_test(host):
    """A retired service's vhost ("absent" items, stages.web): removed with the same backup, nginx -t
    and rollback as every other change; the other site keeps answering; a second run does nothing."""
    _apply(host, _files(host))
    assert _settled(host.port, NAME, (200, "ours\n")) == (200, "ours\n")
    keep = [f for f in _files(host) if f["path"].endswith("auth.conf")]
    gone = [{"path": f"{host.root}/sites-enabled/{NAME}", "absent": True},
            {"path": f"{host.root}/sites-available/{NAME}", "absent": True}]
    # nginx -t fails: the vhost files are back, nginx still serves them
    before = _tree(host.root)
    broken = {"path": f"{host.root}/conf.d/whisper-platform.conf", "mode": "644", "content": "ssl_session_timeout 1d;\n"}
    out = _apply(host, keep + gone + [broken], check=False)
    assert out.returncode != 0 and "previous files are back in place" in out.stdout + out.stderr
    assert _tree(host.root) == before
    assert _settled(host.port, NAME, (200, "ours\n")) == (200, "ours\n")
    # the dry run lists the removals and changes nothing
    dry = _apply(host, keep + gone, "--dry")
    assert f"Will remove {host.root}/sites-enabled/{NAME} (a retired service's" in dry.stdout + dry.stderr
    assert _tree(host.root) == before
    # the real run: both gone, kept in the backup, the other site untouched
    _apply(host, keep + gone)
    assert not os.path.lexists(host.root / "sites-enabled" / NAME) and not (host.root / "sites-available" / NAME).exists()
    assert _settled(host.port, NAME, (200, "blog\n")) == (200, "blog\n")   # nginx's default server for the port now
    assert _get(host.port, "blog.test.example") == (200, "blog\n")
    assert f"removed {host.root}/sites-available/{NAME}" in (host.backups / "changes.log").read_text()
    backup = sorted(p for p in host.backups.iterdir() if p.is_dir())[-1] / str(host.root).lstrip("/")
    assert (backup / "sites-enabled" / NAME).is_symlink() and (backup / "sites-available" / NAME).read_text() == _ours(host.port)
    again = _apply(host, keep + gone, "--json")
    assert json.loads(again.stdout)["results"]["totals"]["success"] == 0, again.stdout[-2000:]


def _handshake(port: int, cafile) -> bool:
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
                ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True
    except OSError:
        return False


def test_the_link_server_goes_through_the_same_all_or_nothing_step(host, tmp_path):
    """stages/link.py hands the link's CA, certificate, key (a secret) and server to nginx_apply: written, tested,
    reloaded; a candidate nginx refuses is rolled back to the link's previous files; a second run changes nothing;
    without worker hosts its files leave in the same step."""
    pki = tmp_path / "pki"
    pki.mkdir()
    cert, key = link.issue(pki, "front", server_address="127.0.0.1")
    ca_text = (pki / "ca.crt").read_text()
    link_dir = host.root / "link"
    link_dir.mkdir(mode=0o700)
    port = _free_port()
    conf = link.render_conf(link_address="127.0.0.1", link_https_port=port, link_dir=str(link_dir),
                            services=[("faster", host.port)],
                            pinned=[("w1", link.cert_fingerprint(link.issue(pki, "w1")[0]))])
    paths = [str(link_dir / "ca.crt"), str(link_dir / "server.crt"), str(link_dir / "server.key"),
             f"{host.root}/conf.d/whisper-platform-link.conf"]

    def items(ca=ca_text):
        return [{"path": paths[0], "content": ca, "mode": "644"}, {"path": paths[1], "content": cert, "mode": "644"},
                {"path": paths[2], "content": key.reveal(), "secret": True, "mode": "600"},
                {"path": paths[3], "content": conf, "mode": "644"}]

    out = _apply(host, items(), names=[], ports=[])
    assert key.reveal() not in out.stdout + out.stderr
    assert (link_dir / "server.key").stat().st_mode & 0o777 == 0o600
    deadline = time.monotonic() + 15
    while not _handshake(port, pki / "ca.crt") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _handshake(port, pki / "ca.crt")
    again = _apply(host, items(), "--json", names=[], ports=[])
    assert json.loads(again.stdout)["results"]["totals"]["success"] == 0, again.stdout[-2000:]
    assert len([p for p in host.backups.iterdir() if p.is_dir()]) == 1
    time.sleep(1.1)   # one backup folder per second
    bad = _apply(host, items(ca="not a certificate\n"), names=[], ports=[], check=False)
    assert bad.returncode != 0 and "nginx -t failed" in bad.stdout + bad.stderr
    assert (link_dir / "ca.crt").read_text() == ca_text and _handshake(port, pki / "ca.crt")
    _apply(host, [{"path": path, "absent": True} for path in paths], names=[], ports=[])
    assert not any(os.path.exists(path) for path in paths)
    assert _get(host.port, NAME) == (200, "handmade\n")   # the rest of nginx kept serving
