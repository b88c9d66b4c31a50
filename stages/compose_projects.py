"""Stage "compose projects": each service's compose project and its root-only .env of secrets.

A service is recreated only when its compose file or .env changed AND it is running;
a stopped one stays stopped (the autostart proxy starts it with the new settings). A container
the compose file no longer names (the job worker, once `jobs_enabled` is False) is removed then.

A service turned off (`services[...].enabled` False) that this deploy put on the host (its compose
file carries our marker) is retired by `retire_services`, the last stage: its vhosts and its
autostart entry are gone by then (stages.web, stages.autostart), so nothing starts it again, and
`compose down` removes its containers and its job worker. Its image, project folder, .env and
models stay: turning it back on is one deploy and loses nothing. A disabled service never
deployed here, or a hand-made project in its folder, is left alone.
"""

import secrets
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from stages.images import image_tag
from stages.redis import CONTAINER_SOCKET_DIR, SOCKET_NAME
from stages.ops import CommandSucceeds, ComposeFlavour, ContainerImage, EnvFileDigest, compose_command, \
    env_line_digest, env_secret_file
from stages.secrets_env import Secret, api_keys
from stages import link, marker
from stages.retired import retired_services
from stages.settings import REPO, Platform, ServiceEntry
from stages.signals import changed


def body_limit_mb(limit: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024}
    limit = str(limit).strip().upper()
    if limit[-1] in units:
        return max(1, int(float(limit[:-1]) * units[limit[-1]]))
    return max(1, int(limit) // (1024 * 1024))


ENV_HEADER = "# secrets for this service: written by the deploy, root-only, never in git"


def host_has_api_key(digests) -> bool:
    """Whether a .env (EnvFileDigest's [[name, digest]]) holds a non-empty STT_API_KEYS."""
    empty = env_line_digest("STT_API_KEYS=")
    return any(name == "STT_API_KEYS" and digest != empty for name, digest in digests or [])


def ensure_api_key(env_secrets: dict, p: Platform) -> None:
    """The services refuse to run without a key: when WHISPER_API_KEY is absent and the host holds none
    yet (a first deploy), generate one. It goes into the services' .env and nginx's auth map (nginx adds it
    for basic-auth users) and stays on the host; later runs without WHISPER_API_KEY keep it."""
    if api_keys(env_secrets) is not None:
        return
    first = p.services[0]
    if host_has_api_key(host.get_fact(EnvFileDigest, path=f"{first.project_dir}/.env")):
        return
    env_secrets["WHISPER_API_KEY"] = Secret("sk-" + secrets.token_urlsafe(32))
    host.log(f"WHISPER_API_KEY not given and none on the host: generated one (root-only, never printed: "
             f"STT_API_KEYS in {first.project_dir}/.env)")


def env_values(svc: ServiceEntry, env_secrets: dict) -> dict[str, Secret | None]:
    """NAME -> value for the service's .env, in order; None keeps the host's value (the variable
    was absent from the deploy's environment)."""
    keys = api_keys(env_secrets)
    values = {
        "STT_API_KEYS": None if keys is None else Secret(",".join(keys)),
        "HF_TOKEN": env_secrets.get("HF_TOKEN"),
    }
    return {name: values[name] for name in svc.secrets}


def env_file(svc: ServiceEntry, env_secrets: dict) -> Secret:
    """The .env text when every value is given (None values are written empty)."""
    lines = [ENV_HEADER]
    lines += [f"{name}={value.reveal() if value is not None else ''}" for name, value in env_values(svc, env_secrets).items()]
    return Secret("\n".join(lines) + "\n")


def jobs_settings(svc: ServiceEntry, p: Platform, worker_name: str = "", relays: int = 0):
    """What the compose template needs for a service's asynchronous jobs; None when jobs are off.
    `worker_name` (the inventory's name of the host) is what a job's status names as its worker; `relays` how many
    worker-host slots take this service's jobs (stages/link.py: that many relay processes on the front)."""
    if not p.jobs_enabled:
        return None
    from stages.link import CONTAINER_WORKERS_FILE, LINK_WORKERS_DIR
    return {"env_file": p.jobs_env_file, "dir": f"{p.jobs_dir}/{svc.key}", "ttl": p.job_ttl,
            "max_seconds": p.job_max_seconds, "retries": p.job_retries,
            "worker_name": worker_name, "quota_jobs": p.job_quota_jobs, "quota_mb": p.job_quota_mb,
            "max_queued": p.jobs_max_queued, "max_stored_mb": p.jobs_max_stored_mb,
            "webhook_timeout": p.webhook_timeout, "relays": relays, "min_free_mb": p.jobs_min_free_mb,
            "socket_dir": p.redis_socket_dir, "socket_dir_in_container": CONTAINER_SOCKET_DIR,
            "socket": f"{CONTAINER_SOCKET_DIR}/{SOCKET_NAME}",
            "link_workers_dir": LINK_WORKERS_DIR, "link_workers_dir_in_container": CONTAINER_WORKERS_FILE.rsplit("/", 1)[0],
            "link_workers_file": CONTAINER_WORKERS_FILE}


def log_settings(p: Platform) -> dict:
    """Docker's `local` log driver's limits for our containers (compose files only, never daemon.json)."""
    return {"max_size": p.container_log_max_size, "max_files": p.container_log_max_files}


def speakers_folder(svc: ServiceEntry, p: Platform) -> str:
    """A service's enrolled voices on the host (embeddings per caller; in the backups)."""
    return f"{p.speakers_dir}/{svc.key}"


def project_containers(svc: ServiceEntry, p: Platform, relays: int = 0) -> list[str]:
    """The containers templates/compose/service.yml.j2 names: the API, its job worker when jobs are on, and the
    worker hosts' relays when some take its jobs."""
    return ([svc.container] + ([f"{svc.container}-worker"] if p.jobs_enabled else [])
            + ([f"{svc.container}-relay"] if p.jobs_enabled and relays else []))


def made_from(svc: ServiceEntry, p: Platform) -> list[str]:
    """The files compose makes a service's containers from: its compose file and every env file that names."""
    from stages.identity import proxy_env_file

    return ([f"{svc.project_dir}/docker-compose.yml", f"{svc.project_dir}/.env", proxy_env_file(p)]
            + ([p.jobs_env_file] if p.jobs_enabled else []))


def compose_values(svc: ServiceEntry, p: Platform, worker_name: str = "", relays: int = 0) -> dict:
    """Everything templates/compose/service.yml.j2 renders from (the stage's files.template, the tests)."""
    from stages.identity import proxy_env_file

    return {"svc": svc, "image_tag": image_tag(svc, p), "timezone": p.timezone,
            "body_limit_mb": body_limit_mb(p.body_limit), "hf_cache_dir": p.hf_cache_dir,
            "models_dir": p.models_dir, "jobs": jobs_settings(svc, p, worker_name=worker_name, relays=relays),
            "proxy_env_file": proxy_env_file(p), "logs": log_settings(p),
            "speakers_dir": speakers_folder(svc, p) if svc.speaker_store else ""}


def retire_commands(svc: ServiceEntry, compose: str, containers: dict) -> list[str]:
    """What retires a service whose containers (name -> ContainerImage fact) are these: `compose down`
    when any of them is ours (image, volumes, folder and .env stay); nothing when none is left."""
    if not any(info and is_ours(info["image"], svc) for info in containers.values()):
        return []
    return [f"cd {shlex.quote(svc.project_dir)} && {locked(svc.project_dir)}{compose} down"]


def locked(project_dir: str) -> str:
    """`flock <project folder> ` before a compose command: the lock the autostart proxy holds around its own compose
    runs in that folder (docker_autostart.docker.Docker.locked), so that a deploy recreating a project and the
    proxy starting it for a request never run compose on it at once (the recreate then failed: "Renaming a
    container with the same name as its current name")."""
    return f"flock {shlex.quote(project_dir)} "


def is_ours(image: str, svc: ServiceEntry) -> bool:
    """Whether a container's image is one this deploy builds for the service (`<image_name>:src-<hash>`)."""
    return image.startswith(f"{svc.image_name}:src-")


@deploy("Compose projects and secrets")
def compose_projects(p: Platform, env_secrets: dict[str, Secret]):
    # the packages stage installs Compose where the host has none; the fact says which one it is
    compose = compose_command(host.get_fact(ComposeFlavour))
    for svc in p.services:
        project = svc.project_dir
        files.directory(name=f"{svc.key}: project folder", path=project, mode="755")
        if p.jobs_enabled:
            files.directory(name=f"{svc.key}: jobs folder", path=f"{p.jobs_dir}/{svc.key}",
                            user=p.app_user, group=p.app_user, mode="750")
        if svc.speaker_store:
            files.directory(name=f"{svc.key}: enrolled voices folder", path=speakers_folder(svc, p),
                            user=p.app_user, group=p.app_user, mode="700")
        # a hand-made project (the runbook's) is kept in the backup folder before we write ours
        compose_path = f"{project}/docker-compose.yml"
        if not host.get_fact(CommandSucceeds, command=marker.owned_command(compose_path)) \
                and host.get_fact(File, path=compose_path):
            backup = f"{p.takeover_backup_dir}/{svc.key}"
            server.shell(
                name=f"{svc.key}: keep the hand-made project files in {backup}",
                commands=[f"install -d -m 700 {shlex.quote(backup)}",
                          f"cp -a {shlex.quote(project)}/. {shlex.quote(backup)}/"],
            )
        env = env_secret_file(
            name=f"{svc.key}: .env (secrets; absent variables keep the host's values)",
            path=f"{project}/.env",
            header=ENV_HEADER,
            values=env_values(svc, env_secrets),
            staging_dir=f"{p.state_dir}/staging",
        )
        compose_file = files.template(
            name=f"{svc.key}: docker-compose.yml",
            src=str(REPO / "templates/compose/service.yml.j2"),
            dest=f"{project}/docker-compose.yml",
            mode="644",
            **compose_values(svc, p, worker_name=host.name, relays=link.relays(svc.key)),
        )
        q = shlex.quote(project)
        # a container of the same name that is not ours (the runbook's hand-made one) is removed; its
        # image stays for a rollback. If it was running, ours takes its place right away.
        foreign = host.get_fact(ContainerImage, container=svc.container)
        taken_over = None
        if foreign and not is_ours(foreign["image"], svc):
            c = shlex.quote(svc.container)
            taken_over = server.shell(
                name=f"{svc.key}: replace the hand-made container {svc.container} "
                     f"({foreign['image']}, image kept)",
                commands=[f"docker rm -f {c}"]
                + ([f"cd {q} && {locked(project)}{compose} up -d"] if foreign["running"] else []),
            )
        server.shell(
            name=f"{svc.key}: recreate if running (settings changed)",
            commands=[
                f"cd {q} && if [ -n \"$({compose} ps -q 2>/dev/null | xargs -r docker inspect -f '{{{{.State.Running}}}}' | grep -x true)\" ]; "
                f"then {locked(project)}{compose} up -d --remove-orphans; "
                f"else echo 'not running: the autostart proxy starts it on demand'; fi"
            ],
            # the takeover above already started ours with these files
            _if=changed(env, compose_file, unless=taken_over),
        )


@deploy("Retired services")
def retire_services(p: Platform):
    retired = retired_services(p)
    if not retired:
        return
    compose = compose_command(host.get_fact(ComposeFlavour))
    for svc in retired:
        containers = {name: host.get_fact(ContainerImage, container=name)
                      for name in (svc.container, f"{svc.container}-worker")}
        commands = retire_commands(svc, compose, containers)
        if commands:
            server.shell(
                name=f"{svc.key}: retire (enabled False): compose down, its containers and job worker removed "
                     f"(image, {svc.project_dir}/.env and models kept)",
                commands=commands,
            )
