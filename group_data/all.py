"""Defaults for every host: the runbook's values (../shared/seed/guide-whisper-services.md).

Group files (production.py, sandbox.py, brownfield.py) override single knobs. deploy.py turns the
result into one checked `stages.settings.Platform` per host before anything runs: a bad value
stops the deploy with an error naming its key. A new knob needs its field and check there too.
Secrets never live here: they come from environment variables at deploy time (see README, "Secrets").
"""

# --- the platform is a list of services -------------------------------------------------
# Each entry is everything the stages need for one service: compose project, image, vhost,
# autostart registration (stages.settings.Service: every entry sets every key, unknown keys are
# refused). Per-group changes go in `service_overrides`, not in a copy of this.
services = [
    {
        "key": "faster",
        "name": "Whisper API (faster-whisper)",
        "subdomain": "whisper",
        "project_dir": "/opt/whisper-faster",
        "container": "faster-whisper",
        "image_name": "whisper-faster",
        "image_dir": "faster",  # images/<image_dir>/Dockerfile, build context images/
        "build_args": {},
        "port": 8001,
        "model": "Systran/faster-whisper-small",
        "device": "cpu",             # or "cuda" with build_args {"DEVICE": "cuda"} (GPU hosts: stages/gpu.py)
        "compute_type": "",          # "": int8 on cpu, float16 on cuda
        "gpu_count": "all",          # cuda: how many GPUs compose reserves for it ("all" or a number)
        "cpu_threads": 0,
        "max_concurrency": 1,
        "max_queue": 8,
        "model_ttl": 600,
        # limits for a shared VPS: memory (the tmpfs included), CPUs, the upload/decode tmpfs, audio length
        "mem_limit": "3g",
        "cpus": 2,
        "tmp_size": "1g",            # one 500 MB upload at a time fits with room
        "max_audio_seconds": 14400,
        "extra_env": {},
        # secrets this service's .env receives (values from the environment, see README)
        "secrets": ["STT_API_KEYS"],
        "worker_module": "faster_server.worker",  # the RQ worker of its asynchronous jobs
        "speaker_store": False,   # no diarization: no enrolled voices
        "blocking": True,
        "enabled": True,   # False: left out, and retired from a host an earlier run put it on (docs/knobs.md)
    },
    {
        "key": "whisperx",
        "name": "WhisperX API (with diarization)",
        "subdomain": "whisperx",
        "project_dir": "/opt/whisperx",
        "container": "whisperx",
        "image_name": "whisperx",
        "image_dir": "whisperx",
        # TORCH_INDEX_URL: an index for torch alone; empty = pip's configured index (PyPI's Linux torch is the
        # CUDA build, about 4 GB more). A CPU-only torch index gives a smaller CPU image (images/whisperx/README.md)
        "build_args": {},
        "port": 8002,
        "model": "base",
        "device": "cpu",             # or "cuda" with build_args {"DEVICE": "cuda"} (GPU hosts: stages/gpu.py)
        "compute_type": "",          # "": int8 on cpu, float16 on cuda
        "gpu_count": "all",          # cuda: how many GPUs compose reserves for it ("all" or a number)
        "cpu_threads": 0,
        "max_concurrency": 1,
        "max_queue": 8,
        "model_ttl": 600,
        # torch + whisperx + diarization: 1.4 GB peak with tiny.en, more with bigger models; the tmpfs holds
        # the upload and its decoded float32 copy (4 h x 16 kHz x 4 bytes = 0.9 GB)
        "mem_limit": "6g",
        "cpus": 2,
        "tmp_size": "1536m",
        "max_audio_seconds": 14400,
        "extra_env": {"STT_DIARIZATION_BACKEND": "auto", "STT_BATCH_SIZE": "8"},
        "secrets": ["STT_API_KEYS", "HF_TOKEN"],
        "worker_module": "whisperx_server.worker",
        # enrolled voices (POST /v1/speakers): <speakers_dir>/whisperx on the host, mounted at /speakers
        "speaker_store": True,
        "blocking": True,
        "enabled": True,
    },
]
# {"faster": {"model": "..."}, ...}: merged over the entries above, per group
service_overrides = {}
# merged over those, for one run without repeating the group's own overrides:
#   pyinfra inventory.py deploy.py --data 'service_overrides_extra={"faster": {"max_queue": 4}}'
service_overrides_extra = {}

# --- naming ------------------------------------------------------------------------------
domain = "srv759970.hstgr.cloud"  # vhost of a service = <subdomain>.<domain>
cors_origin = "https://portal.srv759970.hstgr.cloud"  # the Swagger portal
timezone = "Europe/Paris"

# --- nginx -------------------------------------------------------------------------------
body_limit = "500M"
proxy_timeout = 600  # seconds, read and send
http_port = 80
https_port = 443
listen_ipv6 = True  # also listen on [::] (hosts without IPv6: False)
htpasswd_file = "/etc/nginx/.htpasswd"  # shared with the host's other vhosts: we own one line
basic_auth_realm = "Whisper services"
acme_webroot = "/var/www/letsencrypt"

