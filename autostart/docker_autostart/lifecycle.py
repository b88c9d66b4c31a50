"""Starting a service: its containers checked, `compose up -d` when they are down, its readiness path polled until
it answers; many requests share one start (Autostart's part, as a mixin)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import cast

import aiohttp

from .docker import DockerError, DockerUnavailable
from .readiness import PERMANENT_BODY_LIMIT, health_summary, permanent_problem, read_some
from .parts import ProxyParts
from .state import RUNNING_STATES, PermanentProblem, ServiceState, StartError

log = logging.getLogger("docker_autostart")

RECHECK_INTERVAL = 5.0  # a service seen ready within this many seconds is proxied without a docker call
# seconds between readiness probes while starting: a probe is a refused connect or a 503 (cheap on both sides), and
# each interval adds half of itself to a cold start on average
READY_POLL = 0.1
CONTAINER_CHECK_EVERY = 20  # readiness probes between two `docker inspect` while starting (every 2 s)
REST_WAIT = 60.0  # seconds a started project's other containers wait at most for the requests in flight to end
REST_POLL = 0.2
DOCKER_POLL = 1.0  # seconds between two tries while the Docker daemon does not answer


class _StoppedMeanwhile(Exception):
    """A container of the service is no longer running while its readiness is awaited (the states, as text)."""


class Lifecycle(ProxyParts):
    """Needs from Autostart: docker, metrics, session (the readiness probes) and _locks (one per composeDir)."""

    def _lock(self, compose_dir: str) -> asyncio.Lock:
        lock = self._locks.get(compose_dir)
        if lock is None:
            lock = self._locks[compose_dir] = asyncio.Lock()
        return lock

    async def ensure_ready(self, st: ServiceState, wait: float) -> bool:
        """True when the service is up and ready; False when still starting after `wait`
        seconds; StartError when the start failed. Many callers share one start."""
        if st.ready and time.monotonic() - st.verified_at < RECHECK_INTERVAL:
            return True
        task = st.start_task
        if task is None or task.done():
            task = st.start_task = asyncio.ensure_future(self._start(st))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved here
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except asyncio.TimeoutError:
            return False
        return True

    async def _start(self, st: ServiceState) -> None:
        cfg = st.cfg
        t0 = time.monotonic()
        deadline = t0 + cfg.max_wait
        sig: tuple[str, ...]
        started, sig = False, ()
        for attempt in (1, 2):
            started, sig = await self._check_and_up(st, deadline)
            if started is None:
                return   # the same running containers, seen ready
            st.ready = False
            try:
                await self._wait_ready(st, deadline)
                break
            except _StoppedMeanwhile as stopped:
                # containers we found running stopped while we waited (someone's compose stop, a deploy
                # recreating them): start them again, once; ours dying right after our own start is a crash
                if started or attempt == 2:
                    raise self._fail(st, 502, f"container stopped while starting: {stopped}", "exited") from None
                log.info("host=%s: its containers stopped while it was checked (%s): starting them", cfg.host,
                         stopped)
        if started:
            try:
                found = await self.docker.inspect(cfg.containers)
                sig = tuple(found[c][1] for c in cfg.containers)
            except DockerError:
                sig = ()
        elapsed = time.monotonic() - t0
        if started:
            self.metrics.start_duration.labels(host=cfg.host).observe(elapsed)
            log.info("ready host=%s after %.1fs", cfg.host, elapsed)
        st.ready, st.verified_at, st.stopped, st.last_error, st.permanent = True, time.monotonic(), False, None, None
        st.started_sig = sig
        if st.deferred:
            rest, st.deferred = st.deferred, []
            task = asyncio.ensure_future(self._start_rest(st, rest))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())   # it logs its own failures

    async def _start_rest(self, st: ServiceState, containers: list) -> None:
        """The project's other containers (its job worker), started once the service is ready and has answered
        what it was woken for (at most REST_WAIT later), not beside it: on two cores their start slowed the
        service's own start and its first answer. `compose up -d` when `docker start` fails."""
        cfg = st.cfg
        until = time.monotonic() + REST_WAIT
        while st.in_flight and time.monotonic() < until:
            await asyncio.sleep(REST_POLL)
        if not st.ready:
            return   # stopped meanwhile: its next start starts them
        async with self._lock(cfg.compose_dir):
            try:
                error = await self._start_each(containers)
                if error is None:
                    log.info("host=%s: started %s with docker start, once it was ready", cfg.host,
                             ", ".join(containers))
                    return
                log.warning("host=%s: docker start of %s failed (%s): compose up -d", cfg.host, ", ".join(containers),
                            error)
                await self.docker.up(cfg.compose_dir)
            except DockerError as exc:
                log.error("host=%s: its other containers (%s) did not start: %s", cfg.host, ", ".join(containers), exc)

    async def _check_and_up(self, st: ServiceState, deadline: float):
        """Under the composeDir's lock: its containers checked, `compose up -d` when one is down. (True when it
        ran compose up, False when they were running, None when they are the same ones seen ready; their
        StartedAt as found)."""
        cfg = st.cfg
        st.phase = "waiting for another start or stop in the same composeDir"
        async with self._lock(cfg.compose_dir):
            st.phase = "checking containers"
            try:
                found = await self._docker(st, deadline, lambda: self.docker.inspect(cfg.containers))
            except DockerError as exc:
                raise self._fail(st, 502, f"cannot check containers: {exc}", "docker") from None
            down = {c: s for c, (s, _) in found.items() if s not in RUNNING_STATES}
            sig = tuple(found[c][1] for c in cfg.containers)
            if not down and st.ready and sig == st.started_sig:
                # still the same running containers we saw ready: no readiness probe, which a
                # busy service might answer slowly
                st.verified_at = time.monotonic()
                return None, sig
            if not down:
                return False, sig
            st.invalidate()
            st.stopped = False
            self.metrics.starts.labels(host=cfg.host).inc()
            log.info("starting host=%s (%s): %s; composeDir %s", cfg.host, cfg.name,
                     ", ".join(f"{c} {s}" for c, s in down.items()), cfg.compose_dir)
            t_up = time.monotonic()
            st.deferred = []
            if not await self._docker_start(st):
                st.phase = "compose up -d still running"
                converged = time.time_ns()   # compose reads the files after this: they are accounted for
                try:
                    await self._docker(st, deadline, lambda: self.docker.up(cfg.compose_dir))
                    st.converged_ns = converged
                except DockerError as exc:
                    # started meanwhile by someone else (their restart policy, a deploy's own compose up): go on
                    if not await self._all_running(cfg):
                        raise self._fail(st, 502, str(exc), "compose") from None
                    log.info("host=%s: compose up failed, but its containers run now: %s", cfg.host, exc)
            self.metrics.compose_up_duration.labels(host=cfg.host).observe(time.monotonic() - t_up)
            return True, sig

    async def _docker_start(self, st: ServiceState) -> bool:
        """`docker start` of the project's stopped containers, side by side, when the entry allows it
        (`dockerStart`) and they are what `compose up -d` would start: all there, running the image their tag
        names now, and made after every file they are made from last changed (or the proxy's own last compose up
        saw those files). True when they were started so; False when compose should decide (said in the log)."""
        cfg = st.cfg
        quick = cfg.docker_start
        if quick is None:
            return False
        st.phase = "checking whether docker start will do"
        try:
            made = await self.docker.made(quick.containers)
            missing = [c for c, m in made.items() if m is None]
            if missing:
                return self._compose_decides(cfg, f"{', '.join(missing)} missing")
            try:
                changed = max(os.stat(f).st_mtime_ns for f in quick.made_from)
            except OSError as exc:
                return self._compose_decides(cfg, f"{exc.filename}: {exc.strerror}")
            made_at = max(min(m.created_ns for m in made.values() if m), st.converged_ns)
            if changed > made_at:
                return self._compose_decides(cfg, "its files changed since its containers were made")
            for ref in {m.image_ref for m in made.values() if m}:
                current = await self.docker.image_id(ref)
                stale = [c for c, m in made.items() if m and m.image_ref == ref and m.image_id != current]
                if stale:
                    return self._compose_decides(cfg, f"{', '.join(stale)} run an older {ref}")
            stopped = [c for c, m in made.items() if m and m.state not in RUNNING_STATES]
            # what requests need first; the project's other containers once the service is ready (_start_rest)
            first = [c for c in stopped if c in cfg.containers]
            st.phase = "docker start still running"
            error = await self._start_each(first)
            if error is not None:
                raise error
        except DockerError as exc:
            return self._compose_decides(cfg, str(exc))
        st.deferred = [c for c in stopped if c not in first]
        log.info("host=%s: started %s with docker start", cfg.host, ", ".join(first) or "nothing")
        return True

    async def _start_each(self, containers: list) -> BaseException | None:
        """`docker start` of each container, side by side, every one tried; the first failure, if any."""
        results = await asyncio.gather(*(self.docker.start(c) for c in containers), return_exceptions=True)
        return next((r for r in results if isinstance(r, BaseException)), None)

    @staticmethod
    def _compose_decides(cfg, why: str) -> bool:
        log.info("host=%s: compose up -d, not docker start: %s", cfg.host, why)
        return False

    def wake(self, st: ServiceState) -> bool:
        """Start the service in the background unless it is ready (its config's wakePath): True when ready. The
        start counts as activity: the idle timer starts again from it."""
        st.last_active = time.monotonic()
        if st.ready and time.monotonic() - st.verified_at < RECHECK_INTERVAL:
            return True
        if not st.starting:
            st.start_task = asyncio.ensure_future(self._start(st))
            st.start_task.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported by _start
        return False

    async def _docker(self, st: ServiceState, deadline: float, call):
        """`await call()` (a docker or compose command), waiting out a Docker daemon that does not answer (Docker
        restarting, the host booting) until `deadline`, then 503 `docker_unavailable` (Retry-After); any other
        failure is the caller's to judge."""
        said = False
        while True:
            try:
                return await call()
            except DockerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise self._fail(st, 503, f"the Docker daemon does not answer: {exc}",
                                     "docker_unavailable") from None
                if not said:
                    said = True
                    log.warning("host=%s: the Docker daemon does not answer, waiting for it: %s", st.cfg.host, exc)
                st.phase = "waiting for the Docker daemon"
                await asyncio.sleep(min(DOCKER_POLL, max(0.0, deadline - time.monotonic())))

    async def _all_running(self, cfg) -> bool:
        try:
            return all(s in RUNNING_STATES for s in (await self.docker.running(cfg.containers)).values())
        except DockerError:
            return False

    def _fail(self, st: ServiceState, status: int, message: str, reason: str) -> StartError:
        st.invalidate()
        st.last_error = message
        self.metrics.start_failures.labels(host=st.cfg.host, reason=reason).inc()
        log.error("start failed host=%s reason=%s: %s", st.cfg.host, reason, message)
        return StartError(status, message, reason)

    def _permanent(self, st: ServiceState, message: str) -> PermanentProblem:
        st.invalidate()
        st.last_error = message
        if st.permanent != message:   # said (and counted) once, not on every request that re-checks it
            st.permanent = message
            self.metrics.start_failures.labels(host=st.cfg.host, reason="permanent").inc()
            log.error("host=%s reports a permanent problem, requests go through to its own answer: %s",
                      st.cfg.host, message)
        return PermanentProblem(message)

    async def _wait_ready(self, st: ServiceState, deadline: float) -> None:
        cfg = st.cfg
        path = cfg.readiness_path or "/"
        url = f"http://127.0.0.1:{cfg.proxy_port}{path}"
        last = "no answer yet"
        probes = 0
        while True:
            try:
                timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, deadline - time.monotonic())))
                async with cast(aiohttp.ClientSession, self.session).get(url, timeout=timeout, allow_redirects=False) as resp:
                    body = await read_some(resp.content, PERMANENT_BODY_LIMIT)
                    if 200 <= resp.status < 300 or (cfg.readiness_path is None and resp.status < 500):
                        if cfg.readiness_path:
                            try:
                                st.record_health(health_summary(json.loads(body.decode("utf-8"))))
                            except (UnicodeDecodeError, ValueError):
                                pass
                        return
                    problem = permanent_problem(resp.status, resp.headers, body)
                    if problem:
                        raise self._permanent(st, f"{path} answered {resp.status}: {problem}")
                    last = f"{path} answered {resp.status}"
                st.phase = f"waiting for readiness, last: {last}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"{path}: {type(exc).__name__}: {exc}".rstrip(": ")
                st.phase = f"waiting for readiness, last: {last}"
            if time.monotonic() >= deadline:
                raise self._fail(st, 504, f"{cfg.host} not ready within maxWait={cfg.max_wait:g}s ({last})",
                                 "timeout")
            probes += 1
            if probes % CONTAINER_CHECK_EVERY == 0:
                try:
                    states = await self.docker.running(cfg.containers)
                except DockerUnavailable:
                    states = {}   # Docker restarting: its containers come back with it (restart policies)
                except DockerError as exc:
                    raise self._fail(st, 502, f"cannot check containers: {exc}", "docker") from None
                dead = {c: s for c, s in states.items() if s not in RUNNING_STATES and s != "created"}
                if dead:
                    raise _StoppedMeanwhile(", ".join(f"{c} {s}" for c, s in dead.items()))
            await asyncio.sleep(max(0.0, min(READY_POLL, deadline - time.monotonic())))
