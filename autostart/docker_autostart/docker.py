"""The Docker side: `docker inspect` for state, `docker compose` / `docker-compose` for
up and stop. Plain subprocesses, run with asyncio."""

from __future__ import annotations

import asyncio
import calendar
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("docker_autostart")

STDERR_TAIL_LINES = 15
STDERR_TAIL_CHARS = 2000


class DockerError(RuntimeError):
    """A docker or compose command failed; the message carries the stderr tail."""


class DockerUnavailable(DockerError):
    """The Docker daemon does not answer (restarting, stopped, the host shutting down): waiting can help."""


# what the docker CLI and Compose v1/v2 say when the daemon is not there (lowercased)
DAEMON_DOWN = ("cannot connect to the docker daemon", "couldn't connect to docker daemon", "is the docker daemon running",
               "error during connect", "docker.sock: connect:", "daemon is shutting down")


def failed(message: str, stderr: str) -> DockerError:
    """The error for a failed command: DockerUnavailable when its output says the daemon is not there."""
    low = stderr.lower()
    return (DockerUnavailable if any(s in low for s in DAEMON_DOWN) else DockerError)(message)


@dataclass(frozen=True)
class Made:
    """What a container was made from: its state, when it was created (ns since the epoch, UTC), the image it runs
    (an id) and the image reference it was created with."""
    state: str
    created_ns: int
    image_id: str
    image_ref: str


def rfc3339_ns(text: str) -> int:
    """Docker's timestamps ("2026-12-03T10:06:31.685780859Z", nanoseconds, UTC) as ns since the epoch."""
    main, _, frac = text.strip().rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    digits = "".join(c for c in frac if c.isdigit())[:9]
    return seconds * 1_000_000_000 + int(digits.ljust(9, "0") or 0)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def tail(text: str, lines: int = STDERR_TAIL_LINES, chars: int = STDERR_TAIL_CHARS) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()][-lines:]
    out = "\n".join(kept)
    return out[-chars:]


