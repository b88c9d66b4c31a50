"""srv759970: the live VPS of the runbook. all.py's defaults are its values, so this file holds only
what differs from all.py, which today is nothing.

autostart_install: all.py's True replaces the host's own Node autostart proxy with ours (its unit
is kept in /var/backups/whisper-platform/projects/autostart/); run with
`--data autostart_install=False` to keep the Node proxy and only register our services in its
config.json (docs/takeover.md).
"""
