"""srv759970: the live VPS of the runbook. Only what differs from all.py."""

domain = "srv759970.hstgr.cloud"
cors_origin = "https://portal.srv759970.hstgr.cloud"
tls_mode = "letsencrypt"
# the host already runs its own Node autostart proxy; set True to replace it with ours
autostart_install = True
