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

production = _production if _target in ("production", "all") else []
sandbox = _sandbox if _target in ("sandbox", "all") else []
brownfield = _brownfield if _target == "brownfield" else []
