"""nginx changes as one all-or-nothing step, and the takeover of hand-made vhosts.

`nginx_apply` compares our files with the host's. When anything differs (or a server block
elsewhere claims one of our names on one of our ports), it:

1. copies every file it will touch into a fresh backup folder
   (`/var/backups/whisper-platform/nginx/<timestamp>/`, full paths kept) and writes `restore.sh` there;
2. disables each enabled file holding a conflicting server block (its sites-enabled link or the
   file itself is removed after the copy; a sites-available target stays where it is);
3. writes our files (secret ones through a root-only staging folder) and removes the ones marked
   "absent" (a retired service's vhost: stages.web);
4. runs `nginx -t`: on success nginx reloads; on failure, or when nginx still warns about a
   conflicting server name of ours, `restore.sh` puts every previous file back (new ones are
   removed), nginx keeps serving its old configuration, and the deploy fails with nginx's message.

A marker file makes a run killed between 3 and 4 test and reload on the next run.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex
import time

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Link, Sha256File
from pyinfra.operations.util.files import generate_color_diff

from stages.nginx_conf import claims
from stages.ops import NginxServerBlocks
from stages.secrets_env import Secret

# names a hand-made block may share a file with ours (nginx's catch-all spellings)
HARMLESS_NAMES = {"", "_", "localhost"}
# backups keep the previous version of each secret file (the auth map: API keys) for this many runs that changed
# it; older copies are deleted, so that keys replaced long ago do not stay on the host in old backups
SECRET_BACKUPS_KEPT = 3


def plan_disable(blocks: list[dict], names: list[str], ports: list[int], ours: set[str],
                 nginx_dir: str = "/etc/nginx") -> dict[str, list[dict]]:
    """{file: [its conflicting blocks]} for the files to disable: every file but ours holding a
    block that claims one of our names on one of our ports. Raises when disabling a file would
    take another site with it, or the file cannot be disabled on its own (nginx.conf itself)."""
    out: dict[str, list[dict]] = {}
    for block in claims(blocks, names, ports):
        if block["file"] in ours:
            continue
        out.setdefault(block["file"], []).append(block)
    wanted = {n.lower() for n in names}
    for path in out:
        if path == f"{nginx_dir}/nginx.conf" or not (path.startswith(f"{nginx_dir}/sites-enabled/")
                                                      or path.startswith(f"{nginx_dir}/conf.d/")):
            raise OperationError(
                f"{path} declares a server block for one of {sorted(wanted)}; it is not a site file this "
                "deploy can disable on its own: move that block into its own file under sites-enabled")
        others = sorted({n for b in blocks if b["file"] == path for n in b["names"]} - wanted - HARMLESS_NAMES)
        if others:
            raise OperationError(
                f"{path} serves {', '.join(others)} next to {sorted(wanted & {n for b in out[path] for n in b['names']})}: "
                "disabling it would take those sites down; split it by hand first")
    return out


def _sha(content) -> str:
    data = content.reveal() if isinstance(content, Secret) else content
    return hashlib.sha256(data.encode()).hexdigest()


@operation()
def nginx_apply(
    files: list[dict],
    names: list[str],
    ports: list[int],
    backup_root: str,
    state_dir: str,
    nginx_dir: str = "/etc/nginx",
    reload_command: str = "systemctl reload-or-restart nginx",
    nginx: str = "nginx",
):
    """files: [{"path", "content" (str or Secret), "mode"}], [{"path", "link"}] (a symlink to
    "link") or [{"path", "absent": True}] (a file or link of ours to remove, if it is there); a
    "keep_existing" file is written only where none exists yet. `nginx` is the command
    that runs nginx (-t, -T): tests point it at a private prefix."""
    from pyinfra import state

    ours = {f["path"] for f in files}
    blocks = host.get_fact(NginxServerBlocks, nginx=nginx)
    disable = plan_disable(blocks, names, ports, ours, nginx_dir)
    pending_marker = f"{state_dir}/nginx-pending"
    pending = bool(host.get_fact(File, path=pending_marker))

    changes = []  # (item, existed)
    for item in files:
        path = item["path"]
        if item.get("absent"):
            if host.get_fact(Link, path=path) or host.get_fact(File, path=path):
                changes.append((item, True))
            continue
        if "link" in item:
            link = host.get_fact(Link, path=path)
            if link and link.get("link_target") == item["link"]:
                continue
            changes.append((item, bool(link) or bool(host.get_fact(File, path=path))))
            continue
        remote = host.get_fact(File, path=path)
        if remote and item.get("keep_existing"):
            continue
        if remote and host.get_fact(Sha256File, path=path) == _sha(item["content"]):
            mode = item.get("mode")
            if mode and str(remote.get("mode")) != mode.lstrip("0"):
                changes.append((item, True))
            continue
        changes.append((item, bool(remote)))

    if not changes and not disable and not pending:
        host.noop("nginx: our files are up to date and no other server block claims our names")
        return

    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = f"{backup_root}/{stamp}"
    planning = not state.is_executing
    for path, conflicting in disable.items():
        where = ", ".join(f"{b['file']}:{b['line']} ({' '.join(b['names'])} on {'/'.join(map(str, b['ports']))})"
                          for b in conflicting)
        host.log(f"Will disable {path}: it claims our server name(s): {where}; kept in {backup}/")
        if planning:
            logger.info("")
    for item, existed in changes:
        path = item["path"]
        if item.get("absent"):
            host.log(f"Will remove {path} (a retired service's; kept in {backup}/)")
        elif "link" in item:
            host.log(f"Will {'replace' if existed else 'create'} link {path} -> {item['link']}")
        elif isinstance(item["content"], Secret):
            host.log(f"Will {'update' if existed else 'create'} {path} (secret, contents not shown)")
        else:
            host.log(f"Will {'modify' if existed else 'create'} {path}"
                     + (f" (previous version kept in {backup}/)" if existed else ""))
            if state.config.DIFF and planning:
                current = host.get_fact(FileContents, path=path) if existed else None
                old = [line + "\n" for line in (current or [])]
                for line in generate_color_diff(old, item["content"].splitlines(keepends=True)):
                    logger.info("  %s", line)
                logger.info("")
    if pending and not changes and not disable:
        host.log("nginx: a previous run stopped before `nginx -t`: testing and reloading now")

    touched = [p for p in disable] + [item["path"] for item, _ in changes]
    existed_paths = [p for p in disable] + [item["path"] for item, existed in changes if existed]
    q = shlex.quote
    head = ["#!/bin/sh", f"# whisper-platform: put back the nginx files as they were before the run of {stamp}",
            "set -e", f"cd {q(backup)}"] + [f"rm -f {q(p)}" for p in touched]
    secret_paths = [item["path"] for item, _ in changes if isinstance(item.get("content"), Secret)]
    # the automatic rollback: every copy must come back, or it fails (and says so)
    auto_restore = "\n".join(head + [f"cp -a {q(p.lstrip('/'))} {q(p)}" for p in existed_paths]) + "\n"
    # the restore script for a rollback by hand: a secret file's copy is deleted once SECRET_BACKUPS_KEPT later
    # runs changed it (it says so); it ends with a reload, which the automatic one needs not (nginx never loaded
    # the candidate)
    restore = head + [f"cp -a {q(p.lstrip('/'))} {q(p)}" if p not in secret_paths else
                      f"if [ -e {q(p.lstrip('/'))} ]; then cp -a {q(p.lstrip('/'))} {q(p)}; "
                      f"else echo 'not kept any more (rotated): {p}' >&2; fi" for p in existed_paths]
    restore += [f"{nginx} -t && " + reload_command]
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", backup, f"{state_dir}/staging")
    yield StringCommand("touch", pending_marker)
    for path in existed_paths:
        # full paths kept under the backup folder (no `cp --parents`: it fails on some coreutils)
        yield StringCommand(f"mkdir -p {q(backup + posixpath.dirname(path))} && cp -a {q(path)} {q(backup + path)}")
    for path in disable:
        # what a disabled sites-enabled link pointed to, for the record (it stays in sites-available)
        yield StringCommand(f"if [ -L {q(path)} ]; then t=$(readlink -f {q(path)}); [ -f \"$t\" ] && "
                            f"mkdir -p \"{backup}$(dirname \"$t\")\" && cp -a \"$t\" \"{backup}$t\" || true; fi")
    restore_script = "\n".join(restore) + "\n"
    yield FileUploadCommand(io.BytesIO(restore_script.encode()), f"{backup}/restore.sh",
                            remote_temp_filename=f"{backup}/restore.sh.part")
    yield StringCommand("chmod", "700", f"{backup}/restore.sh")
    yield FileUploadCommand(io.BytesIO(auto_restore.encode()), f"{backup}/.rollback.sh",
                            remote_temp_filename=f"{backup}/.rollback.sh.part")
    log = "\n".join([f"{stamp} disabled {p} (kept in {backup})" for p in disable]
                    + [f"{stamp} {'removed' if i.get('absent') else 'updated' if e else 'created'} {i['path']}"
                       for i, e in changes]) + "\n"
    yield FileUploadCommand(io.BytesIO(log.encode()), f"{backup}/changes.log",
                            remote_temp_filename=f"{backup}/changes.log.part")
    yield StringCommand(f"cat {q(backup)}/changes.log >> {q(backup_root)}/changes.log")
    for path in disable:
        yield StringCommand("rm", "-f", path)
    for item, _ in changes:
        path = item["path"]
        if item.get("absent"):
            yield StringCommand("rm", "-f", path)
            continue
        if "link" in item:
            yield StringCommand("ln", "-sfn", item["link"], path)
            continue
        content = item["content"]
        data = (content.reveal() if isinstance(content, Secret) else content).encode()
        staged = f"{state_dir}/staging/{posixpath.basename(path)}.new"
        yield FileUploadCommand(io.BytesIO(data), staged, remote_temp_filename=staged + ".part")
        yield StringCommand("chown", "root:root", staged)
        yield StringCommand("chmod", item.get("mode", "644"), staged)
        yield StringCommand("mv", "-f", staged, path)
    warn = " ".join(q(f'conflicting server name "{n}"') for n in names)
    yield StringCommand(
        f"out=$({nginx} -t 2>&1); rc=$?; "
        f"for w in {warn}; do case \"$out\" in *\"$w\"*) rc=1;; esac; done; "
        "if [ $rc -ne 0 ]; then "
        "printf '%s\\n' \"$out\" >&2; "
        f"if rb=$(sh {q(backup)}/.rollback.sh 2>&1); then rm -f {q(pending_marker)}; "
        f"echo 'whisper-platform: nginx -t failed: the previous files are back in place "
        f"(backup {backup}), nginx still serves its old configuration' >&2; "
        "else printf '%s\\n' \"$rb\" >&2; "
        f"echo 'whisper-platform: nginx -t failed AND putting the previous files back failed (above): nginx still "
        f"serves its old configuration (it was never reloaded), but the files on disk are mixed and the next "
        f"reload would fail; put them back by hand: sh {backup}/restore.sh' >&2; fi; exit 1; fi; "
        f"{reload_command} && rm -f {q(pending_marker)}"
    )
    for path in secret_paths:   # older backups of a secret file: only the last few are kept
        yield StringCommand(f"ls -1d {q(backup_root)}/*/{q(path.lstrip('/'))} 2>/dev/null | sort -r "
                            f"| tail -n +{SECRET_BACKUPS_KEPT + 1} | xargs -r rm -f")