# --- TLS: "letsencrypt" (certbot, webroot) or "selfsigned" ------------------------------
tls_mode = "letsencrypt"
letsencrypt_email = ""  # certbot account email; empty registers without one
selfsigned_dir = "/etc/ssl/whisper-platform"

# --- Docker --------------------------------------------------------------------------------
# "auto": keep any Docker the host already has (docker-ce included); install the OS
# packages only when there is none. "never": never install it (the host must have one).
docker_install = "auto"
# our containers' logs: Docker's `local` driver (compressed, rotated), set in our compose files only, never in
# the host's daemon.json (other tenants keep their settings): at most max_files files of max_size per container
container_log_max_size = "10m"
container_log_max_files = 3
base_image = "python:3.11-slim"
# a local PEM bundle handed to pip inside image builds (TLS-intercepting proxies); "" = none
build_ca_bundle = ""
# images to load into a host without registry access: {"tag": "local docker-save tarball"}
seed_images = {}
# a build is stopped only after this many seconds without a line of output (a stuck build), never
# for being slow: the slowest host may take an hour over the whisperx image and keeps printing
build_stall_timeout = 1800
# a folder of wheels ON THE HOST (sandbox/wheelhouse.sh makes one) served to pip inside image builds
# on 127.0.0.1:build_wheelhouse_port: nothing is downloaded. "" = pip's configured index
build_wheelhouse = ""
build_wheelhouse_port = 3141

# --- GPU hosts (a service with device "cuda": stages/gpu.py) -------------------------------------
# NVIDIA's container toolkit apt repository, as its install guide names it (a flat repository's URL; " /" is
# added), and a local copy of its signing key (fetched and checked by the operator). Empty: the host must already
# have the toolkit or an apt source for it, else the deploy stops and says so.
nvidia_apt_repo = ""
nvidia_apt_key = ""

# --- models --------------------------------------------------------------------------------
hf_cache_dir = "/var/lib/whisper-platform/hf-cache"  # mounted at /cache/huggingface
models_dir = "/var/lib/whisper-platform/models"  # mounted read-only at /models
# local model folders uploaded into models_dir for hosts without internet: {"name": "local/folder"}
model_uploads = {}

# --- asynchronous jobs (POST /v1/jobs): Redis on the host, one RQ worker per service ----------
jobs_enabled = True
jobs_dir = "/var/lib/whisper-platform/jobs"  # uploads and results, <jobs_dir>/<service>/<job id>/
job_ttl = 3 * 86400  # seconds a finished job's audio, result and status are kept
job_max_seconds = 6 * 3600  # a job's time limit on the worker
job_retries = 2  # a job whose worker crashed or died runs again this often
# generated on the host at the first deploy, kept there (root 0600): REDIS_PASSWORD, STT_WEBHOOK_SECRET
jobs_env_file = "/etc/whisper-platform/jobs.env"

# --- enrolled voices (POST /v1/speakers; a service's speaker_store) ---------------------------
# one file of embeddings per caller in <speakers_dir>/<service>/ (never audio); part of the backups
speakers_dir = "/var/lib/whisper-platform/speakers"
redis_port = 6379  # loopback only
redis_maxmemory = "256mb"  # no eviction: jobs are small records, uploads stay on disk; full: 503, never 500
# Redis's unix socket lives in this folder, which the containers mount: ours (systemd-tmpfiles makes it at boot),
# never Redis's own RuntimeDirectory (/run/redis), which systemd deletes and makes anew on every Redis restart
redis_socket_dir = "/run/whisper-platform/redis"
# the API refuses new jobs (507 insufficient_storage) when the disk holding jobs_dir would keep less than this
# many MB free after the upload: results, Redis's AOF and the host's other tenants keep their room
jobs_min_free_mb = 1024
# quotas on submission (429 with Retry-After past one; 0 = no limit; docs/jobs.md): per caller (an API key or a
# basic-auth user), jobs queued or running and MiB of audio and results kept; per service, the same in all
job_quota_jobs = 20
job_quota_mb = 10240
jobs_max_queued = 200
jobs_max_stored_mb = 51200
# the one deadline of a webhook delivery (resolving, connecting, sending, the receiver's answer), seconds
webhook_timeout = 15
# worker hosts (inventory group `workers`, group_data/workers.py): the front's link port (their job interface,
# HTTPS), bound to its `link_address` only, and where the deploying machine keeps the link's CA, keys and
# tokens (stages/link.py)
link_address = ""   # set by the inventory when it has worker hosts: an address of the front they reach
link_https_port = 8444
link_pki_dir = "~/.local/share/whisper-platform/link"

