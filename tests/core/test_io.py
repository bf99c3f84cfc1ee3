"""The atomic writers leave files and folders with the modes a plain open() / mkdir() would give (the umask's)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssl_tasks.core.io import atomic_dir, atomic_file, write_json_atomic, write_text_atomic


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writers_use_the_umask_like_open(tmp_path: Path, umask: int) -> None:
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    (tmp_path / "plain_dir").mkdir()
    plain_file, plain_dir = mode(tmp_path / "plain.txt"), mode(tmp_path / "plain_dir")
    assert plain_file == 0o666 & ~umask and plain_dir == 0o777 & ~umask

    write_text_atomic(tmp_path / "report.md", "# board\n")
    write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    with atomic_file(tmp_path / "leaderboard.csv") as tmp:
        tmp.write_text("name,top1\n")
    with atomic_dir(tmp_path / "dataset") as tmp:
        write_json_atomic(tmp / "manifest.json", {"format": "x"})
    assert {name: mode(tmp_path / name) for name in ("report.md", "manifest.json", "leaderboard.csv")} == \
        dict.fromkeys(("report.md", "manifest.json", "leaderboard.csv"), plain_file)
    assert mode(tmp_path / "dataset") == plain_dir and mode(tmp_path / "dataset" / "manifest.json") == plain_file

    # replacing keeps to the rule too, and leaves no temporary files behind
    write_text_atomic(tmp_path / "report.md", "# again\n")
    with atomic_dir(tmp_path / "dataset") as tmp:
        (tmp / "a.txt").write_text("a")
    assert mode(tmp_path / "report.md") == plain_file and mode(tmp_path / "dataset") == plain_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "leaderboard.csv", "manifest.json",
                                                         "plain.txt", "plain_dir", "report.md"]


def test_failed_writes_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "half").write_text("half")
        raise RuntimeError
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "m.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []
