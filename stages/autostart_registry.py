"""Our services' entries in the autostart proxy's config.json (its registry of services), merged
without touching anything else.

The file is shared with the host's other services (srv759970 has many): every byte outside
our own entries must stay as it is, whatever its indentation or key order. So this edits
the text: it finds the raw span of each entry of the "services" object with the JSON
decoder, replaces the spans of our entries and inserts missing ones before the closing
brace, in the file's own indentation. A retired service's entry is cut out the same way
(`remove_services`), with the comma that separated it.
"""

from __future__ import annotations

import json
import re

from stages.settings import Platform, ServiceEntry

_WS = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


class ConfigError(ValueError):
    pass


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    assert m is not None   # \s* matches at any position
    return m.end()


def _object_members(text: str, start: int):
    """Yield (key, key_start, value_start, value_end) for the object opening at `start`;
    return the position of its closing brace via StopIteration.value."""
    assert text[start] == "{"
    pos = _skip_ws(text, start + 1)
    if text[pos] == "}":
        return pos
    while True:
        key_start = pos
        key, pos = _DECODER.raw_decode(text, pos)
        if not isinstance(key, str):
            raise ConfigError("object key is not a string")
        pos = _skip_ws(text, pos)
        if text[pos] != ":":
            raise ConfigError(f"expected ':' at offset {pos}")
        value_start = _skip_ws(text, pos + 1)
        _, value_end = _DECODER.raw_decode(text, value_start)
        yield key, key_start, value_start, value_end
        pos = _skip_ws(text, value_end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos] == "}":
            return pos
        raise ConfigError(f"expected ',' or '}}' at offset {pos}")


def _members(text: str, start: int):
    gen = _object_members(text, start)
    members = []
    while True:
        try:
            members.append(next(gen))
        except StopIteration as stop:
            return members, stop.value


def _indent_of(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return text[line_start:pos] if text[line_start:pos].strip() == "" else ""


def _dump(value, indent: str, step: str) -> str:
    raw = json.dumps(value, indent=len(step) if step else None, ensure_ascii=False)
    return raw.replace("\n", "\n" + indent)


def _top_object(text: str) -> tuple[int, list]:
    """The config's top-level object: its start and members; ConfigError when it is not JSON or not an object."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"existing config is not valid JSON: {exc}") from None
    top = _skip_ws(text, 0)
    if text[top] != "{":
        raise ConfigError("existing config is not a JSON object")
    return top, _members(text, top)[0]


def merge_services(text: str | None, entries: dict[str, dict]) -> str:
    """Return config text with `entries` (hostname -> service entry) set under "services"."""
    if text is None or not text.strip():
        return json.dumps({"services": entries}, indent=2, ensure_ascii=False) + "\n"
    top, members = _top_object(text)
    services = [m for m in members if m[0] == "services"]
    if not services:
        # a config without "services": add it as the first member, touching nothing else
        block = '\n  "services": ' + _dump(entries, "  ", "  ") + ("," if members else "\n")
        return text[: top + 1] + block + text[top + 1 :]
    _, _, svc_start, _ = services[0]
    if text[svc_start] != "{":
        raise ConfigError('"services" is not an object')
    svc_members, svc_close = _members(text, svc_start)
    existing = {m[0]: m for m in svc_members}
    out, cursor = [], 0
    # replace our entries in place, only when their value differs
    for host, (_, key_start, v_start, v_end) in sorted(existing.items(), key=lambda kv: kv[1][2]):
        if host not in entries:
            continue
        if json.loads(text[v_start:v_end]) == entries[host]:
            continue
        indent = _indent_of(text, key_start)
        step = _guess_step(text, svc_start, indent)
        out.append(text[cursor:v_start])
        out.append(_dump(entries[host], indent, step))
        cursor = v_end
    # append the missing ones after the last entry
    missing = [h for h in entries if h not in existing]
    if missing:
        if svc_members:
            last_end = svc_members[-1][3]
            indent = _indent_of(text, svc_members[-1][1]) or "    "
            step = _guess_step(text, svc_start, indent)
            insert_at = last_end
            prefix = ""
            for host in missing:
                prefix += ",\n" + indent + json.dumps(host) + ": " + _dump(entries[host], indent, step)
            out.append(text[cursor:insert_at])
            out.append(prefix)
            cursor = insert_at
        else:
            key_line_start = text.rfind("\n", 0, svc_start) + 1
            lead = re.match(r"\s*", text[key_line_start:])
            assert lead is not None   # \s* matches any string
            outer = lead.group(0)
            indent = outer + "  "
            body = ",\n".join(indent + json.dumps(h) + ": " + _dump(entries[h], indent, "  ") for h in missing)
            out.append(text[cursor:svc_start + 1])
            out.append("\n" + body + "\n" + outer)
            cursor = svc_close
    out.append(text[cursor:])
    return "".join(out)


def remove_services(text: str | None, hosts) -> str | None:
    """Return config text without the "services" entries named in `hosts` (a retired service's), every
    other byte as it was: an entry goes with the comma that separated it from its neighbour. A config
    without them (or without a "services" object) comes back unchanged."""
    if text is None or not text.strip():
        return text
    for name in hosts:
        services = [m for m in _top_object(text)[1] if m[0] == "services"]
        if not services or text[services[0][2]] != "{":
            return text
        svc_start = services[0][2]
        members, svc_close = _members(text, svc_start)
        index = next((i for i, m in enumerate(members) if m[0] == name), None)
        if index is None:
            continue
        if len(members) == 1:
            text = text[: svc_start + 1] + text[svc_close:]           # the last entry: "services": {}
        elif index == 0:
            text = text[: members[0][1]] + text[members[1][1]:]        # the first: up to the next key
        else:
            text = text[: members[index - 1][3]] + text[members[index][3]:]   # from the previous value's end
    return text


def registered(text: str | None, host: str) -> dict | None:
    """The entry registered under `host` in the config text, or None."""
    if text is None or not text.strip():
        return None
    try:
        services = json.loads(text).get("services")
    except (json.JSONDecodeError, AttributeError):
        return None
    entry = services.get(host) if isinstance(services, dict) else None
    return entry if isinstance(entry, dict) else None


def _guess_step(text: str, obj_start: int, member_indent: str) -> str:
    key_line_start = text.rfind("\n", 0, obj_start) + 1
    lead = re.match(r"[ \t]*", text[key_line_start:])
    assert lead is not None   # [ \t]* matches any string
    outer = lead.group(0)
    step = member_indent[len(outer):] if member_indent.startswith(outer) else "  "
    return step or "  "


def entry_for(svc: ServiceEntry, p: Platform, relays: int = 0) -> dict:
    """The runbook's entry format, plus our optional keys (`relays`: stages.link.relays of the service, which
    decides whether its project has a relay container)."""
    from stages.compose_projects import made_from, project_containers

    return {
        "name": svc.name,
        "composeDir": svc.project_dir,
        "proxyPort": svc.port,
        "blocking": svc.blocking,
        "containers": [svc.container],
        "readinessPath": "/health",
        "idleTimeout": p.autostart_idle_timeout,
        "maxWait": p.autostart_max_wait,
        "upstreamTimeout": p.proxy_timeout,
        **({"wakePath": p.autostart_wake_path} if p.autostart_wake_path else {}),
        # the proxy may start the stopped project with `docker start` while these files are older than it
        "dockerStart": {"containers": project_containers(svc, p, relays), "madeFrom": made_from(svc, p)},
    }
