"""A real browser for tests that check what a person sees: headless Chromium (Debian's ``chromium`` package; `make
test` installs it where it can), run to let the page's JavaScript finish, its DOM read back as text."""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise AssertionError("this test drives a real browser: install Chromium (as root: apt-get install chromium; "
                             "`make test` does it when it can)")
    return exe


def page_text(url: str, wait_ms: int = 20000) -> str:
    """The visible text of ``url`` once its scripts have run for ``wait_ms`` of virtual time."""
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=3000,2000",
                          f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
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
