"""bench/provenance.py: what every results file records (command, arguments, commit, CPU model read at run time)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_provenance", ROOT / "bench" / "provenance.py")
prov = importlib.util.module_from_spec(_spec)
sys.modules["bench_provenance"] = prov
_spec.loader.exec_module(prov)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    assert prov.cpu_model(f) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert prov.machine_line(f).startswith("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, ")


def test_cpu_model_falls_back_without_cpuinfo(tmp_path):
    assert prov.cpu_model(tmp_path / "missing") not in ("", None)


def test_provenance_records_command_args_commit_and_cpu(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    args = argparse.Namespace(epochs=3, out="bench/results/x.json")
    argv = ["bench/quality.py", "--epochs", "3", "--out", "bench/results/x.json", "--tag", "a b"]
    p = prov.provenance(args, argv=argv, cpuinfo=f)
    assert p["argv"] == argv
    assert p["command"] == "python bench/quality.py --epochs 3 --out bench/results/x.json --tag 'a b'"
    assert p["args"] == {"epochs": 3, "out": "bench/results/x.json"}
    assert p["cpu"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    if head.returncode == 0:  # a source tree without .git records None
        assert p["commit"] == head.stdout.strip() and isinstance(p["dirty"], bool)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", p["recorded_utc"])


def test_provenance_outside_git_records_none(tmp_path):
    p = prov.provenance({"a": 1}, argv=["x.py"], repo=tmp_path)
    assert (p["commit"], p["dirty"], p["args"]) == (None, None, {"a": 1})


def test_every_bench_script_that_writes_results_records_provenance():
    writers = [f for f in sorted((ROOT / "bench").glob("*.py")) if f.name != "provenance.py" and (
        ("json.dumps" in f.read_text() and "write_text" in f.read_text()) or "ResultsFile(" in f.read_text())]
    assert writers
    missing = [f.name for f in writers if "provenance(args)" not in f.read_text()]
    assert not missing, f"bench scripts writing results without provenance: {missing}"
    typed = [f.name for f in writers if "platform.processor()" in f.read_text()]
    assert not typed, f"machine from platform.processor() (only 'x86_64' on Linux), not the CPU model: {typed}"


def test_earlier_provenance_keeps_every_invocation_that_wrote_rows(tmp_path):
    out = tmp_path / "r.json"
    assert prov.earlier_provenance(out) == []
    first = prov.provenance({"skip_baselines": False}, argv=["q.py"])
    out.write_text(json.dumps({"provenance": first, "earlier_provenance": [], "rows": {}}))
    second = prov.provenance({"skip_baselines": True}, argv=["q.py", "--skip-baselines"])
    out.write_text(json.dumps({"provenance": second, "earlier_provenance": prov.earlier_provenance(out)}))
    assert [p["argv"] for p in prov.earlier_provenance(out)] == [["q.py"], ["q.py", "--skip-baselines"]]


def test_results_file_rewrites_the_whole_file_after_every_row(tmp_path, capsys):
    """The record loop of video_quality.py, speech_pretrain.py and graph_quality.py: each row is on disk (the
    whole document, indent=1) as soon as it is recorded, written through a .tmp that does not stay behind."""
    path = tmp_path / "sub" / "r.json"
    out = {"provenance": prov.provenance({"a": 1}, argv=["x.py"]), "runs": {}}
    results = prov.ResultsFile(path, out, "runs")
    results.record("raw", 0, {"top1": 0.5, "log": [1, 2]})
    assert json.loads(path.read_text())["runs"] == {"raw": [{"seed": 0, "top1": 0.5, "log": [1, 2]}]}
    assert capsys.readouterr().out == "raw seed 0: top1=0.5\n"
    rows = results.add("raw", 1, {"top1": 0.7})
    assert len(rows) == 2 and len(json.loads(path.read_text())["runs"]["raw"]) == 1  # added, not yet written
    results.write()
    assert path.read_text() == json.dumps(out, indent=1) + "\n" and not path.with_suffix(".tmp").exists()
