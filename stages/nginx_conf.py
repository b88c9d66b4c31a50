"""A small parser for `nginx -T` output: which server blocks listen where, for which names.

Runs in two places: here (tests, the deploy) and on the host, where the `NginxServerBlocks` fact
pipes `nginx -T` into this very file (python3, standard library only) so that only file names,
ports and server names come back: `nginx -T` also dumps files holding secrets (our auth map's
API keys), and pyinfra prints fact output with -vvv.
"""

from __future__ import annotations

import json
import re
import sys

_FILE_HEADER = re.compile(r"^# configuration file (.+):$")


def split_files(dump: str) -> list[tuple[str, str]]:
    """[(path, text)] of the files in an `nginx -T` dump, in the order nginx read them."""
    out: list[tuple[str, list[str]]] = []
    for line in dump.splitlines():
        m = _FILE_HEADER.match(line)
        if m:
            out.append((m.group(1), []))
        elif out:
            out[-1][1].append(line)
    return [(path, "\n".join(lines) + "\n") for path, lines in out]


def tokenize(text: str):
    """Yield (token, line, quoted) for an nginx config text: words, quoted strings, `{`, `}`, `;`."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            yield c, line, False
            i += 1
        elif c in "\"'":
            quote, start_line, buf = c, line, []
            i += 1
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if text[i] == "\n":
                    line += 1
                buf.append(text[i])
                i += 1
            i += 1
            yield "".join(buf), start_line, True
        else:
            buf = []
            while i < n and not text[i].isspace() and text[i] not in ";{}\"'":
                if text[i] == "$" and i + 1 < n and text[i + 1] == "{":  # ${var}
                    end = text.find("}", i)
                    end = n - 1 if end < 0 else end
                    buf.append(text[i:end + 1])
                    i = end + 1
                    continue
                if text[i] == "\\" and i + 1 < n:
                    buf.append(text[i:i + 2])
                    i += 2
                    continue
                buf.append(text[i])
                i += 1
            yield "".join(buf), line, False


def listen_port(args: list[str]) -> int | None:
    """The port of a `listen` directive (80 when it names only an address); None for unix sockets."""
    if not args:
        return 80
    addr = args[0]
    if addr.startswith("unix:"):
        return None
    if addr.isdigit():
        return int(addr)
    tail = addr.rsplit(":", 1)[1] if ":" in addr and not addr.endswith("]") else ""
    return int(tail) if tail.isdigit() else 80


def server_blocks(path: str, text: str) -> list[dict]:
    """The `server {}` blocks of one file (not those of `stream {}` or `upstream {}`)."""
    blocks: list[dict] = []
    stack: list[str] = []  # names of the open blocks
    current: list[tuple[str, bool]] = []  # words of the directive being read
    server: dict | None = None
    server_depth = -1
    for token, line, quoted in tokenize(text):
        if token == "{" and not quoted:
            name = current[0][0] if current else ""
            stack.append(name)
            if name == "server" and server is None and "stream" not in stack[:-1] and "upstream" not in stack[:-1]:
                server = {"file": path, "line": line, "listen": [], "ports": [], "names": [], "ssl": False}
                server_depth = len(stack)
            current = []
        elif token == "}" and not quoted:
            if server is not None and len(stack) == server_depth:
                if not server["listen"]:
                    server["ports"] = [80]
                server["ports"] = sorted(set(server["ports"]))
                blocks.append(server)
                server, server_depth = None, -1
            if stack:
                stack.pop()
            current = []
        elif token == ";" and not quoted:
            if server is not None and len(stack) == server_depth and current:
                name, args = current[0][0], [w for w, _ in current[1:]]
                if name == "listen":
                    server["listen"].append(" ".join(args))
                    port = listen_port(args)
                    if port is not None:
                        server["ports"].append(port)
                    if "ssl" in args[1:]:
                        server["ssl"] = True
                elif name == "server_name":
                    server["names"].extend(a.lower() for a in args if a)
            current = []
        else:
            current.append((token, quoted))
    return blocks


def parse_dump(dump: str) -> list[dict]:
    """Every server block of an `nginx -T` dump, with its file, ports and names."""
    blocks = []
    for path, text in split_files(dump):
        blocks.extend(server_blocks(path, text))
    return blocks


def claims(blocks: list[dict], names: list[str], ports: list[int]) -> list[dict]:
    """The blocks that claim one of these exact names on one of these ports."""
    wanted = {n.lower() for n in names}
    return [b for b in blocks if wanted & set(b["names"]) and set(ports) & set(b["ports"])]


def duplicates(blocks: list[dict], names: list[str], ports: list[int]) -> dict[str, int]:
    """`"name:port" -> count` for each of our names and ports claimed by more than one block."""
    out = {}
    for name in names:
        for port in ports:
            count = len(claims(blocks, [name], [port]))
            if count > 1:
                out[f"{name}:{port}"] = count
    return out


if __name__ == "__main__":
    # on the host: `nginx -T 2>/dev/null | python3 nginx_conf.py` -> JSON, no file contents
    print(json.dumps(parse_dump(sys.stdin.read())))
