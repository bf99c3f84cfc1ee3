"""REST and process helpers for the tests that drive a real local Prefect server (tests/flows/)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, method: str, path: str, body: dict[str, Any] | None = None, attempts: int = 5) -> Any:
    """One REST call; a 503 (the server's SQLite busy under load on 2 cores) is retried a few times."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


def wait_for(what: str, fn: Any, timeout: float, every: float = 1.0, logs: tuple[Path, ...] = ()) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n" + tails(logs))


def tails(logs: tuple[Path, ...], n: int = 4000) -> str:
    return "\n".join(f"--- {p.name} (tail)\n{p.read_text(errors='replace')[-n:]}" for p in logs if p.is_file())


def stop_group(proc: subprocess.Popen | None, grace: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    try:  # children that outlived their leader (same group)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
