"""ssl_tasks.orchestration is usable without Prefect: importing and planning never load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import copy_project

REPO = Path(__file__).resolve().parents[2]


def test_orchestration_does_not_import_prefect(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "proj")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import ssl_tasks.orchestration\n"
        "from ssl_tasks.orchestration import dvc_runner, overrides, run, workspace\n"
        "root = Path(sys.argv[1])\n"
        "print(dvc_runner.stage_order(root)[-1], dvc_runner.stage_tags('pretrain@simclr', root))\n"
        "print(workspace.resolve_workspace(root, None, False), len(workspace.source_files(root)) > 0,\n"
        "      run.leaderboard(root).rows, overrides.anchor_paths({}, root))\n"
        "print('prefect' in sys.modules, sorted(m for m in sys.modules if m.startswith('prefect'))[:3])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True,
                         check=True, cwd=REPO)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "compare ['pretrain']" and lines[1] == "None True [] {}"
    assert lines[2] == "False []", out.stdout
