"""Take a backup on each front host now and pull it to this machine (stages/backup.py; docs/rebuilding.md).

    pyinfra inventory.py backup.py -y                   # or: make backup
    DEPLOY_TARGET=production pyinfra inventory.py backup.py -y

The archive lands in `backup_pull_dir` (group_data), encrypted to `backup_recipients`; with `restore_identity`
set it is also decrypted and checked here. The host keeps its own copy in `backup_dir` (rotated like the
timer's).
"""

from pyinfra import host

from stages import backup
from stages.settings import Platform

if "workers" not in host.groups:   # worker hosts hold nothing to back up: their front holds the jobs
    backup.pull(Platform.from_group_data(host.data))
