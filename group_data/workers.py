"""Worker hosts (inventory group `workers`): machines that only run jobs for the front host.

Their knobs (`worker_services`, `worker_model`, `worker_device`, ...) are declared with their defaults in
stages/settings.py (`WorkerHost`, docs/knobs.md); set one here for every worker host, or per host in the
inventory's host data. A worker host runs the
workers of `worker_services` (their images built there, their models uploaded there), takes each job, its audio
and hands in its result through the front's link interface (HTTPS, its own certificate and token; no Redis:
stages/link.py), and restarts by itself after a
crash or a reboot (Docker restart policy), so a host that comes back rejoins without a deploy.
"""
