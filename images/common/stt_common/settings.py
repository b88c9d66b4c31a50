"""Typed settings shared by both images (env names: images/README.md)."""
from __future__ import annotations

from typing import Callable, Literal, Optional

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class STTSettings(BaseSettings):
    """Environment `STT_*`. Subclass to add service knobs or change the default model."""

    model_config = SettingsConfigDict(env_prefix="STT_", extra="ignore", protected_namespaces=())

    model: str = "Systran/faster-whisper-small"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: Optional[str] = None
    cpu_threads: int = Field(0, ge=0)
    models_dir: str = "/models"
    model_ttl: float = 600
    model_load_timeout: float = Field(300, gt=0)
    api_keys: str = ""
    max_upload_mb: float = Field(500, gt=0)
    max_concurrency: int = Field(1, ge=1)
    max_queue: int = Field(8, ge=0)
    tmp_dir: Optional[str] = None
    # hostile or unlucky requests (images/README.md, "Limits")
    max_audio_seconds: float = Field(4 * 3600, gt=0)   # decoding stops here: 413 audio_too_long
    max_form_parts: int = Field(32, ge=2)               # multipart parts per request, the file included
    max_form_bytes: int = Field(64 * 1024, ge=1024)     # all non-file parts of one request together
    max_uploads: int = Field(4, ge=1)                   # request bodies being received at once
    # s a synchronous request may take from its arrival, below the proxies' 600 s: 503 `job_timeout` (the error code
    # clients know). STT_JOB_TIMEOUT, its name before, is still read (a deployed .env may set it); the new name wins
    request_timeout: float = Field(570, gt=0, validation_alias=AliasChoices("STT_REQUEST_TIMEOUT", "STT_JOB_TIMEOUT"))
    max_loaded_models: int = Field(2, ge=1)             # the default included
    allow_model_downloads: bool = False                 # hub ids/catalogue names beyond the configured ones
    allow_open_access: bool = False                     # start without STT_API_KEYS (local development)
    # asynchronous jobs (stt_common/jobs/, POST /v1/jobs); off while redis_url is empty
    redis_url: str = ""                 # redis://host:port/0, rediss://... (TLS) or unix:///run/redis/redis.sock
    redis_password: str = Field("", validation_alias=AliasChoices("REDIS_PASSWORD", "STT_REDIS_PASSWORD"))
    jobs_dir: str = "/jobs"             # uploads and results of jobs (shared by the API and its workers)
    jobs_service: str = ""              # the service's key, for the processes that load no service code (relay, sweep)
    # new jobs get 507 insufficient_storage when the jobs' disk would keep less than this free after the upload
    jobs_min_free_mb: int = Field(1024, ge=0)
    job_ttl: float = Field(3 * 86400, gt=0)          # s a finished job's audio, result and status are kept
    job_max_seconds: float = Field(6 * 3600, gt=0)   # a job's time limit on the worker
    job_max_audio_seconds: float = Field(12 * 3600, gt=0)  # longest recording a job accepts
    job_retries: int = Field(2, ge=0)   # a crashed or abandoned job (worker killed) runs again this often
    job_retry_intervals: str = Field("10,60", description=(
        "Seconds a crashed or abandoned job waits before each retry, comma-separated: the first retry waits the "
        "first value, the second the second, and so on; retries past the list wait its last value. 0 = at once. "
        "Each value 0-3600. A job that kills every worker it lands on (out of memory on one file) thus spends its "
        "retries over minutes instead of seconds. RQ's scheduler (run by the job workers) requeues it when due."))
    webhook_secret: str = ""            # master secret of the callers' webhook secrets; empty = callback_url refused
    webhook_allow_private: bool = False  # callbacks to loopback/private addresses (tests, private networks)
    webhook_allow_networks: str = ""    # CIDRs, comma-separated, callbacks may reach besides public addresses
    webhook_timeout: float = Field(15, gt=0, le=120)  # s for a whole delivery: resolving, connecting, sending, answer
    job_heartbeat_ttl: float = Field(60, ge=2)  # s without a heartbeat before a running job counts as abandoned
    # quotas on submission (stt_common/jobs/quotas.py): 429 with Retry-After past one; 0 = no limit
    job_quota_jobs: int = Field(20, ge=0)             # a caller's jobs queued or running
    job_quota_mb: float = Field(10240, ge=0)          # a caller's audio and results kept (MiB)
    jobs_max_queued: int = Field(200, ge=0)           # jobs queued or running, all callers
    jobs_max_stored_mb: float = Field(51200, ge=0)    # audio and results kept in jobs_dir, all callers (MiB)
    # identity: the key nginx sends for a basic-auth user, whose name comes in X-STT-User (stt_common/auth.py)
    proxy_key: str = ""
    # worker hosts (stt_common/jobs/link.py, relay.py, remote.py): the name a job's status shows; on a worker host
    # the front's link URL (https://<front link address>:<port>/<service>), its token and the link's TLS files;
    # on the front the file of the worker hosts' token hashes and the number of relay processes
    worker_name: str = ""               # empty = the container's host name
    jobs_front_url: str = ""            # empty = not a worker host
    link_token: str = ""                # a worker host's own token for the front's link interface
    link_ca: str = ""                   # CA of the link
    link_cert: str = ""                 # this worker's client certificate
    link_key: str = ""                  # and its key
    link_workers_file: str = ""         # front: "<host> <sha256 of its token>" per line; empty = no worker hosts
    link_relays: int = Field(1, ge=1, le=64)   # front: relay processes (one per worker-host slot)
    link_max_result_mb: float = Field(64, gt=0)  # the largest result a worker host may hand in
    # audio by URL (file_url, stt_common/audio_url.py): the fetch's deadline (resolving, connecting, the whole body),
    # and addresses beyond the public internet it may reach (a private bucket); the size cap is max_upload_mb
    url_timeout: float = Field(300, gt=0, le=3600)
    url_allow_private: bool = False
    url_allow_networks: str = ""        # CIDRs, comma-separated
    host: str = Field("0.0.0.0", validation_alias=AliasChoices("HOST", "STT_HOST"))
    port: int = Field(8000, validation_alias=AliasChoices("PORT", "STT_PORT"))

    @field_validator("compute_type", "tmp_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("job_retry_intervals")
    @classmethod
    def _intervals(cls, v: str) -> str:
        try:
            values = [int(x) for x in v.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError("STT_JOB_RETRY_INTERVALS: whole seconds, comma-separated (e.g. 10,60)") from None
        if not values or not all(0 <= x <= 3600 for x in values):
            raise ValueError("STT_JOB_RETRY_INTERVALS: one or more values, each 0-3600 seconds")
        return ",".join(map(str, values))

    @property
    def job_retry_waits(self) -> list[int]:
        """The wait before each of the `job_retries` retries, in order (the list's last value repeats)."""
        values = [int(x) for x in self.job_retry_intervals.split(",")]
        return [values[min(i, len(values) - 1)] for i in range(self.job_retries)]

    @property
    def effective_compute_type(self) -> str:
        if self.compute_type:
            return self.compute_type
        return "float16" if self.device == "cuda" else "int8"

    def device_problem(self, cuda_devices: Callable[[], int]) -> Optional[str]:
        """Why this container cannot run on its STT_DEVICE, or None. device=cuda needs a GPU visible inside the
        container: `cuda_devices()` counts them (ctranslate2.get_cuda_device_count, torch.cuda.device_count).
        Checked once at startup: the API then answers this message (503 device_unavailable, and on /health) instead
        of retrying a model load that cannot work, the job worker exits with it (images/README.md, "GPU")."""
        if self.device != "cuda":
            return None   # cpu, or auto (which falls back to the CPU by itself)
        try:
            if int(cuda_devices()) > 0:
                return None
        except Exception as e:  # noqa: BLE001 - a GPU without the libraries, a broken driver: said as it is
            return f"STT_DEVICE=cuda but the GPU is not usable in this container: {e}"
        return ("STT_DEVICE=cuda but no GPU is visible in this container. Run it with the NVIDIA container runtime "
                "and a GPU reservation (the deploy sets both up where a service's device is cuda; by hand: "
                "docker run --gpus all), or set STT_DEVICE=cpu (compute type int8).")

    def require_device(self, cuda_devices: Callable[[], int]) -> None:
        """device_problem as a one-line exit (no stack trace): for the job workers, which take no job they cannot
        run. Their containers do not restart by themselves (restart: "no"), so this is no crash loop."""
        problem = self.device_problem(cuda_devices)
        if problem:
            raise SystemExit(problem)

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def check_access(self) -> None:
        """Refuse to serve without an API key unless open access is explicitly allowed."""
        if not self.api_key_set and not self.allow_open_access:
            raise SystemExit("STT_API_KEYS is empty: set at least one API key, or STT_ALLOW_OPEN_ACCESS=1 to "
                             "serve without authentication (local development only).")

    def public_dict(self) -> dict:
        """Settings safe to show (no keys)."""
        d = self.model_dump()
        d["api_keys"] = f"{len(self.api_key_set)} configured"
        d["redis_password"] = "set" if self.redis_password else ""
        d["webhook_secret"] = "set" if self.webhook_secret else ""
        d["proxy_key"] = "set" if self.proxy_key else ""
        d["link_token"] = "set" if self.link_token else ""
        return d


# faster-whisper's (and Whisper's) temperature fallback ladder
TEMPERATURE_LADDER = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def temperatures(t: float) -> list:
    """A request's OpenAI ``temperature`` as the decoder's list: 0 keeps the fallback ladder (what a direct
    faster-whisper or whisper call does, and what the guards climb); another value is used alone."""
    return list(TEMPERATURE_LADDER) if not t else [float(t)]


class GuardSettings(BaseModel):
    """faster-whisper's guards against hallucination (loops such as "la vidéo de la vidéo de la vidéo" on poor
    audio) as server defaults, STT_COMPRESSION_RATIO_THRESHOLD and so on; none/off/empty disables a threshold.
    A decode that fails a guard is decoded again at the next temperature of the fallback ladder (requests with
    temperature=0). Mixed into both services' settings: ``class FasterSettings(GuardSettings, STTSettings)``."""

    compression_ratio_threshold: Optional[float] = Field(
        2.4, description="A decode whose text gzip-compresses better than this ratio is a repetition loop: it is "
                         "retried at a higher temperature. None disables the check.")
    log_prob_threshold: Optional[float] = Field(
        -1.0, description="A decode whose average token log-probability is below this is retried at a higher "
                          "temperature; with no_speech_threshold it also decides silence. None disables it.")
    no_speech_threshold: Optional[float] = Field(
        0.6, ge=0, le=1, description="A window whose no-speech probability is above this AND whose average "
                                     "log-probability is below log_prob_threshold is silence: no text is emitted "
                                     "for it (the usual source of invented text on music or noise).")
    condition_on_previous_text: bool = Field(
        True, description="Feed the previous window's text as the prompt of the next. More consistent spelling "
                          "and style; False stops a loop from carrying over from one window to the next.")
    hallucination_silence_threshold: Optional[float] = Field(
        None, gt=0, description="With word timestamps on: skip silent stretches longer than this many seconds "
                                "around a suspected hallucination. None: off (faster-whisper's default).")

    @field_validator("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold",
                     "hallucination_silence_threshold", mode="before")
    @classmethod
    def _off_is_none(cls, v):
        # from the environment: STT_COMPRESSION_RATIO_THRESHOLD=none (or off, or empty) disables that guard
        return None if isinstance(v, str) and v.strip().lower() in ("", "none", "off") else v

    @property
    def guards(self) -> dict:
        """The guards as faster-whisper's transcribe() keywords (and TranscriptionOptions fields)."""
        return {"compression_ratio_threshold": self.compression_ratio_threshold,
                "log_prob_threshold": self.log_prob_threshold, "no_speech_threshold": self.no_speech_threshold,
                "condition_on_previous_text": self.condition_on_previous_text,
                "hallucination_silence_threshold": self.hallucination_silence_threshold}
