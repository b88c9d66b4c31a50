"""A real nginx on this machine under a private prefix (tests only): its http{} body as given, `nginx -t` first,
then served in the foreground until stopped."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(root: Path, http_body: str, port: int) -> subprocess.Popen:
    """nginx with `http_body` inside http{} (temp paths under `root`), once `nginx -t` passes and `port` answers."""
    (root / "logs").mkdir(exist_ok=True)
    (root / "nginx.conf").write_text(f"""
daemon off; master_process on; worker_processes 1; user root;
error_log {root}/logs/error.log; pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
{http_body}
}}
""")
    check = subprocess.run([NGINX, "-t", "-p", str(root), "-c", str(root / "nginx.conf")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf")])
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc
