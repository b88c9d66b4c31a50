"""Live transcription on the sandbox, through nginx and the autostart proxy: the openai SDK's realtime client with an
API key, basic auth, a browser's client secret in the subprotocol, a session longer than the proxy's idle timeout,
and the /live captions page in Debian's headless chromium with a fake microphone speaking French."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import time

import numpy as np
import pytest
from support.transcript_wer import wer

from support.realtime_support import RATE, connect, espeak_recording, run_session, sdk_client, stream, transcription_session
from sandbox.client import HTTPS_PORT, base_url, certificate, http_client

from .conftest import ARTEFACTS, ssh

pytestmark = pytest.mark.sandbox
VHOST = "whisper.sandbox.test"
SENTENCES = ("Today we are testing live transcription through the proxy.", "The meeting starts at ten.")


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    return espeak_recording(tmp_path_factory.mktemp("rt-e2e"), SENTENCES)


def ws_options() -> dict:
    """websockets' connection options: TLS to the sandbox's nginx on 127.0.0.1, the vhost's name for SNI and Host,
    and time for a stopped service to start (the handshake waits for it: the first connection wakes it)."""
    return {"ssl": ssl.create_default_context(cafile=str(certificate(VHOST))), "host": "127.0.0.1",
            "port": HTTPS_PORT, "proxy": None, "open_timeout": 300}


def raw(headers=None, subprotocols=None):
    from websockets.asyncio.client import connect as ws_connect
    return ws_connect(f"wss://{VHOST}:{HTTPS_PORT}/v1/realtime?intent=transcription", additional_headers=headers or {},
                      subprotocols=subprotocols, max_size=None, **ws_options())


async def first(ws, kind: str, timeout: float = 60) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            if ev["type"] in (kind, "error"):
                return ev


def test_sdk_session_through_nginx_and_the_proxy(deployed, english):
    async def main():
        client = sdk_client(base_url(VHOST) + "/v1", deployed["secrets"]["WHISPER_API_KEY"])
        async with connect(client, websocket_connection_options=ws_options()) as conn:
            await conn.session.update(session=transcription_session(language="en"))
            return await run_session(conn, english.pcm, pace=1.0, timeout=300)

    r = asyncio.run(main())
    assert [e["type"] for _, e in r.events[:2]] == ["session.created", "session.updated"]
    assert len(r.completed) == len(SENTENCES)
    assert [e["item_id"] for e in r.of_type("conversation.item.input_audio_transcription.completed")] == r.order
    assert wer(english.text, r.text) <= 0.25, r.text


def test_basic_auth_and_a_browser_client_secret(deployed):
    s = deployed["secrets"]
    basic = "Basic " + base64.b64encode(f"{s['WHISPER_BASIC_AUTH_USER']}:{s['WHISPER_BASIC_AUTH_PASSWORD']}".encode()).decode()

    async def main():
        out = {}
        async with raw({"Authorization": basic}) as ws:           # basic auth: nginx hands the service its key
            out["basic"] = (await first(ws, "session.created"))["type"]
        # a page's way: a client secret minted through basic auth, then presented as the subprotocol
        with http_client(VHOST) as http:
            minted = http.post(base_url(VHOST) + "/v1/realtime/client_secrets", headers={"Authorization": basic},
                               json={"session": transcription_session(language="fr", model="base")})
        out["minted"] = minted.status_code
        protocols = ["realtime", "openai-insecure-api-key." + minted.json()["value"]]
        async with raw(subprotocols=protocols) as ws:
            out["secret"] = (await first(ws, "session.created"))["session"]["audio"]["input"]["transcription"]
            out["protocol"] = ws.subprotocol
        from websockets.exceptions import InvalidStatus
        try:
            async with raw() as ws:
                out["none"] = "opened"
        except InvalidStatus as e:
            out["none"] = e.response.status_code
        return out

    out = asyncio.run(main())
    assert out["basic"] == "session.created" and out["minted"] == 200
    assert (out["secret"]["model"], out["secret"]["language"]) == ("base", "fr") and out["protocol"] == "realtime"
    assert out["none"] == 401


def _proxy_state() -> dict:
    health = ssh("python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8890/health')"
                 ".read().decode())\"").stdout
    return json.loads(health)["services"][VHOST]


def _running(container: str = "faster-whisper") -> bool:
    return ssh(f"docker inspect -f '{{{{.State.Running}}}}' {container}", check=False).stdout.strip() == "true"


IDLE = 5


@pytest.fixture
def short_idle_timeout(deployed):
    """The proxy's idleTimeout of the faster service set to IDLE seconds in config.json (it reloads on change); the
    file's exact bytes are put back afterwards."""
    path = "/opt/docker-autostart/config.json"
    original = ssh(f"base64 -w0 {path}").stdout.strip()
    ssh(f"python3 - <<'EOF'\nimport json\np = {path!r}\nc = json.load(open(p))\n"
        f"c['services'][{VHOST!r}]['idleTimeout'] = {IDLE}\nopen(p, 'w').write(json.dumps(c, indent=2))\nEOF")
    time.sleep(3)   # the proxy polls the file every 2 s
    try:
        yield
    finally:
        ssh(f"echo {original} | base64 -d > {path}.tmp && mv {path}.tmp {path}")


