"""Stages 2 and 3: each service's compose project and its root-only .env of secrets.

A service is recreated only when its compose file or .env changed AND it is running;
a stopped one stays stopped (the autostart proxy starts it with the new settings).
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from stages.config import REPO, image_tag, services
from stages.ops import CommandSucceeds, ContainerImage, EnvFileDigest, compose_command, env_line_digest, env_secret_file
from stages.secrets_env import Secret, api_keys


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


def ensure_api_key(secrets: dict, data) -> None:
    """The services refuse to run without a key: when WHISPER_API_KEY is absent and the host holds none
    yet (a first deploy), generate one. It goes into the services' .env and nginx's auth map (nginx adds it
    for basic-auth users) and stays on the host; later runs without WHISPER_API_KEY keep it."""
    if api_keys(secrets) is not None:
        return
    first = services(data)[0]
    if host_has_api_key(host.get_fact(EnvFileDigest, path=f"{first['project_dir']}/.env")):
        return
    import secrets as random
    secrets["WHISPER_API_KEY"] = Secret("sk-" + random.token_urlsafe(32))
    host.log(f"WHISPER_API_KEY not given and none on the host: generated one (root-only, never printed: "
             f"STT_API_KEYS in {first['project_dir']}/.env)")


def env_values(svc: dict, secrets: dict) -> dict[str, Secret | None]:
    """NAME -> value for the service's .env, in order; None keeps the host's value (the variable
    was absent from the deploy's environment)."""
    keys = api_keys(secrets)
    values = {
        "STT_API_KEYS": None if keys is None else Secret(",".join(keys)),
        "HF_TOKEN": secrets.get("HF_TOKEN"),
    }
    return {name: values[name] for name in svc["secrets"]}


def env_file(svc: dict, secrets: dict) -> Secret:
    """The .env text when every value is given (None values are written empty)."""
    lines = [ENV_HEADER]
    lines += [f"{name}={value.reveal() if value is not None else ''}" for name, value in env_values(svc, secrets).items()]
    return Secret("\n".join(lines) + "\n")


def jobs_settings(svc: dict, data):
    """What the compose template needs for a service's asynchronous jobs; None when jobs are off."""
    if not data.jobs_enabled:
        return None
    return {"env_file": data.jobs_env_file, "dir": f"{data.jobs_dir}/{svc['key']}", "ttl": int(data.job_ttl),
            "max_seconds": int(data.job_max_seconds), "retries": int(data.job_retries),
            "worker_name": host.name}   # a job's status names the host that ran it (issue 14)


def is_ours(image: str, svc: dict) -> bool:
    """Whether a container's image is one this deploy builds for the service (`<image_name>:src-<hash>`)."""
    return image.startswith(f"{svc['image_name']}:src-")


@deploy("Model store and caches")
def model_store():
    data = host.data
    # the images' non-root user, named on the host so ownership is readable (and comparable)
    server.group(name="Service user group", group=data.app_user, gid=data.app_uid, system=True)
    server.user(name="Service user (uid of the images' app user)", user=data.app_user, uid=data.app_uid,
                group=data.app_user, shell="/usr/sbin/nologin", home=data.state_dir, create_home=False, system=True)
    files.directory(name="HuggingFace cache (writable by the services)", path=data.hf_cache_dir,
                    user=data.app_user, group=data.app_user, mode="755")
    files.directory(name="Model store", path=data.models_dir, mode="755")
    for name, local in (data.model_uploads or {}).items():
        if not local:
            raise ValueError(f"model_uploads[{name!r}] names no local folder")
        files.sync(name=f"Upload model {name}", src=local, dest=f"{data.models_dir}/{name}",
                   delete=True, mode="644", dir_mode="755")


@deploy("Compose projects and secrets")
def compose_projects(secrets: dict[str, Secret]):
    data = host.data
    compose = compose_command(data.compose_flavour)
    for svc in services(data):
        project = svc["project_dir"]
        files.directory(name=f"{svc['key']}: project folder", path=project, mode="755")
        if data.jobs_enabled:
            files.directory(name=f"{svc['key']}: jobs folder", path=f"{data.jobs_dir}/{svc['key']}",
                            user=data.app_user, group=data.app_user, mode="750")
        # a hand-made project (the runbook's) is kept in the backup folder before we write ours
        compose_path = f"{project}/docker-compose.yml"
        if not host.get_fact(CommandSucceeds, command=f"grep -q 'managed by whisper-platform' {shlex.quote(compose_path)}") \
                and host.get_fact(File, path=compose_path):
            backup = f"{data.takeover_backup_dir}/{svc['key']}"
            server.shell(
                name=f"{svc['key']}: keep the hand-made project files in {backup}",
                commands=[f"install -d -m 700 {shlex.quote(backup)}",
                          f"cp -a {shlex.quote(project)}/. {shlex.quote(backup)}/"],
            )
        env = env_secret_file(
            name=f"{svc['key']}: .env (secrets; absent variables keep the host's values)",
            path=f"{project}/.env",
            header=ENV_HEADER,
            values=env_values(svc, secrets),
            staging_dir=f"{data.state_dir}/staging",
        )
        compose_file = files.template(
            name=f"{svc['key']}: docker-compose.yml",
            src=str(REPO / "templates/compose/service.yml.j2"),
            dest=f"{project}/docker-compose.yml",
            mode="644",
            svc=svc,
            image_tag=image_tag(svc, data),
            timezone=data.timezone,
            body_limit_mb=body_limit_mb(data.body_limit),
            hf_cache_dir=data.hf_cache_dir,
            models_dir=data.models_dir,
            jobs=jobs_settings(svc, data),
        )
        q = shlex.quote(project)
        # a container of the same name that is not ours (the runbook's hand-made one) is removed; its
        # image stays for a rollback. If it was running, ours takes its place right away.
        foreign = host.get_fact(ContainerImage, container=svc["container"])
        taken_over = None
        if foreign and not is_ours(foreign["image"], svc):
            c = shlex.quote(svc["container"])
            taken_over = server.shell(
                name=f"{svc['key']}: replace the hand-made container {svc['container']} "
                     f"({foreign['image']}, image kept)",
                commands=[f"docker rm -f {c}"]
                + ([f"cd {q} && {compose} up -d"] if foreign["running"] else []),
            )
        server.shell(
            name=f"{svc['key']}: recreate if running (settings changed)",
            commands=[
                f"cd {q} && if [ -n \"$({compose} ps -q 2>/dev/null | xargs -r docker inspect -f '{{{{.State.Running}}}}' | grep -x true)\" ]; "
                f"then {compose} up -d; else echo 'not running: the autostart proxy starts it on demand'; fi"
            ],
            _if=lambda env=env, compose_file=compose_file, t=taken_over: (env.did_change() or compose_file.did_change())
            and not (t and t.did_change()),
        )