# --- backups (stages/backup.py; the operator's runbook: docs/rebuilding.md) -------------------------
# the operator's age public keys (age1...): each backup is encrypted to them on the host, whose timer then
# runs; the identity that decrypts stays off the host. Empty: no scheduled backups
backup_recipients = []
backup_dir = "/var/backups/whisper-platform/archives"  # on the host, root-only; the newest backup_keep stay
backup_schedule = "*-*-* 03:30:00"  # systemd OnCalendar of the backup timer (daily; missed runs catch up at boot)
backup_keep = 7
backup_uploads = False  # also the audio of finished jobs (queued and running jobs keep theirs: they need it)
backup_models = False   # also the uploaded models' files (the model store's manifest is always in)
backup_push = ""        # an SSH target for a copy of each backup, user@host:folder (scp from the host); "" = none
backup_push_key = ""    # the SSH key ON THE HOST for backup_push; "" = root's default keys
# on the deploying machine: where `pyinfra inventory.py backup.py` (make backup) puts the archive it pulls
backup_pull_dir = "~/whisper-platform-backups"
# restore onto a fresh host, in the normal deploy: a local archive and the age identity file that decrypts it
#   pyinfra inventory.py deploy.py --data restore_from=ARCHIVE --data restore_identity=FILE
restore_from = ""
restore_identity = ""

# --- the autostart proxy -------------------------------------------------------------------
autostart_install = True  # False keeps a host's own proxy (the runbook's Node server.js)
autostart_listen_host = "127.0.0.1"
autostart_port = 8890
autostart_config = "/opt/docker-autostart/config.json"
autostart_idle_timeout = 1800
autostart_max_wait = 300
# a path on each service's vhost (e.g. "/_autostart/wake") that starts the service and answers at once (202 while
# it starts, 200 when ready), without waiting: a page that will call the service requests it when it loads, so the
# start runs while its user picks a file. "" = off (a service starts on its first real request only)
autostart_wake_path = ""
# the proxy logs into its own journal namespace ("whisper-platform"), capped at this size, so that it never
# grows the host's journal (journalctl --namespace=whisper-platform -u docker-autostart); "" = the host's journal
autostart_journal_max_use = "64M"

# --- where our own files go on the host ----------------------------------------------------
platform_dir = "/opt/whisper-platform"  # image build contexts, the autostart proxy's code
state_dir = "/var/lib/whisper-platform"  # caches, models, staging for secret uploads
# backups of what a run replaces: nginx files (one folder per run, with restore.sh), hand-made projects
nginx_backup_dir = "/var/backups/whisper-platform/nginx"
takeover_backup_dir = "/var/backups/whisper-platform/projects"
app_uid = 10001  # the services' non-root user inside the images (images/README.md)
app_user = "whisper-app"  # its name on the host

# --- monitoring (stages/monitoring.py, docs/monitoring.md) -----------------------------------
# Prometheus, Alertmanager and exporters from the OS packages, every listener on loopback; a Prometheus the host
# already runs is extended with our scrape jobs and rules, not replaced. False: none of it (ours is removed).
monitoring_enabled = True
monitor_subdomain = "monitor"   # monitor.<domain>: Prometheus's and Alertmanager's pages (TLS, basic auth)
prometheus_port = 9090
alertmanager_port = 9093
node_exporter_port = 9100
blackbox_exporter_port = 9115
redis_exporter_port = 9121
nginx_exporter_port = 9113
nginx_status_port = 8079        # nginx's stub_status, on 127.0.0.1 only
prometheus_retention_time = "15d"
prometheus_retention_size = "512MB"   # whichever limit comes first
scrape_interval = "30s"
evaluation_interval = "30s"
# alert thresholds (each alert, what it means and what to do: docs/monitoring.md)
alert_degraded_for = "5m"       # a running service whose /health is not "ok" (degraded, stuck loading, error)
alert_5xx_ratio = 0.05          # share of a service's answers that are 5xx ...
alert_5xx_for = "10m"           # ... for this long
alert_job_age_minutes = 30      # the oldest queued job waited longer than this
alert_no_worker_for = "2m"      # jobs queued and no live worker for their service this long
alert_redis_for = "1m"          # Redis unreachable this long
alert_disk_percent = 85         # jobs_dir's or /var/lib/docker's filesystem fuller than this
alert_cert_days = 14            # a vhost's certificate expires within this many days
alert_memory_ratio = 0.9        # a container above this share of its mem_limit ...
alert_memory_for = "10m"        # ... for this long
alert_webhook_failures = 3      # webhook deliveries that failed within an hour
alert_worker_host_for = "5m"    # a worker host with no live worker this long
# delivery: e-mail (SMTP; its password is the secret WHISPER_SMTP_PASSWORD) and/or a webhook; none set: the
# alerts show on monitor.<domain> only
alert_email_to = ""             # one address or several, comma-separated
alert_email_from = ""           # empty: alertmanager@<domain>
smtp_smarthost = ""             # host:port of the mail relay
smtp_user = ""                  # empty: no SMTP authentication
smtp_require_tls = True
alert_webhook_url = ""          # Alertmanager's webhook JSON is POSTed here
alert_group_wait = "30s"        # Alertmanager waits this long to gather alerts into one message ...
alert_group_interval = "5m"     # ... and at least this long between two messages of one group (resolutions too)
alert_repeat_interval = "4h"    # a firing alert is sent again after this long
# Grafana's apt repository ("URI suite component", as its install guide names it) and a local copy of its
# signing key: set both and Grafana is installed with the dashboards of dashboards/; empty: no Grafana
grafana_apt_repo = ""
grafana_apt_key = ""
grafana_port = 3000
