"""``ssl-tasks``: the one command-line entry (dvc.yaml stages and users call it).

User errors exit with status 2 and one ``error: ...`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ssl_tasks.core.errors import UserError

QUIET_ENV = {"PYTHONWARNINGS": "ignore::DeprecationWarning", "TQDM_MININTERVAL": "5"}


def _params(args: argparse.Namespace):  # noqa: ANN202
    from ssl_tasks.pipeline.params import load_params

    return load_params(Path(args.params))


def _layout(args: argparse.Namespace):  # noqa: ANN202
    from ssl_tasks.pipeline.layout import Layout

    return Layout(Path(args.root).resolve())


def cmd_list(args: argparse.Namespace) -> None:
    from ssl_tasks.core.encoders import ENCODERS
    from ssl_tasks.data.ingest import SOURCES  # every built-in source registered
    from ssl_tasks.evaluation.protocols import PROTOCOLS
    from ssl_tasks.objectives import OBJECTIVES

    print("objectives: " + ", ".join(f"{n} ({'/'.join(sorted(OBJECTIVES.get(n).modalities))})" for n in OBJECTIVES))
    print("encoders:   " + ", ".join(f"{n} ({getattr(ENCODERS.get(n), 'modality', 'image')})" for n in ENCODERS))
    from ssl_tasks.core.modality import MODALITIES, get_modality

    get_modality("image")  # fills the registry
    for name in MODALITIES:
        m = get_modality(name)
        objectives = [n for n in OBJECTIVES if set(m.trains) & OBJECTIVES.get(n).modalities]
        sources = [n for n in SOURCES if getattr(SOURCES.get(n), "modality", "image") == name]
        print(f"modality {name}: {m.describe()}\n  sources: {', '.join(sources)}\n  objectives: {', '.join(objectives)}"
              f"\n  protocols: {', '.join(p for p in PROTOCOLS.names() if PROTOCOLS.get(p).kind in m.protocol_kinds)}")
    print("protocols:  " + ", ".join(PROTOCOLS.names()))
    print("sources:    " + ", ".join(SOURCES.names()))


def parse_options(items: list[str]) -> dict[str, object]:
    """``--option KEY=VALUE`` pairs as a dict; values are YAML (``unit=paragraph``, ``label_column=``)."""
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. --option unit=paragraph")
        if key in options:
            raise UserError(f"--option {key} is given twice")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UserError(f"--option {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
    return options


def cmd_ingest(args: argparse.Namespace) -> None:
    options = parse_options(args.option)
    if args.dataset:
        if options:
            raise UserError("--option applies to --source ingests; with --dataset the source comes from params.yaml")
        from ssl_tasks.pipeline.ingest import ingest

        ingest(_params(args), args.dataset, _layout(args))
        return
    if not args.source or not args.out:
        raise UserError("ingest needs --dataset NAME (from params.yaml), or --source and --out")
    from ssl_tasks.data.ingest import ingest as ingest_source

    m = ingest_source(args.source, args.path, Path(args.out), test_fraction=args.test_fraction,
                      split_seed=args.split_seed, shard_size=args.shard_size, options=options)
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v['count']}" for k, v in m["splits"].items()))


def cmd_validate(args: argparse.Namespace) -> None:
    if args.dataset:
        from ssl_tasks.pipeline.ingest import validate

        validate(_params(args), args.dataset, _layout(args))
        return
    if not args.data or not args.report:
        raise UserError("validate needs --dataset NAME (from params.yaml), or --data and --report")
    from ssl_tasks.validation import validate_dataset

    report = validate_dataset(Path(args.data), Path(args.report), Path(args.docs) if args.docs else None)
    warned = report.get("warnings", [])
    print(f"validation passed: {report['n_expectations'] - len(warned)} expectations"
          + (f", {len(warned)} warning{'s' * (len(warned) > 1)}" if warned else "") + f"; report {args.report}")
    for w in warned:
        print(f"warning: {w}")


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.tokenizer import tokenizer

    tokenizer(_params(args), args.dataset, _layout(args))


def cmd_pretrain(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.pretrain import pretrain

    pretrain(_params(args), args.run, _layout(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.evaluate import evaluate

    evaluate(_params(args), args.run, _layout(args))


def cmd_baselines(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.baselines import baselines

    baselines(_params(args), args.dataset, _layout(args))


def cmd_compare(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.compare import compare

    compare(_params(args), _layout(args))


def cmd_lineage(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.lineage import load_raw, write_lineage  # plain YAML and hashes: no torch, every repro

    written = write_lineage(load_raw(Path(args.params)), _layout(args).root)
    print(f"lineage: {len(written)} files in artifacts/lineage")


def cmd_ui_link(args: argparse.Namespace) -> None:
    from ssl_tasks.pipeline.compare import comparison_link, experiment_link

    link = experiment_link if args.experiment else comparison_link
    print(link(_params(args), _layout(args), args.base))


def cmd_repro(args: argparse.Namespace) -> int:
    from ssl_tasks.orchestration.dvc_runner import repro_or_restore

    return repro_or_restore(args.dvc_args, Path(args.root))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssl-tasks", description="Self-supervised pretraining and evaluation pipeline.")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--root", default=".", help="project or workspace root (default: .)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered objectives, encoders, modalities, protocols, sources").set_defaults(
        fn=cmd_list)
    s = sub.add_parser("ingest", help="ingest a source into a versioned shard dataset")
    s.add_argument("--dataset", help="dataset name from params.yaml")
    s.add_argument("--source", help="source name (see `ssl-tasks list`)")
    s.add_argument("--path", help="input file or folder")
    s.add_argument("--out", help="output dataset directory")
    s.add_argument("--test-fraction", type=float, default=0.2)
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--shard-size", type=int, default=8192)
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="source option, repeatable (image_folder, text and image-text sources), e.g. "
                        "--option image_size=32")
    s.set_defaults(fn=cmd_ingest)
    s = sub.add_parser("validate", help="Great Expectations checks of an ingested dataset")
    s.add_argument("--dataset")
    s.add_argument("--data")
    s.add_argument("--report")
    s.add_argument("--docs")
    s.set_defaults(fn=cmd_validate)
    for name, fn, help_ in (("pretrain", cmd_pretrain, "pretrain one run on Ray Train"),
                            ("evaluate", cmd_evaluate, "k-NN, linear and semi-supervised evaluation of a run")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--run", required=True, help="run name from params.yaml")
        s.set_defaults(fn=fn)
    s = sub.add_parser("tokenizer", help="fit a dataset's visual tokenizer (k-means over patches; BEiT's targets)")
    s.add_argument("--dataset", required=True)
    s.set_defaults(fn=cmd_tokenizer)
    s = sub.add_parser("baselines", help="a dataset's baselines: datasets.<name>.baselines, else baselines.include "
                                         "(raw pixels; the supervised ceiling is opt-in)")
    s.add_argument("--dataset", required=True)
    s.set_defaults(fn=cmd_baselines)
    sub.add_parser("compare", help="leaderboard + MLflow parent run").set_defaults(fn=cmd_compare)
    sub.add_parser("lineage", help="hash the files params name (dataset paths, start checkpoints) for DVC").set_defaults(
        fn=cmd_lineage)
    s = sub.add_parser("repro", help="dvc repro [ARGS]; when it fails, dvc checkout puts back the last good outputs "
                                     "(DVC deleted the failed stage's before running it) and the exit stays non-zero")
    s.add_argument("dvc_args", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to dvc repro")
    s.set_defaults(fn=cmd_repro)
    s = sub.add_parser("ui-link", help="the MLflow UI link comparing the latest pipeline's runs")
    s.add_argument("--base", default="http://127.0.0.1:5000", help="where the MLflow UI is served")
    s.add_argument("--experiment", action="store_true", help="the experiment's runs table instead")
    s.set_defaults(fn=cmd_ui_link)
    return p


def main(argv: list[str] | None = None) -> int:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "repro":  # dvc repro's own options, wherever argparse put them (they keep their order)
        args.dvc_args = [*extra, *args.dvc_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code or 0  # a command's own exit status (repro: DVC's), else 0


def entry() -> None:
    """The ``ssl-tasks`` console script: ``main``, then an exit that skips the interpreter's module teardown.

    Once a command has finished, tearing down torch, MLflow and Great Expectations costs 0.6-1.4 s each on this
    CPU (about 2 s per pipeline stage, ~20 s of the default pipeline; bench/RESULTS.md section 4) and does no
    work anyone needs: the exit handlers still run (Ray's shutdown of its local cluster, logging's flush,
    ``weakref.finalize`` clean-ups), then the standard streams are flushed and the process ends. Every output a
    stage writes is complete and renamed into place before ``main`` returns. An uncaught exception takes the
    ordinary exit, traceback and all.
    """
    import atexit

    code = main()
    atexit._run_exitfuncs()  # what the interpreter would run first on its way out
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
