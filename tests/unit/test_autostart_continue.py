"""The proxy's `Expect: 100-continue` (docker_autostart.forward.ContinueRequest) against plain sockets on 127.0.0.1:
what it relies on in aiohttp beyond its documented API (the `_continue` waiter a request with expect100 awaits
before its body, created in `update_expect_continue`), pinned so that an aiohttp upgrade that changes it fails here
by name; and the two services a body meets: one that ignores Expect gets it after CONTINUE_WAIT, one that answers
first gets none of it."""

import asyncio
import time

import aiohttp
import pytest

from docker_autostart import forward
from docker_autostart.forward import ContinueRequest


def test_aiohttp_still_has_the_waiter_the_timer_resolves():
    assert "update_expect_continue" in vars(aiohttp.ClientRequest)
    assert hasattr(aiohttp.ClientRequest, "_continue")


def _post(handler, body: bytes) -> tuple[int, bytes]:
    """POST `body` with Expect: 100-continue, as the proxy sends it, to a server on 127.0.0.1 that runs `handler`
    on the connection; the answer's status and body."""
    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with aiohttp.ClientSession(request_class=ContinueRequest) as session:
            async with session.post(f"http://127.0.0.1:{port}/", data=body, expect100=True) as r:
                answer = (r.status, await r.read())
        await asyncio.sleep(0.2)   # the server's handler sees the client's close
        server.close()
        return answer

    return asyncio.run(main())


async def _head(reader) -> dict:
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}


def test_a_service_that_ignores_expect_gets_the_body_after_the_wait(monkeypatch):
    monkeypatch.setattr(forward, "CONTINUE_WAIT", 0.3)
    seen = {}

    async def old_server(reader, writer):   # an HTTP/1.0 service: never sends '100 Continue', reads the body
        headers = await _head(reader)
        t0 = time.monotonic()
        body = await reader.readexactly(int(headers["content-length"]))
        seen.update(expect=headers.get("expect"), waited=time.monotonic() - t0, body=body)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    assert _post(old_server, b"x" * 1000) == (200, b"ok")
    assert seen["expect"] == "100-continue" and seen["body"] == b"x" * 1000
    assert 0.2 < seen["waited"] < 5


def test_a_service_that_answers_first_gets_no_body_byte():
    seen = {}

    async def refusing(reader, writer):   # answers from the headers (a full disk), then reads what else comes
        await _head(reader)
        writer.write(b"HTTP/1.1 507 Insufficient Storage\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfull")
        await writer.drain()
        seen["after"] = await reader.read()   # until the client closes
        writer.close()

    assert _post(refusing, b"x" * 100_000) == (507, b"full")
    assert seen["after"] == b""


@pytest.mark.parametrize("expect", [False, True])
def test_the_timer_resolves_the_waiter_only_when_there_is_one(monkeypatch, expect):
    monkeypatch.setattr(forward, "CONTINUE_WAIT", 0.05)

    async def main():
        from yarl import URL
        req = ContinueRequest("POST", URL("http://127.0.0.1:9/"), data=b"x", expect100=expect,
                              loop=asyncio.get_running_loop())
        waiter = req._continue
        if not expect:
            assert waiter is None
            return
        assert waiter is not None and not waiter.done()
        await asyncio.sleep(0.2)
        assert waiter.done() and waiter.result() is True

    asyncio.run(main())
