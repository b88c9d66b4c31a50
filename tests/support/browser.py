"""Debian's chromium, headless, driven over the DevTools protocol (CDP) with the `websockets` package: for the tests
of a page a person looks at (the /live captions page). A fake microphone plays a recording; basic-auth challenges
are answered as a person typing the password would; the page's state is read and a screenshot kept.

    async with Chromium(fake_audio=wav, resolve={"whisper.sandbox.test": "127.0.0.1"}) as browser:
        page = await browser.open("https://whisper.sandbox.test:8443/live", auth=("user", "password"))
        await page.evaluate("document.title")
        await page.screenshot(path)
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional


def chromium_binary() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws, auth):
        self.ws, self.auth = ws, auth
        self._ids = itertools.count(1)
        self._pending: dict = {}
        self.console: list = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif msg.get("method") == "Fetch.requestPaused":
                asyncio.ensure_future(self.send("Fetch.continueRequest", requestId=msg["params"]["requestId"]))
            elif msg.get("method") == "Fetch.authRequired":
                user, password = self.auth or ("", "")
                answer = {"response": "ProvideCredentials", "username": user, "password": password} if self.auth \
                    else {"response": "CancelAuth"}
                asyncio.ensure_future(self.send("Fetch.continueWithAuth", requestId=msg["params"]["requestId"],
                                                authChallengeResponse=answer))
            elif msg.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in msg["params"].get("args", [])))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, 60)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    async def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {expression}; console: "
                                     + " | ".join(self.console[-10:]))
            await asyncio.sleep(interval)

    async def screenshot(self, path: Path) -> Path:
        data = (await self.send("Page.captureScreenshot", format="png"))["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    def __init__(self, *, fake_audio: Optional[Path] = None, resolve: Optional[dict] = None,
                 window: tuple = (1280, 900)):
        self.fake_audio, self.resolve, self.window = fake_audio, resolve or {}, window
        self.proc = None
        self._profile = None
        self._sockets = []

    async def __aenter__(self) -> "Chromium":
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        args = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--no-sandbox",
                "--disable-dev-shm-usage", f"--window-size={self.window[0]},{self.window[1]}",
                # the sandbox's self-signed certificates; microphone allowed without asking, and faked
                "--ignore-certificate-errors", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required"]
        if self.fake_audio:
            args.append(f"--use-file-for-fake-audio-capture={self.fake_audio}%noloop")
        if self.resolve:
            args.append("--host-resolver-rules=" + ", ".join(f"MAP {h} {a}" for h, a in self.resolve.items()))
        self.proc = subprocess.Popen(args + ["about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "LANG": "fr_FR.UTF-8"})
        port_file = Path(self._profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            await asyncio.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    async def open(self, url: str, auth: Optional[tuple] = None) -> Page:
        from websockets.asyncio.client import connect
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
        target = next(t for t in targets if t["type"] == "page")
        ws = await connect(target["webSocketDebuggerUrl"], max_size=None, proxy=None)
        self._sockets.append(ws)
        page = Page(ws, auth)
        await page.send("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Page.navigate", url=url)
        return page

    async def __aexit__(self, *exc) -> None:
        for ws in self._sockets:
            await ws.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
