"""Every measured figure in README.md and bench/RESULTS.md is found in the results file the text names.

The rule (what is checked, exactly):

* Scope. The documents are split into sections at markdown headings. A **table row** is checked against the
  results files named in the row itself; a row that names none is checked against the files named in the text
  that introduces its table: everything between the section's heading (or the previous table of the section)
  and the table, code blocks included. A table with no named file is not checked (the README's leaderboard,
  for instance). A **paragraph** (a prose block or one bullet item) is checked only where it names a results file
  itself. A results file is named as ``bench/results/<name>.json``; ``*`` and ``{a,b}`` expand against the
  directory, and ``git show <commit>:bench/results/<name>.json`` reads that file at that commit.
* Figures. Inside a checked scope, with code spans (backticks) removed, a figure is a number with at least three
  significant digits: in a table row a decimal like ``0.9610`` or ``38.1`` or an integer of three or more digits
  like ``288`` or ``1,369``; in a paragraph decimals only (its integers are mostly set-up: split sizes, steps,
  dimensions, years). Not figures, because they are derived or are not measurements:
  - a number followed by ``×``, ``x`` or ``%`` (a ratio or a share computed from two figures),
  - a number right after ``±`` (a confidence half-width computed from per-seed values),
  - a signed number, ``+0.0418`` or ``-0.017`` (a difference of two figures),
  - a number followed by ``(derived)``,
  - the first cell of a table row (the row's name), dates (``2026-12-02``), times (``07:22``) and versions,
  - any number in a table row, or a sentence of a paragraph, that says ``no raw results file`` (the text says
    it cannot be checked).
* Match. A figure printed with ``d`` decimals matches a value ``v`` when ``|v - x| <= 0.5 * 10**-d``
  (``0.9610`` matches 0.96104; ``1,369`` matches 1368.9). The values of a scope are the numeric leaves of its
  files, plus seed-group means: for entries of one dict whose keys differ only by a ``-s<seed>`` suffix
  (``mlm_local``, ``mlm_local-s1``; the ``rows`` of all the scope's files merged, so a group may span files) or
  whose keys are all seed numbers, the mean of each shared metric over the first k members, every k >= 2 (what
  ``--render-seeds`` prints; a table that quotes 4 of 5 seeds quotes the first four). A table row whose first
  cell is one name, optionally followed by a parenthesis (``clip (3 seeds)``, ``random_init_local``), and names
  rows of the files (``clip``; ``random_init_local-s0`` .. ``-s4``; ``random_init@clipart``) is matched against
  those rows only; any other row against every value of its files.

The test also checks that every results file the two documents name exists.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "bench/RESULTS.md")
NO_RAW = "no raw results file"

REF = re.compile(r"(?:git show (?P<commit>[0-9a-f]{7,40}):)?(?P<path>bench/results/[\w*{},.\-]+?\.json)")
CODE_SPAN = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"(?<![\w.\-−+±/:])(?P<sign>[+\-−±] ?)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?![\w.:])")
DATE = re.compile(r"\d{4}-\d{2}(?:-\d{2})?")
TIME = re.compile(r"\d{1,2}:\d{2}")


@dataclass
class Scope:
    doc: str
    line: int  # 1-based line of the row / paragraph start
    kind: str  # "row" or "paragraph"
    text: str
    refs: list[tuple[str | None, str]] = field(default_factory=list)  # (commit, path pattern)
    name: str | None = None  # a table row's first word


def refs_in(text: str) -> list[tuple[str | None, str]]:
    return [(m["commit"], m["path"]) for m in REF.finditer(text)]


def _braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [p for alt in m[1].split(",") for p in _braces(pattern[: m.start()] + alt + pattern[m.end():])]


def resolve(ref: tuple[str | None, str], root: Path = ROOT) -> list[tuple[str | None, str]]:
    """The files a reference names: (commit, path) pairs; an empty list when none exists."""
    commit, pattern = ref
    out = []
    for p in _braces(pattern):
        if commit:
            out.append((commit, p))
        elif "*" in p:
            out += [(None, str(f.relative_to(root))) for f in sorted((root / Path(p).parent).glob(Path(p).name))
                    if fnmatch.fnmatch(str(f.relative_to(root)), p)]
        elif (root / p).is_file():
            out.append((None, p))
    return out


def scopes(doc: str, text: str) -> list[Scope]:
    """Table rows and file-naming paragraphs of one markdown document, each with the results files it answers to."""
    lines = text.splitlines()
    out: list[Scope] = []
    intro: list[str] = []  # text since the section's heading or the previous table
    para: list[str] = []
    para_start = 0
    in_code = False
    in_table = False
    table_refs: list[tuple[str | None, str]] = []

    def flush_para() -> None:
        nonlocal para
        if para:
            body = "\n".join(para)
            if refs_in(body):
                out.append(Scope(doc, para_start, "paragraph", body, refs_in(body)))
        para = []

    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush_para()
            in_code = not in_code
            intro.append(line)
            continue
        if in_code:
            intro.append(line)
            continue
        if stripped.startswith("#"):
            flush_para()
            intro, in_table = [line], False
            continue
        if stripped.startswith("|"):
            flush_para()
            if not in_table:
                in_table, table_refs = True, refs_in("\n".join(intro))
                header = True
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if header or set(stripped) <= set("|-: "):
                header = False
                continue
            own = refs_in(stripped)
            body = "" if NO_RAW in stripped else " | ".join(cells[1:])
            named = re.fullmatch(r"([\w@.\-]+)(?:\s*\(.*\))?", re.sub(r"[*`]", "", cells[0]))  # "clip (3 seeds)"
            name = named[1] if named else None
            out.append(Scope(doc, i, "row", body, own or table_refs, name))
            continue
        if in_table:
            in_table, intro = False, []
        intro.append(line)
        if not stripped or stripped.startswith(("- ", "<!--")):
            flush_para()
        if stripped and not stripped.startswith("<!--"):
            if not para:
                para_start = i
            para.append(line)
    flush_para()
    return out


def figures(text: str, integers: bool = True) -> list[tuple[str, float, int]]:
    """The checked figures of a scope's text: (as printed, value, decimals); integers only if ``integers``."""
    if NO_RAW in text:  # a row: all of it; a paragraph: the sentences that say so
        sentences = re.split(r"(?<=[^\d\s])\.\s+(?=[A-Z(*])", text)
        text = " ".join(s for s in sentences if NO_RAW not in s)
    text = CODE_SPAN.sub(" ", text).replace("**", "")
    text = DATE.sub(" ", text)
    text = TIME.sub(" ", text)
    text = re.sub(r"(?<=\d)-(?=\d)", " – ", text)  # a range 0.535-0.560: both ends are figures, neither signed
    text = re.sub(r"(\d)\s*–\s*([\d.,]+)\s*(×|%|x\b)", r"\1\3 – \2\3", text)  # 1.45–1.98×: both ends ratios
    text = re.sub(r"\d+(?:\.\d+)*\s*\(derived\)", " ", text)
    found = []
    for m in NUMBER.finditer(text):
        if m["sign"] or (not integers and not m["frac"]):
            continue
        after = text[m.end():m.end() + 2]
        if after[:1] in ("×", "%") or re.match(r"x\b", after) or re.match(r" [×%]", after):
            continue
        digits = (m["int"].replace(",", "") + (m["frac"] or "")[1:]).lstrip("0")
        if len(digits) < 3:
            continue
        decimals = len(m["frac"]) - 1 if m["frac"] else 0
        found.append((m[0], float(m["int"].replace(",", "") + (m["frac"] or "")), decimals))
    return found


