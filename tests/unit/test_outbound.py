"""stt_common.outbound: the guard every request to a user-named address goes through (webhooks, audio URLs).

Real sockets on loopback: 127.0.0.2 stands for "a public receiver" (the tests' policy allows exactly that address,
as an operator's `allow_networks` would), 127.0.0.1 for the host's own services, which must never be reached.
DNS is the one edge replaced: a resolver function returns the answers a hostile name server would give."""
from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from support.local_http import Receiver, answer, big, drip, redirect
from stt_common.outbound import AddressPolicy, OutboundError, parse_url, request, resolve, why_refused

PUBLIC = "127.0.0.2"   # the stand-in for a public address
POLICY = AddressPolicy(allow_networks=(f"{PUBLIC}/32",))


def answers(*rounds):
    """A resolver giving these address lists, one per call (the last one repeats): DNS rebinding as a name
    server plays it, first a harmless address, then the host's own."""
    calls = []

    def resolver(host, port, family=0, type=0, *rest):
        addresses = rounds[min(len(calls), len(rounds) - 1)]
        calls.append(host)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    resolver.calls = calls
    return resolver


@pytest.fixture
def public():
    with Receiver(PUBLIC) as r:
        yield r


@pytest.fixture
def local():
    with Receiver("127.0.0.1") as r:
        yield r


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.254",
    "198.18.0.1", "198.19.255.255", "192.0.0.8", "192.0.2.1", "0.0.0.0", "224.0.0.1", "240.0.0.1",
    "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::6440:1", "64:ff9b:1::808:808", "2002:7f00:1::1",
    "2002:a00:1::1", "2002:c0a8:101::1", "2001::1", "::127.0.0.1", "2001:db8::1",
])
def test_every_non_global_address_is_refused(address):
    assert why_refused(ipaddress.ip_address(address)), address
    assert AddressPolicy().refusal(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808",
                                     "2002:808:808::1"])
def test_global_addresses_pass(address):
    assert why_refused(ipaddress.ip_address(address)) is None


def test_private_deployments_and_named_networks():
    assert AddressPolicy(allow_private=True).refusal("10.0.0.5") is None
    assert AddressPolicy(allow_private=True).refusal("224.0.0.1")   # multicast never
    narrow = AddressPolicy(allow_networks=("10.5.0.0/16",))
    assert narrow.refusal("10.5.3.4") is None and narrow.refusal("10.6.0.1")


@pytest.mark.parametrize("url, why", [
    ("ftp://example.org/", "http://"), ("http://x:99999/", "malformed"), ("http://x:abc/", "malformed"),
    ("http://exa\tmple.org/", "control"), ("http://example.org/a b", "space"), ("http://u:p@example.org/", "user"),
    ("http:///path", "no host"), ("https://" + "a" * 2100 + ".org/", "longer"), ("http://[::1/", "malformed"),
    ("http://example.org/caf\u00e9", "percent-encoded"), ("", "empty"),
])
def test_bad_urls_are_refused_with_a_reason(url, why):
    with pytest.raises(OutboundError) as e:
        parse_url(url)
    assert e.value.reason == "invalid_url" and why in e.value.message


def test_parse_keeps_what_the_request_needs():
    t = parse_url("https://Hooks.Example.ORG:8443/stt?x=1#frag")
    assert (t.scheme, t.host, t.port, t.path, t.host_header) == \
        ("https", "hooks.example.org", 8443, "/stt?x=1", "hooks.example.org:8443")
    assert parse_url("http://[2606:4700::1]/").host_header == "[2606:4700::1]"


def test_a_name_resolved_once_and_pinned_defeats_rebinding(public, local):
    rebinding = answers([PUBLIC], ["127.0.0.1"])
    r = request(f"http://hooks.example.test:{public.port}/in", method="POST", body=b"{}", policy=POLICY,
                resolver=rebinding)
    assert r.status == 200 and r.address == PUBLIC
    assert rebinding.calls == ["hooks.example.test"]          # resolved once
    assert public.requests[0].headers["host"] == f"hooks.example.test:{public.port}"
    assert local.connections == 0                             # the second answer was never used


