"""Restarts and reloads, in one place: each fires only when an operation it depends on changed
something on the host, never on a run that changed nothing.

pyinfra decides Python branches before anything runs, so "only if that changed" is an `_if=`
callable that asks the operations at run time (`changed(...)`). Where a unit may not exist yet
when facts are read (a fresh host: Redis and Docker are installed by the same run), the restart is
a plain `systemctl` command: `systemd.service(restarted=True)` would see the unit stopped and do
nothing. Where the unit exists before the run, `systemd.service` serves as is.

Who restarts what:
- nginx: reloaded by `stages.nginx_txn.nginx_apply` itself, after `nginx -t` and only when one of
  our files changed (test, reload and rollback must be one step), and by certbot's renewal hook.
- the services: recreated when their compose file or .env changed and they are running
  (stages.compose_projects); a stopped one stays stopped for the autostart proxy to start.
- the autostart proxy: restarted when its code or unit changed, reloaded when only its
  config.json changed (stages.autostart).
- Redis: restarted when its package, settings, password include or unit drop-in (its socket folder) changed
  (stages.redis), and once where an earlier version had given worker hosts Redis access (stages.link removes it).
- nginx's link server: reloaded (after `nginx -t`) when its file, certificate or key changed (stages.link); the
  proxy key's line (stages.identity) reloads nginx only where the auth map already includes it.
- the sweep timer: `daemon-reload` when its units changed (stages.sweep); it starts its one-off containers itself.
- the proxy's journal namespace: its journald instance restarts when its cap changed, and the proxy with it
  (stages.autostart).
- the monitoring units (stages.monitoring): each restarts when its package was installed, its command line
  (/etc/default/<package>) or its own settings changed (blackbox's probes, the Redis exporter's password, drop-in
  or queue script); Prometheus and Alertmanager only reload (SIGHUP) for a change of their rules or config alone;
  a host's own Prometheus reloads after `promtool check config` accepted our blocks in its config.
- a worker host's workers (stages.workers): `compose up` when their compose file, .env or link credentials
  changed, or when they are not running (`changed_or_stopped`); Docker is started once, after its installation.
- an apt source of ours (stages.apt_sources): `apt update` when its key or source line changed.
- a file whose header alone changed (an earlier version's ownership marker brought up to date: `beyond_header`)
  restarts nothing: its unit reads the same settings. (nginx reloads for it, which is graceful.)
- a retired service (enabled False, deployed here before): `compose down` once, only while a container
  of it is left (stages.compose_projects.retire_services); the proxy reloads for it only when its
  config.json entry was cut out (the rule above).
"""

from __future__ import annotations

from typing import Callable

from pyinfra.operations import server, systemd

from stages.ops import header_only


def changed(*ops, unless=()) -> Callable[[], bool]:
    """An `_if=` callable: True when any of `ops` (None ignored) changed something, and none of
    `unless` (an operation, or a tuple of them, that already restarted the thing) did."""
    unless = unless if isinstance(unless, (tuple, list)) else (unless,)

    def check() -> bool:
        if any(op.did_change() for op in unless if op is not None):
            return False
        return any(op.did_change() for op in ops if op is not None)
    return check


class _BeyondHeader:
    """An operation as `changed()` sees it, less a change confined to its file's header."""

    def __init__(self, op, header_only: bool):
        self.op, self.header_only = op, header_only

    def did_change(self) -> bool:
        return self.op.did_change() and not self.header_only


def beyond_header(op, path: str, content: str, batch: tuple = ()):
    """`op`, which writes `content` to `path`, as a trigger for `changed()`: a change counts unless it rewrote only
    the file's header (its leading comment lines, stages.ops.header_only), which no program reading the file sees.
    So a deploy that brings the ownership marker of a file an earlier version wrote up to date restarts nothing
    that reads it (Redis's exporter, Prometheus, Alertmanager, the autostart proxy). None stays None."""
    if op is None:
        return None
    return _BeyondHeader(op, header_only(path, content, batch))


def changed_or_stopped(running: dict | None, *ops) -> Callable[[], bool]:
    """An `_if=` callable for containers started by `compose up`: True when they were not running before the
    run (`running`: a ContainerImage fact, None when there is no such container) or any of `ops` changed."""
    when_changed = changed(*ops)

    def check() -> bool:
        return not (running and running["running"]) or when_changed()
    return check


def restart_unit(unit: str, when: Callable[[], bool], why: str, enable: bool = False):
    """`systemctl restart` when `when()` holds, also for a unit installed by this very run."""
    commands = ([f"systemctl enable {unit}"] if enable else []) + [f"systemctl restart {unit}"]
    return server.shell(name=f"Restart {unit} ({why})", commands=commands, _if=when)


def reload_unit(unit: str, when: Callable[[], bool], why: str):
    """`systemctl reload` when `when()` holds (the unit reads its config again, requests in flight go on)."""
    return server.shell(name=f"Reload {unit} ({why})", commands=[f"systemctl reload {unit}"], _if=when)


def restart_existing_unit(unit: str, when: Callable[[], bool], why: str):
    """Restart a unit the host had before this run (not ours to install), if it runs."""
    return systemd.service(name=f"Restart {unit} ({why})", service=unit, restarted=True, _if=when)