def _leaves(obj) -> list[float]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _leaves(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _leaves(x)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


def _metric_leaves(obj, prefix="") -> dict[str, float]:
    if isinstance(obj, dict):
        return {k: v for key, x in obj.items() for k, v in _metric_leaves(x, f"{prefix}/{key}").items()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix: float(obj)}
    return {}


def _group_means(obj) -> list[float]:
    """Means over seed groups anywhere in a results tree: the entries of a dict whose keys differ only by a
    ``-s<seed>`` suffix (``mlm_local``, ``mlm_local-s1``, ...), or whose keys are all seed numbers (``"1"``,
    ``"2"``, ...). For each metric the group shares, the mean over the first k members for every k >= 2."""
    out: list[float] = []
    if isinstance(obj, dict):
        groups: dict[str, list] = {}
        for key, x in obj.items():
            group = "*" if key.isdigit() else re.sub(r"-s\d+$", "", key)
            groups.setdefault(group, []).append(x)
        for members in groups.values():
            flat = [_metric_leaves(m) for m in members if isinstance(m, dict)]
            for k in range(2, len(flat) + 1):
                for key in set.intersection(*(set(m) for m in flat[:k])):
                    out.append(mean(m[key] for m in flat[:k]))
        for x in obj.values():
            out += _group_means(x)
    return out


def _row_key(name: str) -> str:
    return re.sub(r"-s\d+$", "", name).split("@")[0]


def values_of(datas: list, row: str | None = None) -> list[float]:
    """The numeric leaves of results files, plus the seed-group means over their rows merged (a group may
    span files: seed 0 in one, seeds 1-4 in another). With ``row`` (a table row's first word) naming rows of
    the files (``clip``, ``mlm_local`` and its ``-s<seed>`` rows, ``random_init@clipart``), only those rows."""
    merged = {name: r for d in datas if isinstance(d, dict) and isinstance(d.get("rows"), dict)
              for name, r in d["rows"].items()}
    own = {name: r for name, r in merged.items() if row and _row_key(name) == row}
    if own:
        return _leaves(own) + _group_means(own)
    vals = [v for d in datas for v in _leaves(d)]
    vals += _group_means(merged)
    vals += [v for d in datas for v in _group_means({k: x for k, x in d.items() if k != "rows"})
             if isinstance(d, dict)]
    return vals


_cache: dict = {}


def load(ref: tuple[str | None, str], root: Path = ROOT):
    if (root, ref) not in _cache:
        commit, path = ref
        if commit:
            text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True,
                                  check=True).stdout
        else:
            text = (root / path).read_text()
        _cache[(root, ref)] = json.loads(text)
    return _cache[(root, ref)]


