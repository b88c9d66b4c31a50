"""Stage "redis": Redis (Debian's redis-server) for the asynchronous jobs: loopback and a unix socket only, a password
generated on the host and kept there, AOF persistence, a memory limit without eviction.

The socket lives in a folder of ours (`redis_socket_dir`), which the services' containers bind-mount. It is not
Redis's own RuntimeDirectory (/run/redis): systemd deletes that folder and makes a new one whenever Redis stops
and starts (a restart, a package upgrade), and a container's bind mount keeps pointing at the deleted one, so
the containers would never reach Redis again until they were recreated. Our folder is made at boot by
systemd-tmpfiles and deleted by nothing while the host runs: Redis unlinks and binds its socket again inside it,
and the containers see the new socket at once. A drop-in lets the unit (ProtectSystem=strict) write there.

The password and the webhook secret are generated on the host once (`jobs_env_file`, root 0600) and never
leave it: the compose projects read that file as a second env_file, and Redis's auth include is written
from it. A deploy never prints them and a second run leaves them as they are.
"""

import io
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from stages import marker
from stages.ops import CommandSucceeds
from stages.restoring import restored
from stages.settings import REPO, Platform
from stages.signals import beyond_header, changed, restart_unit

REDIS_CONF = "/etc/redis/redis.conf"
OUR_CONF = "/etc/redis/whisper-platform.conf"
AUTH_CONF = "/etc/redis/whisper-platform-auth.conf"
TMPFILES_CONF = "/etc/tmpfiles.d/whisper-platform-redis.conf"
UNIT_DROPIN_DIR = "/etc/systemd/system/redis-server.service.d"
UNIT_DROPIN = f"{UNIT_DROPIN_DIR}/whisper-platform.conf"
# what earlier deploys kept /run/redis with (worker hosts' link): the socket is no longer there
OLD_UNIT_DROPIN = f"{UNIT_DROPIN_DIR}/whisper-platform-run.conf"
SOCKET_NAME = "redis.sock"


def socket_path(p: Platform) -> str:
    """Redis's unix socket on the host (the containers see its folder at CONTAINER_SOCKET_DIR)."""
    return f"{p.redis_socket_dir}/{SOCKET_NAME}"


CONTAINER_SOCKET_DIR = "/run/redis"


def tmpfiles_conf(p: Platform) -> str:
    """systemd-tmpfiles' lines for the socket folder: made at every boot (and by the deploy), setgid to the
    services' group so that the socket Redis creates in it belongs to that group (unixsocketperm 770)."""
    parent = p.redis_socket_dir.rsplit("/", 1)[0] or "/"
    lines = [f"# The folder of Redis's unix socket, which the services' containers mount: {marker.MARKER}.",
             "# Not /run/redis: systemd deletes and makes anew that one on every Redis restart."]
    if parent not in ("/", "/run"):
        lines.append(f"d {parent} 0755 root root -")
    lines.append(f"d {p.redis_socket_dir} 2750 redis {p.app_user} -")
    return "\n".join(lines) + "\n"


def unit_dropin(p: Platform) -> str:
    return (f"# Redis's unit may write its socket folder: {marker.MARKER}. The socket lives in a folder of ours\n"
            "# (redis_socket_dir), which the services' containers mount; the unit's ProtectSystem=strict needs it\n"
            "# listed to write there.\n"
            f"[Service]\nReadWritePaths={p.redis_socket_dir}\n")


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
    tmpfiles = files.put(name="Redis's socket folder at every boot (systemd-tmpfiles)",
                         src=io.StringIO(tmpfiles_conf(p)), dest=TMPFILES_CONF, mode="644")
    server.shell(name=f"Redis's socket folder now ({p.redis_socket_dir})",
                 commands=[f"systemd-tmpfiles --create {TMPFILES_CONF}"], _if=changed(install, tmpfiles))
    dropin_text = unit_dropin(p)
    dropin = files.put(name="Redis's unit may write its socket folder (drop-in)", src=io.StringIO(dropin_text),
                       dest=UNIT_DROPIN, mode="644", create_remote_dir=True)
    old_dropin = files.file(name="Redis: no drop-in keeping /run/redis (the socket moved out of it)",
                            path=OLD_UNIT_DROPIN, present=False)
    systemd.daemon_reload(name="systemd daemon-reload (Redis's drop-in changed)", _if=changed(dropin, old_dropin))
    conf = files.template(name="Redis settings for the jobs", src=str(REPO / "templates/redis/whisper-platform.conf.j2"),
                          dest=OUR_CONF, mode="644", redis_port=p.redis_port,
                          redis_maxmemory=p.redis_maxmemory, redis_socket=socket_path(p))
    includes = [files.line(name=f"redis.conf includes {path}", path=REDIS_CONF, line=f"include {path}")
                for path in (OUR_CONF, AUTH_CONF)]
    # installed by this very run on a fresh host: a plain restart (see stages.signals)
    # a drop-in whose header alone changed (an earlier version's) restarts nothing: Redis runs the same way
    restart_unit("redis-server", changed(install, conf, auth, beyond_header(dropin, UNIT_DROPIN, dropin_text),
                                         *includes),
                 "its settings changed; queued jobs are kept in its AOF", enable=True)
    systemd.service(name="Redis running and enabled", service="redis-server", running=True, enabled=True)
    files.directory(name="Jobs folder", path=p.jobs_dir, user=p.app_user, group=p.app_user, mode="750")
