"""srv759970: the live VPS of the runbook. The declared defaults (stages/settings.py) are its values, so this file
holds only what differs from them, which today is nothing.

autostart_install: its default True replaces the host's own Node autostart proxy with ours (its unit
is kept in /var/backups/whisper-platform/projects/autostart/); run with
`--data autostart_install=False` to keep the Node proxy and only register our services in its
config.json (docs/takeover.md).
"""
