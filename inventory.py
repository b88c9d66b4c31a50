"""Hosts. `pyinfra inventory.py deploy.py` deploys to the local sandbox host unless
DEPLOY_TARGET names the production group (`DEPLOY_TARGET=production`).

production: srv759970, SSH as root as in the runbook (override with PRODUCTION_SSH_HOST,
            PRODUCTION_SSH_USER, PRODUCTION_SSH_KEY).
sandbox:    the fresh host `make sandbox` starts: SSH on 127.0.0.1:2222 with the key
            it generates in .sandbox/.
brownfield: DEPLOY_TARGET=brownfield: the twin of srv759970's hand-made state that
            `make sandbox-brownfield` starts (same ports and key as the sandbox, one of the two
            at a time); group data: production's values plus the sandbox's offline build settings.
"""

import os
from pathlib import Path

_here = Path(__file__).resolve().parent
_target = os.environ.get("DEPLOY_TARGET", "sandbox")

_production = [
    (
        "srv759970",
        {
            "ssh_hostname": os.environ.get("PRODUCTION_SSH_HOST", "69.62.108.82"),
            "ssh_user": os.environ.get("PRODUCTION_SSH_USER", "root"),
            **({"ssh_key": os.environ["PRODUCTION_SSH_KEY"]} if os.environ.get("PRODUCTION_SSH_KEY") else {}),
        },
    )
]

_sandbox = [
    (
        "sandbox",
        {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": int(os.environ.get("SANDBOX_SSH_PORT", "2222")),
            "ssh_user": "root",
            "ssh_key": str(_here / ".sandbox" / "id_ed25519"),
            # the sandbox is re-created often: its host key changes every time
            "ssh_known_hosts_file": str(_here / ".sandbox" / "known_hosts"),
            "ssh_strict_host_key_checking": "accept-new",
        },
    )
]

_brownfield = [("brownfield", dict(_sandbox[0][1]))]

# SANDBOX_SERVICES=faster: the sandbox deploys only these services (a quicker loop while developing)
if os.environ.get("SANDBOX_SERVICES"):
    _keep = set(os.environ["SANDBOX_SERVICES"].split(","))
    _sandbox[0][1]["service_overrides_extra"] = {k: {"enabled": k in _keep} for k in ("faster", "whisperx")}

# worker hosts (stages/workers.py): extra machines that run jobs for the front host. Each one's knobs
# (worker_services, worker_model, worker_device, worker_concurrency, ...) go in its host data here, defaults in
# stages/settings.py's WorkerHost. The front (the production or sandbox host) reaches them over the link: set its
# `link_address` (an address of the front that the workers reach, e.g. its private network address).
#   _production_workers = [("gpu1", {"ssh_hostname": "10.0.0.12", "worker_device": "cuda"})]
_production_workers = []
if _production_workers:
    _production[0][1]["link_address"] = os.environ.get("PRODUCTION_LINK_ADDRESS", "")

# sandbox worker hosts: SANDBOX_WORKERS="name:ssh_port,..." (sandbox/worker-up.sh starts them on the front's
# private Docker network and writes the front's address on it to .sandbox/link-address)
_sandbox_workers = []
for _entry in filter(None, os.environ.get("SANDBOX_WORKERS", "").split(",")):
    _name, _, _port = _entry.partition(":")
    _sandbox_workers.append((_name, {**_sandbox[0][1], "ssh_port": int(_port or 22),
                                     "service_overrides_extra": {}}))
if _sandbox_workers:
    _sandbox[0][1]["link_address"] = (_here / ".sandbox" / "link-address").read_text().strip()

production = _production if _target in ("production", "all") else []
sandbox = _sandbox if _target in ("sandbox", "all") else []
brownfield = _brownfield if _target == "brownfield" else []
# the worker hosts of the target's front: their own group, plus the front's group for its settings (images,
# models); deploy.py gives them the worker stages only
workers = ([] if _target not in ("production", "all") else _production_workers) \
    + ([] if _target not in ("sandbox", "all") else _sandbox_workers)
production = production + [name for name, _ in _production_workers if _target in ("production", "all")]
sandbox = sandbox + [name for name, _ in _sandbox_workers if _target in ("sandbox", "all")]
