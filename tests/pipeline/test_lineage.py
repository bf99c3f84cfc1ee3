"""Exact lineage, as DVC sees it: each kind of input a stage reads (a param, a checkpoint a run starts from, stage
code, a dataset file) makes exactly the stages that read it stale, no more, no fewer.

Cheap by construction: no stage's work runs. A project copy gets a stand-in for every output, `dvc commit` records
them in dvc.lock as if the DAG had run, and only the real `lineage` stage runs (it is the one that turns files named
in params into dependencies). Each case then edits one input in its own copy of that project and asks DVC
(``Repo.status()``) which stages changed. Those are the stages `dvc repro` starts from; whether a stage further
down reruns depends on whether their outputs change, which tests/pipeline/test_dvc_pipeline.py checks with real
reruns.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import copy_project

from ssl_tasks.pipeline.lineage import check_starts, fingerprint, load_raw, start_records

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
START = "artifacts/runs/simclr/pretrain/seed-0/encoder.pt"  # another run's output a run starts from
RUNS = ("simclr", "from_simclr", "from_file")
EVALUATES = {f"evaluate@{r}" for r in RUNS}


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}  # the stage's `ssl-tasks`, from this venv
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"dvc {' '.join(args)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


def put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def stand_ins(root: Path) -> None:
    """A file for every output DVC expects (a placeholder inside every output folder), and the pretrain outputs
    the lineage stage reads: the start checkpoint, and the starts each run recorded when it trained."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        outs = [Path(out.def_path) for stage in repo.index.stages for out in stage.outs]
    for out in outs:
        if out.suffix in (".json", ".csv", ".md", ".png"):
            put(root / out, b"{}")
        elif out.parts[0] != "artifacts" or out.name != "lineage":
            put(root / out / "stand-in", str(out).encode())
    put(root / START, b"simclr weights")
    put(root / "checkpoints" / "external.pt", b"external weights")
    raw = load_raw(root / "params.yaml")
    for run in RUNS:
        meta = {"starts": start_records(run, raw["runs"][run], root)}
        put(root / "artifacts" / "runs" / run / "pretrain" / "seed-0" / "meta.json", json.dumps(meta).encode())


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose dvc.lock records every stage as done: one image dataset from a folder (`mine`), and runs
    starting from another run's encoder (`from_simclr`) and from a file no stage writes (`from_file`)."""
    root = copy_project(tmp_path_factory.mktemp("lineage") / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["datasets"]["mine"] = {"source": "image_folder", "path": "userdata/images"}
    base = raw["runs"]["simclr"]  # deep copies: a shared mapping would be written as a YAML alias
    raw["runs"] = {"simclr": base, "from_simclr": {**copy.deepcopy(base), "init_encoder": START},
                   "from_file": {**copy.deepcopy(base), "init_encoder": "checkpoints/external.pt"}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    put(root / "userdata" / "images" / "cat" / "1.png", b"a cat")
    stand_ins(root)
    dvc(root, "repro", "--single-item", "lineage")  # the real stage, as `dvc repro` runs it first
    dvc(root, "commit", "--force", "--quiet")
    assert stale(root) == set(), "a freshly committed project has nothing to rerun"
    return root


def stale(root: Path) -> set[str]:
    """The stages DVC would rerun, besides ``lineage``, which runs on every repro (``always_changed``)."""
    from dvc.repo import Repo

    with pytest.MonkeyPatch.context() as mp, Repo(str(root)) as repo:
        mp.chdir(root)  # DVC names stages relative to the working directory
        status = repo.status()
    assert "always changed" in status["lineage"], status["lineage"]  # its own output moves when it runs outside DVC
    return set(status) - {"lineage"}


def after(locked: Path, tmp_path: Path, edit: Callable[[Path], None]) -> set[str]:
    """The stale stages once ``edit`` is applied to a copy of the locked project and `lineage` has run."""
    from ssl_tasks.pipeline.cli import main

    root = tmp_path / "p"
    shutil.copytree(locked, root, symlinks=True)
    edit(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["lineage"]) == 0  # the lineage stage's command
    return stale(root)


def edit_params(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        change(raw)
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return edit


def append(rel: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        with (root / rel).open("ab") as f:
            f.write(b"\n# edited\n")
    return edit


def test_a_param_reruns_the_stages_that_read_it(locked: Path, tmp_path: Path) -> None:
    temperature = edit_params(lambda r: r["runs"]["from_file"]["objective_kwargs"].update(temperature=0.3))
    assert after(locked, tmp_path / "run", temperature) == {"pretrain@from_file", "evaluate@from_file", "compare"}
    k = edit_params(lambda r: r["evaluation"]["settings"].update(k=5))
    assert after(locked, tmp_path / "eval", k) == {*EVALUATES, "baselines@digits", "baselines@mine", "compare"}


def test_a_changed_start_checkpoint_reruns_the_runs_started_from_it(locked: Path, tmp_path: Path) -> None:
    assert after(locked, tmp_path / "file", lambda root: put(root / "checkpoints" / "external.pt", b"new")) == {
        "pretrain@from_file"}
    # simclr retrained: DVC records its new encoder (as `dvc repro` does), then lineage sees it on the next repro
    root = tmp_path / "run" / "p"
    shutil.copytree(locked, root, symlinks=True)
    put(root / START, b"simclr weights, retrained")
    dvc(root, "commit", "--force", "--quiet", "pretrain@simclr")
    assert stale(root) == {"evaluate@simclr"}  # before lineage runs: no DAG edge between two runs
    with pytest.raises(Exception, match=r"stale results refused: pretrain@from_simclr started from " + START):
        check_starts(load_raw(root / "params.yaml"), root)  # what evaluate and compare do meanwhile
    dvc(root, "repro", "--single-item", "lineage")
    assert stale(root) == {"evaluate@simclr", "pretrain@from_simclr"}


def test_stage_code_reruns_the_stages_that_execute_it(locked: Path, tmp_path: Path) -> None:
    cases = {
        "ssl_tasks/pipeline/evaluate.py": EVALUATES | {"baselines@digits", "baselines@mine"},  # save_subsets
        "ssl_tasks/evaluation/protocols.py": EVALUATES | {"baselines@digits", "baselines@mine", "compare"},
        "ssl_tasks/pipeline/leaderboard.py": {"compare"},
        "ssl_tasks/pipeline/compare.py": {"compare"},
        "ssl_tasks/pipeline/tokenizer.py": {"tokenizer@digits", "tokenizer@mine"},
        "ssl_tasks/pipeline/pretrain.py": {f"pretrain@{r}" for r in RUNS},
        "ssl_tasks/validation/gx_suite.py": {"validate@digits", "validate@mine"},
        # objectives: pretraining, and evaluation of runs that rebuild their objective (LM head, text tower)
        "ssl_tasks/objectives/simclr.py": {f"pretrain@{r}" for r in RUNS} | EVALUATES,
    }
    for rel, expected in cases.items():
        assert after(locked, tmp_path / Path(rel).stem, append(rel)) == expected, rel


def test_a_dataset_file_reruns_the_stages_that_read_it(locked: Path, tmp_path: Path) -> None:
    source = after(locked, tmp_path / "source", lambda root: put(root / "userdata/images/cat/2.png", b"a new cat"))
    assert source == {"ingest@mine"}
    shard = next(p for p in (locked / "data" / "digits").rglob("*") if p.is_file()).relative_to(locked)
    ingested = after(locked, tmp_path / "ingested", lambda root: put(root / shard, b"tampered"))
    # an edited output: its stage (which restores it) and every stage that reads it, none of `mine`'s
    assert ingested == {"ingest@digits", "validate@digits", "tokenizer@digits", "baselines@digits",
                        *(f"pretrain@{r}" for r in RUNS), *EVALUATES}
    tokens = after(locked, tmp_path / "tokens", append("artifacts/tokenizers/digits/stand-in"))
    assert tokens == {"tokenizer@digits", "baselines@digits", *(f"pretrain@{r}" for r in RUNS)}  # its readers


def test_a_tokenizer_checkpoint_reruns_that_datasets_tokenizer_only(locked: Path, tmp_path: Path) -> None:
    """``datasets.<ds>.tokenizer.checkpoint`` (HuBERT iteration 2's targets come from a pretrained encoder): a
    changed checkpoint makes that dataset's tokenizer stage stale, nothing else (its readers follow if the targets
    change)."""
    root = tmp_path / "p"
    shutil.copytree(locked, root, symlinks=True)
    put(root / "checkpoints" / "iter1" / "encoder.pt", b"iteration 1")
    put(root / "checkpoints" / "iter1" / "meta.json", b"{}")
    edit_params(lambda r: r["datasets"]["mine"].update(tokenizer={"checkpoint": "checkpoints/iter1"}))(root)
    dvc(root, "repro", "--single-item", "lineage")
    dvc(root, "commit", "--force", "--quiet")  # the project with that setting, as run
    assert stale(root) == set()
    put(root / "checkpoints" / "iter1" / "encoder.pt", b"iteration 1, retrained")
    dvc(root, "repro", "--single-item", "lineage")
    assert stale(root) == {"tokenizer@mine"}


def test_plugin_code_reruns_every_stage(locked: Path, tmp_path: Path) -> None:
    """A plug-in may register a source, a modality, an encoder or an objective: any stage may run its code."""
    def edit(root: Path) -> None:
        put(root / "my_plugin.py", b"# a user's objective\n")
        edit_params(lambda r: r.update(plugins=["my_plugin"]))(root)

    root = tmp_path / "p"
    shutil.copytree(locked, root, symlinks=True)
    edit(root)
    dvc(root, "repro", "--single-item", "lineage")
    dvc(root, "commit", "--force", "--quiet")  # the project with its plug-in, as run
    assert stale(root) == set()
    with (root / "my_plugin.py").open("a") as f:
        f.write("X = 1\n")
    dvc(root, "repro", "--single-item", "lineage")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            every = {s.addressing for s in repo.index.stages} - {"lineage"}
    assert stale(root) == every and len(every) == 15  # 4 stages x 2 datasets, 2 x 3 runs, compare


def test_the_stand_ins_are_what_dvc_recorded(locked: Path) -> None:
    """The cases above start from a lock that records the current files (guards the set-up itself)."""
    lock = yaml.safe_load((locked / "dvc.lock").read_text())["stages"]
    dep = {d["path"]: d for d in lock["pretrain@from_file"]["deps"]}["artifacts/lineage/run-from_file.json"]
    entry = json.loads((locked / "artifacts" / "lineage" / "run-from_file.json").read_text())
    assert entry["runs.from_file.init_encoder"]["sha256"] == fingerprint(locked / "checkpoints" / "external.pt")
    assert dep["md5"] and set(lock) >= {"lineage", "ingest@mine", "pretrain@from_simclr", "compare"}
