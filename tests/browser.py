"""A real browser for tests that check what a person sees: headless Chromium (Debian's ``chromium`` package; `make
test` installs it where it can), either run to let the page's JavaScript finish and its DOM read back as text
(:func:`page_text`), or driven like a person over the DevTools protocol: click, type, wait for what the page shows
(:func:`browser_page`)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise AssertionError("this test drives a real browser: install Chromium (as root: apt-get install chromium; "
                             "`make test` does it when it can)")
    return exe


def page_text(url: str, wait_ms: int = 20000) -> str:
    """The visible text of ``url`` once its scripts have run for ``wait_ms`` of virtual time. Each call has its own
    profile folder: two browsers on one profile (two test workers) would share its lock."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=3000,2000",
                              f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180)
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", out.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_ui(db: Path, bin_dir: Path) -> Iterator[str]:
    """``mlflow ui`` on loopback over the sqlite store ``db``; yields its base URL and stops it afterwards."""
    port = free_port()
    log = open(db.parent / f"ui-{port}.log", "w")
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port), "--workers",
                             "1", "--backend-store-uri", f"sqlite:///{db}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"mlflow ui exited: {(db.parent / f'ui-{port}.log').read_text()[-2000:]}")
                time.sleep(1)
        else:
            raise AssertionError("mlflow ui did not come up in 120 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Page:
    """One Chromium tab driven over the Chrome DevTools Protocol (CDP): navigate, run JavaScript, wait for what a
    person would see. ``websockets`` (a Prefect dependency) carries the protocol; no browser download is needed."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=None, open_timeout=30)
        self._id = 0

    def close(self) -> None:
        self._ws.close()

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """One CDP command; its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            msg = json.loads(self._ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise AssertionError(f"CDP {method} failed: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            detail = res["exceptionDetails"]
            raise AssertionError(f"JavaScript failed: {detail.get('exception', {}).get('description') or detail}\n"
                                 f"in: {expression[:500]}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait(self, what: str, expression: str, timeout: float = 60, every: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; on timeout fail naming ``what``, with the page's URL and text."""
        end = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} on {self.js('location.href')}"
                                     f"\n--- page text (excerpt)\n{self.text()[:3000]}")
            time.sleep(every)

    def wait_text(self, needle: str, timeout: float = 60) -> None:
        self.wait(f"the text {needle!r}", f"document.body && document.body.innerText.includes({json.dumps(needle)})",
                  timeout)

    def until(self, what: str, check: Callable[[str], Any], timeout: float = 60, every: float = 0.5) -> Any:
        """Poll ``check(page text)`` until it is truthy (a check in Python, e.g. every expected number shown)."""
        end = time.monotonic() + timeout
        while True:
            text = self.text()
            if value := check(text):
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} on {self.js('location.href')}"
                                     f"\n--- page text (excerpt)\n{text[:3000]}")
            time.sleep(every)

    def click(self, label: str, selector: str = "button, a, [role=menuitem]", timeout: float = 30) -> None:
        """Click the first visible element matching ``selector`` whose text is ``label`` (waiting for it)."""
        find = (f"[...document.querySelectorAll({json.dumps(selector)})].find(e => e.offsetParent !== null && "
                f"e.innerText.trim() === {json.dumps(label)})")
        self.wait(f"a clickable {label!r}", f"!!{find}", timeout)
        self.js(f"{find}.click()")

    def fill(self, element: str, text: str) -> None:
        """Type ``text`` into the input or textarea that the JavaScript expression ``element`` returns, replacing
        what it holds, as keyboard input does (the page's input events fire)."""
        ok = self.js(f"(() => {{ const e = {element}; if (!e) return false; e.focus(); e.select(); return true; }})()")
        assert ok, f"no field for {element}\n--- page text (excerpt)\n{self.text()[:3000]}"
        self.send("Input.insertText", text=text)


@contextmanager
def browser_page(tmp: Path, width: int = 1600, height: int = 1200) -> Iterator[Page]:
    """Headless Chromium with the DevTools protocol on a free loopback port (Chromium picks it and writes it to
    ``DevToolsActivePort``); yields its first tab as a :class:`Page` and stops the browser afterwards."""
    profile = tmp / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    active = profile / "DevToolsActivePort"
    active.unlink(missing_ok=True)  # a previous browser's port
    log = open(tmp / "chromium.log", "w")
    proc = subprocess.Popen([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
                             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    page = None
    try:
        for _ in range(240):
            if active.is_file() and active.read_text().strip():
                break
            if proc.poll() is not None:
                raise AssertionError(f"Chromium exited: {(tmp / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.25)
        else:
            raise AssertionError("Chromium did not open its DevTools port in 60 s")
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            tabs = [t for t in json.loads(r.read()) if t.get("type") == "page"]
        assert tabs, "Chromium opened no tab"
        page = Page(tabs[0]["webSocketDebuggerUrl"])
        yield page
    finally:
        if page is not None:
            page.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        try:  # its renderer and helper processes (its own session)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        log.close()
