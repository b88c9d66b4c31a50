"""Every host's services: the runbook's two (../shared/seed/guide-whisper-services.md).

The host-wide knobs are declared, with their defaults (the runbook's values), their checks and their docs, once
each in stages/settings.py (`Platform`); docs/knobs.md lists them. Group files (production.py, sandbox.py,
brownfield.py) override single knobs and these entries. deploy.py turns the result into one checked
`stages.settings.Platform` per host before anything runs: a bad value stops the deploy with an error naming its key.
Secrets never live here: they come from environment variables at deploy time (see README, "Secrets").
"""

# --- the platform is a list of services -------------------------------------------------
# Each entry is everything the stages need for one service: compose project, image, vhost,
# autostart registration (stages.settings.ServiceEntry: every entry sets every key, unknown keys are
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
