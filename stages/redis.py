"""Stage "redis": Redis (Debian's redis-server) for the asynchronous jobs: loopback and a unix socket only, a password
generated on the host and kept there, AOF persistence, a memory limit without eviction.

The password and the webhook secret are generated on the host once (`jobs_env_file`, root 0600) and never
leave it: the compose projects read that file as a second env_file, and Redis's auth include is written
from it. A deploy never prints them and a second run leaves them as they are.
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from stages.ops import CommandSucceeds
from stages.restoring import restored
from stages.settings import REPO, Platform
from stages.signals import changed, restart_unit

REDIS_CONF = "/etc/redis/redis.conf"
OUR_CONF = "/etc/redis/whisper-platform.conf"
AUTH_CONF = "/etc/redis/whisper-platform-auth.conf"


def generate_secrets_command(path: str) -> str:
    q = shlex.quote(path)
    return (f"install -d -m 700 {shlex.quote(path.rsplit('/', 1)[0])} && (umask 077; "
            f"printf 'REDIS_PASSWORD=%s\\nSTT_WEBHOOK_SECRET=%s\\n' \"$(openssl rand -hex 24)\" "
            f"\"$(openssl rand -hex 32)\" > {q}.new && mv {q}.new {q})")


def auth_conf_command(path: str) -> str:
    """Redis's requirepass line from the host's secret file, written root:redis 0640 (no secret in argv)."""
    return (f"(umask 027; sed -n 's/^REDIS_PASSWORD=\\(.*\\)$/requirepass \\1/p' {shlex.quote(path)} "
            f"> {AUTH_CONF}.new) && chown root:redis {AUTH_CONF}.new && chmod 640 {AUTH_CONF}.new "
            f"&& mv {AUTH_CONF}.new {AUTH_CONF}")


@deploy("Redis for asynchronous jobs")
def redis_server(p: Platform):
    if not p.jobs_enabled:
        return
    install = apt.packages(name="Install redis-server", packages=["redis-server"], no_recommends=True,
                           _env={"DEBIAN_FRONTEND": "noninteractive"})
    # a restore from a backup writes the file earlier in this run (stages.restoring): nothing to generate then
    secrets_missing = restored(p.jobs_env_file) is None \
        and not host.get_fact(CommandSucceeds, command=f"test -s {shlex.quote(p.jobs_env_file)}")
    if secrets_missing:
        server.shell(name=f"Generate the Redis password and webhook secret on the host ({p.jobs_env_file})",
                     commands=[generate_secrets_command(p.jobs_env_file)])
    auth_missing = not host.get_fact(CommandSucceeds, command=f"test -s {AUTH_CONF}")
    auth = None
    if secrets_missing or auth_missing:
        auth = server.shell(name="Redis password include (from the host's secret file)",
                            commands=[auth_conf_command(p.jobs_env_file)])
    conf = files.template(name="Redis settings for the jobs", src=str(REPO / "templates/redis/whisper-platform.conf.j2"),
                          dest=OUR_CONF, mode="644", redis_port=p.redis_port,
                          redis_maxmemory=p.redis_maxmemory)
    includes = [files.line(name=f"redis.conf includes {path}", path=REDIS_CONF, line=f"include {path}")
                for path in (OUR_CONF, AUTH_CONF)]
    # installed by this very run on a fresh host: a plain restart (see stages.signals)
    restart_unit("redis-server", changed(install, conf, auth, *includes),
                 "its settings changed; queued jobs are kept in its AOF", enable=True)
    systemd.service(name="Redis running and enabled", service="redis-server", running=True, enabled=True)
    files.directory(name="Jobs folder", path=p.jobs_dir, user=p.app_user, group=p.app_user, mode="750")
