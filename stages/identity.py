"""Who a request comes from, as nginx tells the services: the proxy key.

nginx accepts an API key or a basic-auth user. For an API key it passes the client's own `Authorization`; for a
basic-auth user it sends `Authorization: Bearer <proxy key>` and the user's name in `X-STT-User` (always set by
nginx, so a client cannot choose it). The services take the proxy key only with a user name, and a user name only
with the proxy key (stt_common/auth.py), so each basic-auth user is a caller of its own: its own jobs, quotas and
webhook secret. No client ever holds the proxy key.

The key is made on the host at the first deploy and stays there, like the Redis password: `proxy.env` beside
`jobs_env_file` (root 0600, an env_file of the services' compose projects) and the line nginx's auth map
includes (`PROXY_KEY_CONF`, root 0600). Neither is printed nor leaves the host.
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from stages.ops import CommandSucceeds
from stages.settings import Platform

PROXY_KEY_CONF = "/etc/nginx/whisper-platform-proxy-key.conf"   # not under conf.d: only the auth map includes it


def proxy_env_file(p: Platform) -> str:
    return posixpath.join(posixpath.dirname(p.jobs_env_file), "proxy.env")


def generate_command(env_file: str) -> str:
    q = shlex.quote(env_file)
    return (f"install -d -m 700 {shlex.quote(posixpath.dirname(env_file))} && (umask 077; "
            f"printf 'STT_PROXY_KEY=%s\\n' \"pk-$(openssl rand -hex 32)\" > {q}.new && mv {q}.new {q})")


def nginx_line_command(env_file: str, dest: str = PROXY_KEY_CONF) -> str:
    """The auth map's default value from the host's file, written root-only (no secret in argv)."""
    q = shlex.quote(dest)
    return (f"(umask 077; sed -n 's/^STT_PROXY_KEY=\\(.*\\)$/default \"Bearer \\1\";/p' {shlex.quote(env_file)} "
            f"> {q}.new) && mv {q}.new {q}")


@deploy("Identity: the proxy key nginx vouches for basic-auth users with")
def proxy_key(p: Platform):
    env_file = proxy_env_file(p)
    missing = not host.get_fact(CommandSucceeds, command=f"grep -qs '^STT_PROXY_KEY=pk-' {shlex.quote(env_file)}")
    if missing:
        server.shell(name=f"Generate the proxy key on the host ({env_file})", commands=[generate_command(env_file)])
    if missing or not host.get_fact(CommandSucceeds, command=f"grep -qs Bearer {PROXY_KEY_CONF}"):
        server.shell(name=f"nginx: the proxy key line of the auth map ({PROXY_KEY_CONF}, from the host's file)",
                     commands=[nginx_line_command(env_file),
                               # an auth map that includes it already (a key made again): nginx reads the new one
                               f"if grep -qs {PROXY_KEY_CONF} /etc/nginx/conf.d/whisper-platform-auth.conf; then "
                               "nginx -t 2>/dev/null && systemctl reload nginx; fi; true"])
