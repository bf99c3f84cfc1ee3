"""Atomic output helpers: a stage writes to a temporary sibling, then renames.

The temporary siblings are created as ``open()`` and ``mkdir()`` create theirs (mode 0666 / 0777 less the umask:
0644 / 0755 under the usual 022), not with ``tempfile``'s private 0600 / 0700, since they become the outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ssl_tasks.core.errors import UserError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, fixed indent) so equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale(parent: Path, prefix: str, suffix: str) -> list[Path]:
    """Remove the temporary siblings ``<prefix><pid>-<random><suffix>`` (and ``<prefix>old-<pid>``, a replaced
    output not yet deleted) left in ``parent`` by a process that no longer runs (a SIGKILLed stage); return them.

    Every atomic writer names its temporaries after its own pid, so a process never removes a live one's (another
    ingest to the same output, still running). A pid reused since keeps a stale folder until it exits, never the
    other way round.
    """
    removed = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if rest.endswith(suffix) and "-" in rest:
            pid = rest[: -len(suffix) or None].split("-", 1)[0]
        elif rest.startswith("old-"):
            pid = rest[len("old-"):]
        else:
            continue
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            _remove(parent / name)
            removed.append(parent / name)
    return removed


def _fresh_sibling(parent: Path, prefix: str, suffix: str, create: Callable[[Path], Any]) -> Any:
    """``create(path)`` for a new, unused name ``<prefix><pid>-<random><suffix>`` in ``parent`` (what it returned),
    after removing what dead processes left under such names (``sweep_stale``)."""
    sweep_stale(parent, prefix, suffix)
    for _ in range(100):
        candidate = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            return create(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name {prefix}*{suffix} in {parent}")


def _temp_file(parent: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new empty file (open fd, path) with the mode ``open()`` would give it (0666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    return _fresh_sibling(parent, prefix, suffix, lambda p: (os.open(p, flags, 0o666), p))


def _temp_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A new empty folder with the mode ``mkdir()`` would give it (0777 less the umask)."""
    return _fresh_sibling(parent, prefix, suffix, lambda p: (os.mkdir(p, 0o777), p)[1])


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, dumps_json(obj))


def check_replaceable(path: Path) -> None:
    """Refuse (``UserError``) to replace ``path`` wholesale when it is the working directory or holds it.

    Replacing such a folder would pull the process's own directory from under it (and with ``.``, leave the
    new content in a hidden temporary folder); every writer that swaps a folder in calls this first.
    """
    target, cwd = Path(path).resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"refusing to replace {path}: it is or contains the current directory; "
                        "choose an output folder of its own")


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only if the block succeeds.

    On any exception the temporary directory is removed and ``path`` is left as it was. ``path`` may not be
    the working directory or one holding it (``check_replaceable``); callers decide whether what is already
    there may be replaced (``ssl-tasks ingest`` replaces only an empty folder or a dataset of its own).
    """
    check_replaceable(path)
    path = Path(os.path.abspath(path))  # "." or "a/.." has no name to build sibling names from
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_dir(path.parent, f".{path.name}.", ".tmp")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def output_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` while a block writes it; a second holder is a ``UserError``.

    The lock is ``flock`` on a hidden sibling ``.<name>.lock`` (released by the kernel when its holder exits, even
    on SIGKILL, so a stale lock is impossible); the file itself stays, since removing a lock file races with the
    next holder. The error names ``what`` and the process that holds the lock.
    """
    import fcntl

    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise UserError(f"{what} is already being written by {holder} (lock {lock}); wait for it to finish, "
                            "or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary file path (same directory, same suffix) renamed onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path.parent, f".{path.stem}.", path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_manifest(root: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a dataset directory, or a UserError saying what is wrong."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{root} is not an ingested dataset (no manifest.json); run `ssl-tasks ingest` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest
