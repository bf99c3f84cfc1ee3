"""The package's shape: no import cycles between modules at import time, no modality branches in the stages,
no modality package importing another (except image_text, which composes image and text), and no modality code in
the generic ``data/`` and ``validation/`` packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ssl_tasks

PACKAGE = Path(ssl_tasks.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, name: str) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements only (lazy imports inside functions
    cannot form an import-time cycle)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m.startswith("ssl_tasks")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}  # itself and its packages
        deps = set()
        for m in _top_level_imports(path, name):
            # importing a.b.c also imports the packages a and a.b (those around the importer are already loading)
            parts = m.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(files)
        graph[name] = deps - own
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    graph = _graph()
    assert graph.get("ssl_tasks.pipeline.pretrain")  # the walk sees the stages and their imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_stages_never_branch_on_a_modality() -> None:
    pattern = re.compile(r"modality\s*==|==\s*[\"'](text|image|image_text)[\"']|in \([\"'](text|image)")
    hits = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
            for p in sorted((PACKAGE / "pipeline").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_modality_packages_import_only_what_they_compose() -> None:
    allowed = {"image": set(), "text": set(), "image_text": {"image", "text"}, "graph": set(), "speech": set(),
               "video": set()}
    for name, may in allowed.items():
        for path in (PACKAGE / "modalities" / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssl_tasks.modalities."):
                    other = node.module.split(".")[2]
                    assert other == name or other in may, f"{path.relative_to(PACKAGE)} imports {node.module}"


#: What only the image modality defines: its reader, writer, sources and validation tables/suite.
IMAGE_ONLY = {"ImageDataset", "SplitData", "SourceResult", "image_manifest", "write_image_format", "stream_epoch",
              "sklearn_digits", "cifar", "image_folder", "IMAGE_EXTENSIONS", "FASHION_MNIST_NAMES",
              "RestrictedUnpickler", "load_restricted_pickle", "build_tables", "image_split_table", "SAMPLE_COLUMNS",
              "image_suite", "image_table_checks"}


def test_generic_packages_hold_no_modality_code() -> None:
    """``data/`` and ``validation/`` are what every modality shares: they import no modality package (``data.ingest``
    only loads ``modalities.builtin``, the registration of all of them) and name nothing image-only."""
    for folder in ("data", "validation"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssl_tasks.modalities"):
                    assert node.module == "ssl_tasks.modalities" and [a.name for a in node.names] == ["builtin"], (
                        f"{path.relative_to(PACKAGE)} imports {node.module}")
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
            names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            assert not names & IMAGE_ONLY, f"{path.relative_to(PACKAGE)} names {sorted(names & IMAGE_ONLY)}"


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _typed_config_builds() -> list[tuple[str, int, str]]:
    """Every place in the package that makes a typed config from plain data: ``build(<something>.Config, ...)``,
    ``build(TrainConfig, ...)``, ``<something>.Config(...)``, ``TrainConfig(...)`` and ``objective_config(...)``."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name, first = _call_name(node), node.args[0] if node.args else None
            if name == "build" and first is not None:
                target = first.attr if isinstance(first, ast.Attribute) else getattr(first, "id", "")
                if target in ("Config", "TrainConfig"):
                    hits.append((rel, node.lineno, f"build({target})"))
            elif name in ("Config", "TrainConfig", "objective_config"):
                hits.append((rel, node.lineno, name))
    return hits


def test_configs_are_built_once_at_the_edge() -> None:
    """Params become typed once (``pipeline/params.py``) and stay typed down to the Ray boundary: an objective's
    ``Config`` and a ``TrainConfig`` are made from plain data only there and in ``training/config.py`` (the one
    builder, the Ray boundary's ``job_from_dict`` and ``objective_config_from`` for a finished run's meta.json)."""
    allowed = {"pipeline/params.py": {"objective_config", "build(TrainConfig)"},
               "training/config.py": {"build(Config)", "build(TrainConfig)", "objective_config"}}
    hits = _typed_config_builds()
    assert {(rel, what) for rel, _, what in hits} >= {("pipeline/params.py", "objective_config"),
                                                      ("training/config.py", "build(Config)")}  # the walk sees them
    stray = [f"{rel}:{line}: {what}" for rel, line, what in hits if what not in allowed.get(rel, set())]
    assert stray == [], "a typed config rebuilt from a dict outside the edge:\n" + "\n".join(stray)