def matches(value: float, decimals: int, vals: list[float]) -> bool:
    tol = 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(value))
    return any(abs(v - value) <= tol for v in vals)


def check(doc: str, text: str, root: Path = ROOT) -> tuple[list[str], list[str], int]:
    """(missing files, figures not found, number of figures checked) for one document."""
    missing, wrong, checked = [], [], 0
    for ref in refs_in(text):
        if not resolve(ref, root):
            missing.append(f"{doc}: {ref[1]} names no file")
    for sc in scopes(doc, text):
        files = [f for ref in sc.refs for f in resolve(ref, root)]
        if not files:
            continue
        vals = values_of([load(f, root) for f in files], sc.name)
        for printed, value, decimals in figures(sc.text, integers=sc.kind == "row"):
            checked += 1
            if not matches(value, decimals, vals):
                names = ", ".join(sorted({p for _, p in files}))
                wrong.append(f"{doc}:{sc.line} ({sc.kind}): {printed} not in {names}")
    return missing, wrong, checked


@pytest.mark.parametrize("doc", DOCS)
def test_every_quoted_figure_is_in_the_results_file_the_text_names(doc):
    missing, wrong, checked = check(doc, (ROOT / doc).read_text())
    assert not missing, "\n".join(missing)
    assert not wrong, f"{len(wrong)} of {checked} figures not found:\n" + "\n".join(wrong)
    assert checked > 0


