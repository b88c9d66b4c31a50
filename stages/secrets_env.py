"""Secret values, read from the environment at deploy time, never from git or group data.

Values are wrapped in `Secret`, whose repr is masked, so an operation argument or a log
line can never print one by accident.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

REPO = Path(__file__).resolve().parent.parent
SANDBOX_SECRETS = REPO / ".sandbox" / "secrets.env"
# the brownfield sandbox's (make sandbox-brownfield): no HF_TOKEN line, so the host's token is kept
BROWNFIELD_SECRETS = REPO / ".sandbox" / "brownfield-secrets.env"

# name -> (required, what it is); the README's "Secrets" table mirrors this
VARIABLES = {
    "WHISPER_BASIC_AUTH_USER": (True, "basic-auth user nginx accepts for both vhosts"),
    "WHISPER_BASIC_AUTH_PASSWORD": (True, "that user's password (stored as a bcrypt hash)"),
    "WHISPER_API_KEY": (False, "API key(s), comma-separated: `Authorization: Bearer` through nginx and the services"),
    "HF_TOKEN": (False, "HuggingFace token for pyannote diarization (whisperx); empty = offline diarization"),
    "WHISPER_SMTP_PASSWORD": (False, "password of `smtp_user` at the mail relay that sends the alerts"),
}


class Secret:
    """A string that never shows itself in a repr, str() of an argument list, or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class MissingSecret(RuntimeError):
    pass


class UnsafeSecret(ValueError):
    pass


# what may appear in an API key and the basic-auth user: these end up inside nginx's config (a map key,
# a header value) and a .env line, where `"`, `$`, `;`, `{`, spaces or a newline would break the file or
# be interpreted (`$host` is a variable to nginx). Tokens from `secrets.token_urlsafe`, `sk-...` keys and
# base64 all fit.
# RFC 6750's b64token: what a client can send after "Bearer " ('=' only as padding at the end)
SAFE_KEY = re.compile(r"(?=.{1,256}$)[A-Za-z0-9._~+/-]+=*")
SAFE_USER = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# any other secret goes into a .env line only: one line, no quotes or `$` (compose interpolates `$`)
SAFE_ENV_VALUE = re.compile(r"[^\s\"'$`\\]*")


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load(sandbox: bool | Path | str = False, environ: Mapping[str, str] | None = None) -> dict[str, Secret | None]:
    """All secret variables. A variable absent from the environment is None: the deploy keeps
    the value already on the host; only an explicit empty value (`HF_TOKEN=`) clears it.
    For the sandbox hosts, a secrets file (`make sandbox`: .sandbox/secrets.env, or the path
    given) fills what the environment lacks.

    Every value is checked before anything changes on the host (`validate`)."""
    environ = os.environ if environ is None else environ
    path = SANDBOX_SECRETS if sandbox is True else (Path(sandbox) if sandbox else None)
    fallback = _read_env_file(path) if path and path.exists() else {}
    values, missing = {}, []
    for name, (required, _) in VARIABLES.items():
        value = environ.get(name, fallback.get(name))
        if name == "WHISPER_BASIC_AUTH_USER" and not value:
            missing.append(name)  # the one that names our line in the shared htpasswd
        elif required and value == "":
            missing.append(name)
        values[name] = None if value is None else Secret(value)
    if missing:
        raise MissingSecret(
            "missing secret environment variable(s): "
            + ", ".join(missing)
            + " (see README, 'Secrets'); nothing was changed on the host"
        )
    validate(values)
    return values


def validate(values: dict[str, Secret | None]) -> None:
    """Refuse values that would break or change the nginx config or a .env file; the message
    names the variable and the rule, never the value."""
    user = values.get("WHISPER_BASIC_AUTH_USER")
    if user is not None and not SAFE_USER.fullmatch(user.reveal()):
        raise UnsafeSecret("WHISPER_BASIC_AUTH_USER may hold only letters, digits and . _ @ - (1 to 64); "
                           "nothing was changed on the host")
    password = values.get("WHISPER_BASIC_AUTH_PASSWORD")
    if password is not None and ("\n" in password.reveal() or "\r" in password.reveal()):
        raise UnsafeSecret("WHISPER_BASIC_AUTH_PASSWORD must be one line; nothing was changed on the host")
    smtp = values.get("WHISPER_SMTP_PASSWORD")
    if smtp is not None and ("\n" in smtp.reveal() or "\r" in smtp.reveal()):
        raise UnsafeSecret("WHISPER_SMTP_PASSWORD must be one line; nothing was changed on the host")
    keys = values.get("WHISPER_API_KEY")
    if keys is not None:
        for i, key in enumerate(k.strip() for k in keys.reveal().split(",")):
            if key and not SAFE_KEY.fullmatch(key):
                raise UnsafeSecret(
                    f"WHISPER_API_KEY: key #{i + 1} may hold only letters, digits and . _ ~ + / - then = padding (at most "
                    "256); "
                    "no quotes, $, spaces or ; (it goes into nginx's config). Nothing was changed on the host")
    for name in ("HF_TOKEN",):
        value = values.get(name)
        if value is not None and not SAFE_ENV_VALUE.fullmatch(value.reveal()):
            raise UnsafeSecret(f"{name} may not hold spaces, quotes, $, ` or \\; nothing was changed on the host")


def api_keys(env_secrets: dict[str, Secret | None]) -> list[str] | None:
    """Our API keys; None when WHISPER_API_KEY is absent (the host's keys are kept)."""
    key = env_secrets.get("WHISPER_API_KEY")
    if key is None:
        return None
    return [k.strip() for k in key.reveal().split(",") if k.strip()]