async def run(argv: Sequence[str], *, cwd: Optional[str] = None, timeout: Optional[float] = None) -> Result:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        what = f"{argv[0]!r}" if not cwd or os.path.isdir(cwd) else f"composeDir {cwd!r}"
        raise DockerError(f"cannot run {shlex.join(argv)}: {what}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise DockerError(f"{shlex.join(argv)} did not finish within {timeout:.0f}s") from None
    except asyncio.CancelledError:
        # never leave a compose command half-way without an owner
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None   # communicate() returned: the process has exited
    return Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class Docker:
    def __init__(self, docker_cmd: Sequence[str] = ("docker",), compose_cmd: Optional[Sequence[str]] = None,
                 compose_timeout: float = 900.0):
        self.docker_cmd = list(docker_cmd)
        self._compose_cmd: Optional[List[str]] = list(compose_cmd) if compose_cmd else None
        self._detect_lock = asyncio.Lock()
        self.compose_timeout = compose_timeout

    async def compose_cmd(self) -> List[str]:
        """`docker compose` (v2) when it answers, else `docker-compose` (v1); detected once."""
        if self._compose_cmd is not None:
            return self._compose_cmd
        async with self._detect_lock:
            if self._compose_cmd is not None:
                return self._compose_cmd
            for candidate in (self.docker_cmd + ["compose"], ["docker-compose"]):
                try:
                    res = await run(candidate + ["version"], timeout=60)
                except DockerError:
                    continue
                if res.rc == 0:
                    self._compose_cmd = candidate
                    log.info("compose command: %s (%s)", shlex.join(candidate),
                             (res.stdout.strip().splitlines() or ["?"])[0])
                    return candidate
            raise DockerError("neither `docker compose` nor `docker-compose` works on this host "
                              "(install one, or pass --compose-command)")

    async def _inspect(self, containers: Sequence[str], fields: Sequence[str]) -> Dict[str, List[str]]:
        """{container: its `fields` (Go template expressions)} for the listed containers that exist."""
        fmt = "\t".join(["{{.Name}}", *fields])
        res = await run(self.docker_cmd + ["inspect", "--type", "container", "--format", fmt, *containers],
                        timeout=60)
        found: Dict[str, List[str]] = {}
        for line in res.stdout.splitlines():
            parts = line.strip().split("\t")
            if len(parts) == len(fields) + 1 and parts[0].lstrip("/") in containers:
                found[parts[0].lstrip("/")] = parts[1:]
        if res.rc != 0 and not found and "No such" not in res.stderr:
            raise failed(f"docker inspect failed: {tail(res.stderr) or f'exit {res.rc}'}", res.stderr)
        return found

    async def inspect(self, containers: Sequence[str]) -> Dict[str, Tuple[str, str]]:
        """{container: (state, started_at)}; state is running, exited (N), restarting... or missing."""
        found = await self._inspect(containers, ["{{.State.Status}}", "{{.State.ExitCode}}", "{{.State.StartedAt}}"])
        states = {c: ("missing", "") for c in containers}
        for name, (status, code, started) in found.items():
            states[name] = (f"exited ({code})" if status == "exited" else status, started)
        return states

    async def made(self, containers: Sequence[str]) -> Dict[str, Optional[Made]]:
        """{container: what it was made from, None when missing (or its creation date unreadable)}."""
        found = await self._inspect(containers, ["{{.State.Status}}", "{{.Created}}", "{{.Image}}",
                                                 "{{.Config.Image}}"])
        made: Dict[str, Optional[Made]] = {c: None for c in containers}
        for name, (status, created, image_id, image_ref) in found.items():
            try:
                made[name] = Made(status, rfc3339_ns(created), image_id, image_ref)
            except ValueError:
                pass   # as if missing: compose decides
        return made

    async def image_id(self, ref: str) -> Optional[str]:
        """The id of the image `ref` names now; None when there is none."""
        res = await run(self.docker_cmd + ["image", "inspect", "--format", "{{.Id}}", ref], timeout=60)
        if res.rc != 0:
            if "No such" in res.stderr:
                return None
            raise failed(f"docker image inspect failed: {tail(res.stderr) or f'exit {res.rc}'}", res.stderr)
        return res.stdout.strip() or None

    async def start(self, container: str) -> Result:
        res = await run(self.docker_cmd + ["start", container], timeout=self.compose_timeout)
        if res.rc != 0:
            raise failed(f"docker start {container} failed: {tail(res.stderr) or f'exit {res.rc}'}", res.stderr)
        return res

    async def running(self, containers: Sequence[str]) -> Dict[str, str]:
        """{container: state} for each listed container: running, exited (N), restarting... or missing."""
        return {c: state for c, (state, _) in (await self.inspect(containers)).items()}

    async def compose(self, compose_dir: str, *args: str) -> Result:
        if not os.path.isdir(compose_dir):
            raise DockerError(f"composeDir {compose_dir!r} does not exist")
        cmd = await self.compose_cmd()
        res = await run(self.locked(compose_dir) + cmd + list(args), cwd=compose_dir, timeout=self.compose_timeout)
        if res.rc != 0:
            raise failed(f"{shlex.join(cmd + list(args))} failed (exit {res.rc}): "
                         f"{tail(res.stderr) or tail(res.stdout) or 'no output'}", res.stderr + res.stdout)
        return res

    @staticmethod
    def locked(compose_dir: str) -> List[str]:
        """`flock <composeDir>`: a compose command holds the lock of its project's folder (a lock on the folder
        itself: no file is created in it), the same the deploy takes when it recreates a project. Two compose runs
        on one project never interleave (they broke each other's recreate: "Renaming a container with the same
        name as its current name"); the second waits for the first. Nothing when the host has no flock."""
        return ["flock", compose_dir] if shutil.which("flock") else []

    async def up(self, compose_dir: str) -> Result:
        return await self.compose(compose_dir, "up", "-d")

    async def stop(self, compose_dir: str) -> Result:
        return await self.compose(compose_dir, "stop")