def test_a_session_longer_than_the_idle_timeout_is_not_cut(deployed, english, short_idle_timeout):
    """Quiet for three idle timeouts, then speech: the service is not stopped under the session,
    which still transcribes; once it ends, the idle stop comes."""
    quiet = np.zeros(3 * IDLE * RATE, "<i2")

    async def main():
        client = sdk_client(base_url(VHOST) + "/v1", deployed["secrets"]["WHISPER_API_KEY"])
        async with connect(client, websocket_connection_options=ws_options()) as conn:
            await conn.session.update(session=transcription_session(language="en"))
            await stream(conn, quiet, pace=1.0)
            during = (_running(), _proxy_state())
            r = await run_session(conn, english.pcm, pace=4.0, timeout=300)
            return during, r

    (running, state), r = asyncio.run(main())
    assert running and state["in_flight"] >= 1 and state["websockets"] == 1, state
    assert len(r.completed) == len(SENTENCES) and wer(english.text, r.text) <= 0.25, r.text
    deadline = time.monotonic() + IDLE + 30
    while _running() and time.monotonic() < deadline:
        time.sleep(1)
    assert not _running(), "no idle stop after the session ended"


def test_live_captions_page_in_french(deployed, tmp_path):
    """/live behind basic auth, French by default: Debian's chromium plays a French recording as its microphone; the
    captions the page shows match the recording (the service may be stopped: the page's first request wakes it)."""
    from support.browser import Chromium, chromium_binary
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (make test-e2e installs Debian's chromium)")
    neural_speech = pytest.importorskip("support.neural_speech")
    text = neural_speech.FRENCH["meeting"]
    voice = neural_speech.or_skip(neural_speech.speak, text, "jf_nezumi")
    mic = tmp_path / "microphone.wav"       # 48 kHz as a capture device gives it, a second of silence around it
    subprocess.run(["sox", str(voice), "-r", "48000", "-b", "16", "-c", "1", str(mic), "pad", "1", "3"], check=True)
    s = deployed["secrets"]

    async def main():
        async with Chromium(fake_audio=mic, resolve={VHOST: "127.0.0.1"}) as browser:
            page = await browser.open(f"{base_url(VHOST)}/live?model=base&autostart=1",
                                      auth=(s["WHISPER_BASIC_AUTH_USER"], s["WHISPER_BASIC_AUTH_PASSWORD"]))
            await page.wait_for("window.liveCaptions && window.liveCaptions.status === 'listening'", 300)
            language = await page.evaluate("document.getElementById('language').value")
            # every turn the recording holds is final once its last words are on the page
            await page.wait_for("(() => { const s = window.liveCaptions; return s.items.length > 2 && "
                                "s.items.every(i => i.final) && /soir/i.test(s.items.map(i => i.text).join(' ')); })()",
                                120)
            captions = await page.evaluate("document.getElementById('captions').innerText")
            errors = await page.evaluate("window.liveCaptions.errors")
            shot = await page.screenshot(ARTEFACTS / "live-captions-fr.png")
            return language, captions, errors, shot

    language, captions, errors, shot = asyncio.run(main())
    print(captions, f"\nscreenshot: {shot}")
    assert language == "fr" and not errors
    assert wer(text, captions, "fr") <= 0.2, captions
