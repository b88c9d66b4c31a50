#!/usr/bin/env python3
"""Build one service image on the host, with progress a person can follow and a stall limit.

The deploy installs this as /opt/whisper-platform/bin/build-image and runs it for each image whose
tag is missing. Standard library only (it runs on the host's own python3).

- Progress: one line per Dockerfile step (legacy builder's `Step 3/9 : RUN ...` and BuildKit's
  `#7 [3/9] RUN ...`), `cached` for steps reused from an earlier build, and a heartbeat line every
  --heartbeat seconds while a step runs. The full output goes to --log; its tail is printed when the
  build fails.
- Stall limit: the build is stopped only when it printed nothing for --stall-timeout seconds. A long
  build that keeps printing is never killed. Layers finished before a stop stay in Docker's cache,
  so the next run resumes from them.
- One build per image at a time: a second run (a deploy started again while an interrupted one's build
  still runs on the host: a deploy that hangs up does not stop the build) waits for the first and is
  done when it finished the tag.
- Wheelhouse: with --wheelhouse DIR the folder is served on 127.0.0.1:--wheelhouse-port for the
  build's pip (build arg PIP_WHEELHOUSE_URL, build on the host network), so no wheel is downloaded
  again: the sandbox hosts and the test bed get their wheels this way.

Exit status: docker build's, or 124 after a stall.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import http.server
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque

STEP_PATTERNS = (
    re.compile(r"^Step (?P<n>\d+)/(?P<total>\d+) : (?P<what>.*)$"),  # legacy builder
    re.compile(r"^#\d+ \[(?:[\w.-]+ )?(?P<n>\d+)/(?P<total>\d+)\] (?P<what>.*)$"),  # BuildKit, plain
)
CACHED_PATTERNS = (re.compile(r"^ ---> Using cache$"), re.compile(r"^#\d+ CACHED$"))
STALL_EXIT = 124


def fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def parse_step(line: str) -> tuple[str, str] | None:
    """('3/9', 'RUN pip install ...') for a step line, else None."""
    for pattern in STEP_PATTERNS:
        match = pattern.match(line)
        if match:
            what = match.group("what")
            return f"{match.group('n')}/{match.group('total')}", what if len(what) <= 100 else what[:97] + "..."
    return None


def is_cached(line: str) -> bool:
    return any(p.match(line) for p in CACHED_PATTERNS)


class Progress:
    """Turns docker build's output into the few lines the deploy prints."""

    def __init__(self, tag: str, out=None, clock=time.monotonic):
        self.tag, self.out, self.clock = tag, out or sys.stdout, clock
        self.started = self.step_started = self.last_output = clock()
        self.step: tuple[str, str] | None = None
        self.quiet = False  # set when the deploy's end of the pipe went away

    def say(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(f"build {self.tag}: {text}", file=self.out, flush=True)
        except (BrokenPipeError, OSError):
            self.quiet = True  # the deploy hung up: keep building, keep logging

    def line(self, line: str) -> None:
        now = self.clock()
        self.last_output = now
        step = parse_step(line)
        if step:
            self.step, self.step_started = step, now
            self.say(f"step {step[0]} {step[1]} (+{fmt_seconds(now - self.started)})")
        elif is_cached(line) and self.step:
            self.say(f"step {self.step[0]} cached")

    def heartbeat(self) -> None:
        now = self.clock()
        where = f"step {self.step[0]}" if self.step else "starting"
        self.say(f"{where} still running ({fmt_seconds(now - self.step_started)} on this step, "
                 f"{fmt_seconds(now - self.started)} in all, last output {int(now - self.last_output)} s ago)")

    def silent_for(self) -> float:
        return self.clock() - self.last_output


def serve_wheelhouse(folder: str, port: int) -> http.server.ThreadingHTTPServer:
    """A read-only listing of the wheelhouse on the loopback, for pip's --find-links."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def docker_command(args) -> list[str]:
    # --force-rm: the legacy builder otherwise keeps the container of a failed step, one more stopped
    # container on the host per failed build (BuildKit has none and accepts the flag)
    cmd = ["docker", "build", "--force-rm", "-f", args.file, "-t", args.tag]
    for value in args.build_arg:
        cmd += ["--build-arg", value]
    for value in args.label:
        cmd += ["--label", value]
    if args.wheelhouse:
        cmd += ["--network", "host", "--build-arg", f"PIP_WHEELHOUSE_URL=http://127.0.0.1:{args.wheelhouse_port}/"]
    return cmd + [args.context]


def stop(proc: subprocess.Popen) -> None:
    """Stop docker build and what it started (its own process group); Docker keeps finished layers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def build(args) -> int:
    progress = Progress(args.tag)
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    lock = open(args.log + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        progress.say(f"another build of this image is running (log {args.log}): waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(args.tag):
            progress.say("done by the build that was running")
            return 0
    if args.wheelhouse:
        if not os.path.isdir(args.wheelhouse):
            progress.say(f"wheelhouse {args.wheelhouse} is missing (build_wheelhouse): make wheelhouse creates it")
            return 2
        try:
            server = serve_wheelhouse(args.wheelhouse, args.wheelhouse_port)
        except OSError as exc:
            progress.say(f"cannot serve the wheelhouse on 127.0.0.1:{args.wheelhouse_port} ({exc}): "
                         "set build_wheelhouse_port to a free port")
            return 2
    else:
        server = None
    tail: deque[str] = deque(maxlen=40)
    lines: queue.Queue = queue.Queue()
    progress.say(f"started, full log in {args.log}")
    env = {**os.environ, "BUILDKIT_PROGRESS": "plain"}
    with open(args.log, "w", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(docker_command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)

        def reader():
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        last_beat = time.monotonic()
        stalled = False
        while True:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                log.write(line + "\n")
                log.flush()
                tail.append(line)
                progress.line(line)
            now = time.monotonic()
            if progress.silent_for() >= args.stall_timeout:
                stalled = True
                progress.say(f"no output for {args.stall_timeout} s: stopping the build (build_stall_timeout). "
                             "Finished layers stay cached: the next run resumes from them.")
                stop(proc)
                break
            if now - last_beat >= args.heartbeat and now - progress.step_started >= args.heartbeat:
                progress.heartbeat()
                last_beat = now
        rc = proc.wait()
    if server:
        server.shutdown()
    if stalled:
        return STALL_EXIT
    if rc != 0:
        progress.say(f"failed (exit {rc}) after {fmt_seconds(time.monotonic() - progress.started)}; last lines:")
        for line in tail:
            progress.say("| " + line)
        return rc
    progress.say(f"done in {fmt_seconds(time.monotonic() - progress.started)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--file", required=True, help="the Dockerfile")
    parser.add_argument("--build-arg", action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--wheelhouse", default="", help="a local folder of wheels to serve to pip")
    parser.add_argument("--wheelhouse-port", type=int, default=3141)
    parser.add_argument("--stall-timeout", type=int, default=1800, help="seconds without output before stopping")
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between 'still running' lines")
    parser.add_argument("--log", required=True)
    parser.add_argument("context")
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