def test_a_name_with_one_private_address_is_refused(local):
    with pytest.raises(OutboundError) as e:
        request(f"http://mixed.example.test:{local.port}/", policy=POLICY, resolver=answers([PUBLIC, "127.0.0.1"]))
    assert e.value.reason == "forbidden_address" and "127.0.0.1" in e.value.message
    assert local.connections == 0


def test_literal_private_addresses_never_connect(local):
    for url in (local.url, f"http://[::ffff:127.0.0.1]:{local.port}/", f"http://100.64.0.1:{local.port}/"):
        with pytest.raises(OutboundError) as e:
            request(url, policy=POLICY)
        assert e.value.reason == "forbidden_address"
    assert local.connections == 0


def test_redirects_are_not_followed(local):
    with Receiver(PUBLIC, behave=redirect(f"{local.url}/admin")) as hop:
        with pytest.raises(OutboundError) as e:
            request(hop.url + "/", method="POST", body=b"{}", policy=POLICY)
    assert e.value.reason == "redirect" and e.value.status == 302 and "127.0.0.1" in e.value.message
    assert local.connections == 0


def test_one_deadline_covers_a_slow_drip():
    with Receiver(PUBLIC, behave=drip(0.2)) as slow:
        t0 = time.monotonic()
        with pytest.raises(OutboundError) as e:
            request(slow.url + "/", method="POST", body=b"{}", policy=POLICY, deadline_s=1.5)
        took = time.monotonic() - t0
    assert e.value.reason == "timeout"
    assert 1.4 < took < 3, took   # each byte came well within any per-read timeout; the whole is cut at 1.5 s


def test_a_server_that_accepts_and_says_nothing_is_cut_at_the_deadline():
    with Receiver(PUBLIC, behave=lambda conn, req: time.sleep(10)) as mute:
        t0 = time.monotonic()
        with pytest.raises(OutboundError) as e:
            request(mute.url + "/", policy=POLICY, deadline_s=1)
    assert e.value.reason == "timeout" and time.monotonic() - t0 < 2.5


def test_the_body_is_capped_while_it_streams(tmp_path):
    with Receiver(PUBLIC, behave=big(300_000)) as large:
        with pytest.raises(OutboundError) as e:
            request(large.url + "/", policy=POLICY, max_bytes=100_000)
        assert e.value.reason == "too_large"
        cut = request(large.url + "/", policy=POLICY, max_bytes=100_000, truncate=True)
        assert cut.truncated and cut.length == 100_000
        with open(tmp_path / "out", "wb") as sink:
            whole = request(large.url + "/", policy=POLICY, max_bytes=1_000_000, sink=sink)
        assert whole.length == 300_000 and (tmp_path / "out").stat().st_size == 300_000 and whole.body == b""


def test_statuses_come_back_as_they_are(public):
    with Receiver(PUBLIC, behave=lambda c, r: c.sendall(answer(503, b"busy"))) as busy:
        r = request(busy.url + "/", method="POST", body=b"x", policy=POLICY)
    assert r.status == 503 and r.body == b"busy"


def test_nothing_listening_is_a_connection_failure():
    s = socket.socket()
    s.bind((PUBLIC, 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OutboundError) as e:
        request(f"http://{PUBLIC}:{port}/", policy=POLICY, deadline_s=3)
    assert e.value.reason == "connection_failed"


def test_an_unresolvable_name():
    with pytest.raises(OutboundError) as e:
        resolve(parse_url("http://nowhere.invalid/"), POLICY, resolver=answers([]))
    assert e.value.reason == "unresolvable"

    def failing(*a):
        raise socket.gaierror(-2, "Name or service not known")
    with pytest.raises(OutboundError) as e:
        resolve(parse_url("http://nowhere.invalid/"), POLICY, resolver=failing, timeout=2)
    assert e.value.reason == "unresolvable"


def test_a_hanging_resolver_counts_against_the_deadline():
    def hanging(*a):
        time.sleep(5)
        return []
    t0 = time.monotonic()
    with pytest.raises(OutboundError) as e:
        request("http://slow-dns.example.test/", policy=POLICY, resolver=hanging, deadline_s=1)
    assert e.value.reason == "timeout" and time.monotonic() - t0 < 2