# The checker itself, on a small synthetic document.

SYNTHETIC = """# Title

## (1) A section — raw rows: `bench/results/a.json`

| row | knn | linear | ratio |
|---|---|---|---|
| simclr | 0.9610 | 0.585 ± 0.013 | 1.30× |
| random | 0.9554 | 1,369 | +0.0056 |

| other table, no file named above it since the last table | x |
|---|---|
| y | 0.1234 |

- A bullet that names `bench/results/b.json`: 38.1 s of epochs, 2.5% share, 3.2x chance, 1.45–1.98× faster.
  Its other timing, 7.777 s, has no raw results file. Ranges such as 38.0-38.2 s check both ends.
- A bullet that names nothing: 0.4444.

## (2) Seeds — `bench/results/c.json`

| row | linear (mean) |
|---|---|
| span | 0.6000 |
"""


def _synthetic(tmp_path: Path, doc: str = SYNTHETIC) -> tuple[list[str], list[str], int]:
    res = tmp_path / "bench" / "results"
    res.mkdir(parents=True)
    (res / "a.json").write_text(json.dumps({"rows": {"simclr": {"knn": 0.96104, "linear": 0.5851},
                                                     "random": {"knn": 0.95536, "thr": 1368.9}}}))
    (res / "b.json").write_text(json.dumps({"fit": {"epochs_s": 38.12, "min_s": 38.04, "max_s": 38.2}}))
    (res / "c.json").write_text(json.dumps({"rows": {"span": {"m": {"linear": 0.59}},
                                                     "span-s1": {"m": {"linear": 0.61}}}}))
    return check("synthetic.md", doc, tmp_path)


def test_checker_passes_a_document_whose_figures_are_in_its_files(tmp_path):
    missing, wrong, checked = _synthetic(tmp_path)
    assert (missing, wrong) == ([], [])
    # 0.9610, 0.585, 0.9554, 1,369 (row table 1), 38.1, 38.0, 38.2 (bullet), 0.6000 (a seed-group mean); not
    # 0.1234 (its table names no file), 0.4444 (its bullet names none), 0.013 (±), 1.30× / 2.5% / 3.2x /
    # 1.45–1.98×, +0.0056 (derived), 7.777 (its sentence says it has no raw results file).
    assert checked == 8


@pytest.mark.parametrize("old, new", [("0.9610", "0.9620"), ("1,369", "1,371"), ("38.1 s", "38.3 s"), ("38.0-", "37.9-"),
                                      ("| 0.6000 |", "| 0.6200 |"), ("0.585 ±", "0.586 ±")])
def test_checker_fails_when_a_figure_is_altered(tmp_path, old, new):
    assert SYNTHETIC.count(old) == 1
    missing, wrong, _ = _synthetic(tmp_path, SYNTHETIC.replace(old, new))
    assert not missing
    assert len(wrong) == 1 and new.strip("| -").split()[0] in wrong[0]


def test_checker_reports_a_named_file_that_does_not_exist(tmp_path):
    missing, _, _ = _synthetic(tmp_path, SYNTHETIC.replace("bench/results/b.json", "bench/results/gone.json"))
    assert missing == ["synthetic.md: bench/results/gone.json names no file"]


def test_a_scope_marked_without_raw_file_is_not_checked(tmp_path):
    doc = SYNTHETIC.replace("| random | 0.9554 |", "| random (no raw results file kept) | 0.9999 |")
    _, wrong, checked = _synthetic(tmp_path, doc)
    assert wrong == [] and checked == 6


def test_glob_and_brace_references_expand(tmp_path):
    _synthetic(tmp_path)
    assert [p for _, p in resolve((None, "bench/results/{a,c}.json"), tmp_path)] == ["bench/results/a.json",
                                                                                     "bench/results/c.json"]
    assert len(resolve((None, "bench/results/*.json"), tmp_path)) == 3
