"""Text that reaches the engines: no control characters (NUL and friends are a 400, never a 500)."""
from __future__ import annotations

import re
from typing import Optional

from .errors import bad_request

# C0 controls except tab/LF/CR in multi-line text, DEL, C1 controls, and lone surrogates
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(value: str, multiline: bool = False) -> bool:
    return bool((_CONTROL_MULTILINE if multiline else _CONTROL).search(value))


def check_text(value: str, param: Optional[str], multiline: bool = False) -> str:
    """`value` unchanged, or a 400 naming `param` when it holds control characters."""
    if has_control(value, multiline):
        raise bad_request(f"Invalid value for '{param}': control characters are not allowed.",
                          param=param, code="invalid_value")
    return value


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\"/:,;()\[\]]+)+/?")


def redact_paths(message: str) -> str:
    """A load error as a client may see it: host paths replaced, length bounded."""
    return _PATH.sub("<path>", message)[:300]
