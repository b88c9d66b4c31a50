"""Stage "model store": the services' user, the model store and the HuggingFace cache on the host,
and the local model folders group data asks to upload (hosts without a model hub)."""

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.ops import synced_tree
from stages.settings import GroupDataError, Platform


@deploy("Model store and caches")
def model_store(p: Platform):
    # the images' non-root user, named on the host so ownership is readable (and comparable)
    server.group(name="Service user group", group=p.app_user, gid=p.app_uid, system=True)
    server.user(name="Service user (uid of the images' app user)", user=p.app_user, uid=p.app_uid,
                group=p.app_user, shell="/usr/sbin/nologin", home=p.state_dir, create_home=False, system=True)
    files.directory(name="HuggingFace cache (writable by the services)", path=p.hf_cache_dir,
                    user=p.app_user, group=p.app_user, mode="755")
    files.directory(name="Model store", path=p.models_dir, mode="755")
    for name, local in p.model_uploads.items():
        if not local:
            raise GroupDataError(f"model_uploads[{name!r}]", "names no local folder")
        if not Path(local).is_dir():
            raise GroupDataError(f"model_uploads[{name!r}]", f"{local} is not a folder on the deploying machine (the "
                                 "sandbox's shipped models: `make sandbox` or `python -m sandbox.models` makes them)")
        synced_tree(f"Upload model {name}", local, f"{p.models_dir}/{name}", mode="644", dir_mode="755")
