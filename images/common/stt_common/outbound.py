"""HTTP requests to an address a user named (a job's callback_url; an audio URL), made so that the user cannot point
them at the host's own services, its private network or anything but the public internet, nor hold a process with
a slow answer.

What `request()` guarantees, in the order it happens:
- the URL is http(s) with a host name, a valid port, no credentials, no whitespace or control character, at most
  `MAX_URL_LENGTH` characters (`parse_url`; anything else is `invalid_url`, never an exception of http.client);
- the name is resolved ONCE; if any of its addresses is not a global unicast address, the request is refused
  (`forbidden_address`): loopback, private, link-local, shared (100.64/10), benchmarking (198.18/15), IETF
  (192.0.0/24), documentation, reserved, multicast, unspecified, and the IPv6 forms that carry such an IPv4
  address inside (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16; local-use NAT64 64:ff9b:1::/48 and Teredo
  are refused outright). An operator may allow named networks (`AddressPolicy.allow_networks`) or every
  private address (`allow_private`, for tests and private deployments);
- the connection goes to the address that was checked (pinned): the name is never resolved again, so a DNS
  answer that changes between the check and the connection (rebinding) reaches nothing new. TLS still checks the
  certificate against the name (SNI and hostname verification), the Host header carries the name;
- a redirect is an answer like any other, never followed (`redirect`);
- ONE deadline covers everything: resolving, connecting, TLS, sending, the answer's headers and body. A
  watchdog closes the socket when it passes, so a server that sends one byte a second is cut at the deadline,
  not after a timeout per read (`timeout`);
- the answer's body is read up to a size cap, streamed into a sink or kept in memory (`too_large` past the cap,
  or truncated where the caller asked for that: a webhook's receiver's answer body is only logged).

Errors are `OutboundError(reason, message)`; the message names the host, never the full URL (it may carry a
token in its path or query).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
CHUNK = 64 * 1024
NAT64 = ipaddress.ip_network("64:ff9b::/96")          # the well-known prefix: the last 32 bits are an IPv4 address
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 prefixes: where they lead is site-specific
# special-purpose ranges refused by name, whatever the Python version's is_global says of single addresses in them
SPECIAL = {ipaddress.ip_network(n): what for n, what in (
    ("0.0.0.0/8", "a 'this network' address"), ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("192.0.0.0/24", "an IETF protocol assignment"), ("192.0.2.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"), ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"), ("240.0.0.0/4", "a reserved address"),
    ("2001::/23", "an IETF protocol assignment"), ("2001:db8::/32", "a documentation address"),
    ("100::/64", "a discard-only address"))}

Resolver = Callable[..., list]


class OutboundError(Exception):
    """reason: invalid_url, forbidden_address, unresolvable, connection_failed, timeout, redirect, too_large."""

    def __init__(self, reason: str, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str        # as it goes into DNS, SNI and the Host header (IDNA, lowercase)
    port: int
    path: str        # the request target: path and query
    literal: bool    # the host is an IP address

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str, max_length: int = MAX_URL_LENGTH) -> Target:
    """A URL we may request, or OutboundError(invalid_url) saying why not."""
    def bad(why: str) -> OutboundError:
        return OutboundError("invalid_url", why)

    if not isinstance(url, str) or not url:
        raise bad("the URL is empty")
    if len(url) > max_length:
        raise bad(f"the URL is longer than {max_length} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise bad("the URL holds a space, a tab, a newline or another control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:   # a port out of range or not a number, a malformed IPv6 literal
        raise bad(f"the URL is malformed ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise bad("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise bad("the URL may not carry a user name or password (put a secret in its path or query instead)")
    host = parts.hostname
    if not host:
        raise bad("the URL has no host name")
    literal = True
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        literal = False
        try:
            host = host.encode("idna").decode("ascii").lower().rstrip(".")
        except UnicodeError:
            raise bad("the URL's host name is not a valid DNS name") from None
        if not host or len(host) > 253 or any(not label or len(label) > 63 for label in host.split(".")):
            raise bad("the URL's host name is not a valid DNS name") from None
    path = parts.path or "/"
    if any(ord(c) > 0x7E for c in path + parts.query):
        raise bad("the URL's path or query holds characters that are not percent-encoded")
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path, literal)


def why_refused(ip) -> Optional[str]:
    """Why a connection to this address is refused by default (None: a global unicast address)."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            inner = why_refused(ip.ipv4_mapped)
            return inner and f"an IPv4-mapped form of {inner}"
        if ip in NAT64_LOCAL:
            return "a local-use NAT64 address"
        if ip in NAT64:
            inner = why_refused(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
            return inner and f"a NAT64 form of {inner}"
        if ip.sixtofour is not None:
            inner = why_refused(ip.sixtofour)
            if inner:
                return f"a 6to4 form of {inner}"
        if ip.teredo is not None:
            return "a Teredo address"
    for net, what in SPECIAL.items():
        if ip.version == net.version and ip in net:
            return what
    for test, what in (("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
                       ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
                       ("is_private", "a private address"), ("is_reserved", "a reserved address")):
        if getattr(ip, test):
            return what
    if not ip.is_global:
        return "a non-global address (shared, benchmarking, documentation or IETF range)"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a request may reach: global unicast ones, plus `allow_networks` (CIDRs an operator named),
    plus every private one when `allow_private` (tests, deployments whose receivers live on a private network)."""

    allow_private: bool = False
    allow_networks: Sequence[str] = ()
    _networks: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_networks",
                           tuple(ipaddress.ip_network(n.strip(), strict=False) for n in self.allow_networks if n.strip()))

    def refusal(self, address: str) -> Optional[str]:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip.version == net.version and ip in net for net in self._networks):
            return None
        why = why_refused(ip)
        if why is None:
            return None
        if self.allow_private and not ip.is_multicast and not ip.is_unspecified:
            return None
        return why


def check_address(target: Target, policy: AddressPolicy) -> None:
    """A literal IP address checked at once (no DNS): what a submission can refuse before queueing."""
    if target.literal:
        why = policy.refusal(target.host)
        if why:
            raise OutboundError("forbidden_address", f"{target.host} is {why}")


def resolve(target: Target, policy: AddressPolicy, resolver: Optional[Resolver] = None,
            timeout: Optional[float] = None) -> list[str]:
    """The addresses of the target's host, resolved once, every one allowed by the policy (one refused address
    refuses the name: an answer mixing a public and a private address is how rebinding starts)."""
    if target.literal:
        check_address(target, policy)
        return [target.host]
    lookup = resolver or socket.getaddrinfo
    infos = _with_timeout(lambda: lookup(target.host, target.port, 0, socket.SOCK_STREAM), timeout,
                          f"resolving {target.host} took too long")
    addresses: list[str] = []
    for info in infos or []:
        address = info[4][0]
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundError("unresolvable", f"{target.host} has no address")
    for address in addresses:
        why = policy.refusal(address)
        if why:
            raise OutboundError("forbidden_address", f"{target.host} resolves to {address}, {why}")
    return addresses


def _with_timeout(fn, timeout: Optional[float], message: str):
    """fn() in a helper thread, given up after `timeout` (getaddrinfo cannot be interrupted: a lookup that hangs
    ends in its own time, in a daemon thread, while the caller moves on)."""
    if timeout is None:
        try:
            return fn()
        except (socket.gaierror, UnicodeError) as e:
            raise OutboundError("unresolvable", f"cannot resolve the host name ({e})") from None
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name="outbound-resolve", daemon=True)
    t.start()
    t.join(max(0.0, timeout))
    if t.is_alive():
        raise OutboundError("timeout", message)
    if "error" in box:
        err = box["error"]
        if isinstance(err, (socket.gaierror, UnicodeError)):
            raise OutboundError("unresolvable", f"cannot resolve the host name ({err})") from None
        raise err
    return box["value"]


@dataclass
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes = b""       # when no sink was given: up to the cap
    length: int = 0         # bytes of the body read (written into the sink, or kept)
    truncated: bool = False
    address: str = ""       # the address the request went to


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to one checked address, whatever the name resolves to now."""

    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = address
        self.raw: Optional[socket.socket] = None

    def connect(self):
        self.sock = self.raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedTLS(_Pinned):
    def __init__(self, target: Target, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(target, address, timeout)
        self.context = context

    def connect(self):
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


class _Watchdog:
    """Shuts the connection's socket down when the deadline passes: a read or write blocked on it returns at
    once, whatever the per-operation timeout."""

    def __init__(self, conn: _Pinned, seconds: float):
        self.conn, self.fired = conn, False
        self.timer = threading.Timer(max(0.0, seconds), self._fire)
        self.timer.daemon = True

    def _fire(self):
        self.fired = True
        sock = self.conn.raw
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)   # the TCP socket under TLS too
            except OSError:
                pass

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


def request(url: str, *, method: str = "GET", body: bytes = b"", headers: Optional[Mapping[str, str]] = None,
            deadline_s: float = 15.0, max_bytes: int = CHUNK, truncate: bool = False,
            sink: Optional[BinaryIO] = None, policy: AddressPolicy = AddressPolicy(),
            resolver: Optional[Resolver] = None, tls_context: Optional[ssl.SSLContext] = None,
            user_agent: str = "whisper-platform",
            check_headers: Optional[Callable[[int, str, Mapping[str, str]], None]] = None) -> Response:
    """One HTTP request under the rules of this module's docstring. The answer's status is returned as is
    (4xx and 5xx too); a 3xx raises `redirect`. `max_bytes` caps the body (`too_large`, or cut short with
    `truncate`); with a `sink` the body is written into it as it arrives. `check_headers(status, reason, headers)`
    runs once the answer's headers are in, before a byte of its body is read: whatever it raises goes to the
    caller as is (an audio download refuses an HTML page without reading it)."""
    deadline = time.monotonic() + deadline_s
    target = parse_url(url)

    def left() -> float:
        return deadline - time.monotonic()

    addresses = resolve(target, policy, resolver, timeout=max(0.0, left()))
    context = tls_context or ssl.create_default_context()
    last: Optional[OutboundError] = None
    for address in addresses:
        if left() <= 0:
            break
        conn = (_PinnedTLS(target, address, left(), context) if target.scheme == "https"
                else _Pinned(target, address, left()))
        try:
            with _Watchdog(conn, left()) as dog:
                try:
                    return _exchange(conn, target, address, method, body, headers or {}, max_bytes, truncate, sink,
                                     user_agent, check_headers)
                except OutboundError:
                    raise
                except (OSError, http.client.HTTPException) as e:
                    if dog.fired or left() <= 0:
                        raise OutboundError("timeout", f"{target.host} did not answer within {deadline_s:g} s") \
                            from None
                    if isinstance(e, ssl.SSLError):
                        raise OutboundError("connection_failed", f"TLS with {target.host} failed: {e}") from None
                    if conn.raw is not None and not isinstance(e, ConnectionRefusedError):
                        raise OutboundError("connection_failed", f"{target.host} broke off the exchange: "
                                                                 f"{type(e).__name__}") from None
                    last = OutboundError("connection_failed", f"cannot connect to {target.host} ({address}): "
                                                              f"{type(e).__name__}")
        finally:
            conn.close()
    raise last or OutboundError("timeout", f"{target.host} did not answer within {deadline_s:g} s")


def _exchange(conn: _Pinned, target: Target, address: str, method: str, body: bytes, headers: Mapping[str, str],
              max_bytes: int, truncate: bool, sink: Optional[BinaryIO], user_agent: str,
              check_headers: Optional[Callable[[int, str, Mapping[str, str]], None]] = None) -> Response:
    conn.putrequest(method, target.path, skip_host=True, skip_accept_encoding=True)
    sent = {k.lower() for k in headers}
    conn.putheader("Host", target.host_header)
    if "user-agent" not in sent:
        conn.putheader("User-Agent", user_agent)
    conn.putheader("Connection", "close")
    for name, value in headers.items():
        if any(c in str(value) for c in "\r\n"):
            raise OutboundError("invalid_url", f"header {name} holds a line break")
        conn.putheader(name, value)
    if body or method in ("POST", "PUT", "PATCH"):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    resp = conn.getresponse()
    if 300 <= resp.status < 400:
        where = resp.getheader("Location") or "nowhere"
        raise OutboundError("redirect", f"{target.host} answered {resp.status} (a redirect to "
                                        f"{urlsplit(where).hostname or where[:80]}): redirects are not followed",
                            status=resp.status)
    if check_headers is not None:
        check_headers(resp.status, resp.reason, dict(resp.getheaders()))
    kept, length, truncated = [], 0, False
    while True:
        chunk = resp.read(CHUNK)
        if not chunk:
            break
        if length + len(chunk) > max_bytes:
            if not truncate:
                raise OutboundError("too_large", f"{target.host}'s answer is larger than {max_bytes} bytes")
            chunk, truncated = chunk[:max_bytes - length], True
        length += len(chunk)
        if sink is not None:
            sink.write(chunk)
        else:
            kept.append(chunk)
        if truncated:
            break
    return Response(resp.status, resp.reason, dict(resp.getheaders()), b"".join(kept), length, truncated, address)


def policy_from(allow_private: bool, networks: str | Iterable[str] = "") -> AddressPolicy:
    """A policy from settings: `networks` comma-separated CIDRs (STT_WEBHOOK_ALLOW_NETWORKS)."""
    items = networks.split(",") if isinstance(networks, str) else list(networks)
    return AddressPolicy(allow_private=bool(allow_private), allow_networks=tuple(n.strip() for n in items if n.strip()))
