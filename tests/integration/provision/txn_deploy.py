"""A pyinfra deploy for test_nginx_takeover.py: one nginx_apply against a private nginx on this
machine (`pyinfra @local`), its arguments from the TXN_CONFIG environment variable (JSON)."""

import json
import os

from stages.nginx_txn import nginx_apply
from stages.secrets_env import Secret

cfg = json.loads(os.environ["TXN_CONFIG"])
files = [{**f, "content": Secret(f["content"])} if f.pop("secret", False) else f for f in cfg["files"]]
nginx_apply(name="nginx: our files, all or nothing", files=files, names=cfg["names"], ports=cfg["ports"],
            backup_root=cfg["backup_root"], state_dir=cfg["state_dir"], nginx_dir=cfg["nginx_dir"],
            reload_command=cfg["reload"], nginx=cfg["nginx"])
