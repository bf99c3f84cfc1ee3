"""Language benchmark: each text objective vs a random-init encoder, bag of words and a supervised ceiling on the
SST-2 linear probe (train phrases -> dev sentences), perplexity vs a unigram model, tokens/s per objective.

The pipeline's own pieces in one process (ingest, the tokenizer, the training loop, the protocols), so the
figures measure the methods, not orchestration. Usage:

    python bench/text_quality.py --out bench/results/text_sst2.json
    python bench/text_quality.py --render bench/results/text_sst2.json

Rows are written after each one, so an interrupted run keeps what finished; ``--objectives`` reruns those.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from provenance import cpu_model, earlier_provenance, provenance  # bench/ is on sys.path when run as a script

from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation.language import causal_perplexity, pseudo_perplexity, unigram_perplexity
from ssl_tasks.evaluation.protocols import EvalConfig, evaluate_encoder
from ssl_tasks.modalities.text.encoders import build_text_encoder
from ssl_tasks.modalities.text.shards import TextDataset
from ssl_tasks.modalities.text.stages import labelled_rows, token_rows
from ssl_tasks.modalities.text.tokenizer import TextTokenizer, train_text_tokenizer
from ssl_tasks.training.config import TrainConfig, TrainJob, objective_config
from ssl_tasks.training.loop import LocalSession, run_training
from ssl_tasks.training.supervised import train_supervised

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ENCODER = {"max_len": 64, "width": 128, "depth": 2, "heads": 4}
OBJECTIVES = {"mlm": "text_transformer", "causal_lm": "causal_transformer",
              "span_corruption": "seq2seq_transformer", "simcse": "text_transformer"}
# (epochs, batch, lr) per objective at about the same CPU time (~5 min each here): the packed objectives see the
# 14,850 rows of 64 tokens 3 times in batches of 32 (~1,400 steps; batch 128 gave 232 steps, too few: MLM ended at
# 3% masked-token accuracy), SimCSE the 67,349 padded phrases 3 times in batches of 64 (its paper's batch).
RECIPES = {"mlm": (3, 32, 2e-3), "causal_lm": (3, 32, 2e-3), "span_corruption": (3, 32, 2e-3),
           "simcse": (3, 64, 1e-3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    ap.add_argument("--epochs", type=int, default=0, help="0: each objective's recipe (RECIPES); else all alike")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--linear-epochs", type=int, default=100)
    ap.add_argument("--supervised-epochs", type=int, default=1)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="objectives with a checkpoint in --work are evaluated, "
                    "not retrained (their training record is kept from the results file)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work", default=None, help="work dir to reuse (ingested data, tokenizer)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pretraining runs (rows get a -s<seed> suffix "
                    "when it is not 0)")
    ap.add_argument("--random-seeds", nargs="+", type=int, default=[],
                    help="only evaluate random-init encoders of these seeds (rows random_init<tag>-s<seed>)")
    ap.add_argument("--encoder-kwargs", default="{}", help="JSON merged into the encoder's kwargs for --objectives and --random-seeds")
    ap.add_argument("--objective-kwargs", default="{}", help="JSON passed as the objectives' kwargs (their Config)")
    ap.add_argument("--tag", default="", help="suffix of the objectives' row names (a variant)")
    ap.add_argument("--init-from", default="", metavar="ROW", help="start the objectives' encoder from this earlier "
                    "row's trained encoder (its checkpoint in --work), as the pipeline's init_encoder does")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "text_sst2.json"))
    ap.add_argument("--render", metavar="JSON")
    ap.add_argument("--render-seeds", nargs="+", metavar="JSON", help="one table over result files whose rows "
                    "repeat an objective with other seeds (name-s<seed>): mean ± 95%% CI per objective")
    ap.add_argument("--throughput", metavar="JSON", help="only measure steady-state training tokens/s per objective "
                    "(needs --work with the data and tokenizer) and write them to this file")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    if args.render_seeds:
        print(render_seeds([json.loads(Path(f).read_text()) for f in args.render_seeds]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.throughput:
        throughput(Path(args.work), args, Path(args.throughput))
        return
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-text-"))
    data = work / "sst2"
    if not (data / "manifest.json").is_file():
        ingest("text_table", SHARED / "sst2", data, options={"text_column": "sentence", "label_column": "label",
                                                            "test_file": "dev.tsv"})
    ds = TextDataset(data)
    tok_file = work / "tokenizer.json"
    if not tok_file.is_file():
        print("tokenizer:", train_text_tokenizer(ds.iter_texts("train"), tok_file, vocab_size=args.vocab_size),
              flush=True)
    tok = TextTokenizer.load(tok_file)
    train, test = labelled_rows(ds, tok, ENCODER["max_len"])
    lm_train, lm_test = (token_rows(ds, tok, s, "pack", ENCODER["max_len"]) for s in ("train", "test"))
    ecfg = EvalConfig(linear_epochs=args.linear_epochs)
    results: dict[str, dict] = json.loads(out.read_text()).get("rows", {}) if out.is_file() else {}
    meta = {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
            "data": "sst2 (train phrases -> dev sentences)", "counts": {k: ds.count(k) for k in ("train", "test")},
            "tokenizer": {"vocab_size": tok.vocab_size}, "encoder": ENCODER, "args": vars(args),
            "provenance": provenance(args), "earlier_provenance": earlier_provenance(out)}

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**meta, "rows": results}, indent=2) + "\n")

    def evaluate(encoder: torch.nn.Module | None, label: str) -> dict[str, float]:
        t0 = time.perf_counter()
        m, _ = evaluate_encoder(encoder, train, test, num_classes=2, mean=(), std=(), protocols=["knn", "linear"],
                                cfg=ecfg, finetune_views=None, progress=lambda s: print(f"  [{label}] {s}", flush=True))
        print(f"{label}: {m} (eval {time.perf_counter() - t0:.0f} s)", flush=True)
        return m

    enc_kwargs = {**ENCODER, **json.loads(args.encoder_kwargs)}
    obj_kwargs = json.loads(args.objective_kwargs)
    if args.random_seeds:  # how much random init alone moves with its seed: the noise floor of the comparison
        for seed in args.random_seeds:
            torch.manual_seed(seed)
            enc = build_text_encoder("text_transformer", tok.vocab_size, tok.pad_id, **enc_kwargs)
            results[f"random_init{args.tag}-s{seed}"] = {"metrics": evaluate(enc, f"random_init{args.tag}-s{seed}"),
                                                        "encoder": "text_transformer", "encoder_kwargs": enc_kwargs,
                                                        "seed": seed}
            write()
        return
    if not args.skip_baselines:
        torch.manual_seed(0)
        enc = build_text_encoder("text_transformer", tok.vocab_size, tok.pad_id, **ENCODER)
        results["random_init"] = {"metrics": evaluate(enc, "random_init"), "encoder": "text_transformer"}
        torch.manual_seed(0)
        causal = build_text_encoder("causal_transformer", tok.vocab_size, tok.pad_id, **ENCODER)
        results["random_init_causal"] = {"metrics": {**evaluate(causal, "random_init_causal"), "perplexity/ppl":
                                                     causal_perplexity(causal, lm_test, pad_id=tok.pad_id)},
                                         "encoder": "causal_transformer"}
        results["bag_of_words"] = {"metrics": evaluate(None, "bag_of_words")}
        results["unigram"] = {"metrics": {"perplexity/ppl": unigram_perplexity(lm_train, lm_test,
                                                                               vocab_size=tok.vocab_size,
                                                                               pad_id=tok.pad_id)}}
        write()
        torch.manual_seed(0)
        enc = build_text_encoder("text_transformer", tok.vocab_size, tok.pad_id, **ENCODER)
        t0 = time.perf_counter()
        train_supervised(enc, *train, num_classes=2, views=None, epochs=args.supervised_epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=0)
        results["supervised"] = {"metrics": evaluate(enc, "supervised"), "encoder": "text_transformer",
                                 "epochs": args.supervised_epochs, "train_seconds": round(time.perf_counter() - t0, 1)}
        write()
    init = ""
    if args.init_from:  # e.g. SimCSE from the MLM encoder, as the SimCSE paper starts from BERT
        ckpt = LocalSession(work / f"ckpt-{args.init_from}").latest_checkpoint()
        if ckpt is None:
            raise SystemExit(f"--init-from {args.init_from}: no checkpoint in {work} (train that row first)")
        init = str(work / f"{args.init_from}-encoder.pt")
        torch.save(torch.load(ckpt / "state.pt", weights_only=True)["eval_encoder"], init)
    for objective in args.objectives:
        name = objective + args.tag + (f"-s{args.seed}" if args.seed else "")
        epochs, batch, lr = RECIPES[objective] if args.epochs == 0 else (args.epochs, args.batch_size, args.lr)
        job = TrainJob(run=name, seed=args.seed, data_dir=str(data), objective=objective,
                       objective_config=objective_config(objective, obj_kwargs),
                       encoder=OBJECTIVES[objective], encoder_kwargs=enc_kwargs, mean=(), std=(),
                       tokenizer=str(tok_file), init_encoder=init,
                       train=TrainConfig(epochs=epochs, batch_size=batch, lr=lr, weight_decay=0.01, warmup_epochs=1))
        session = LocalSession(work / f"ckpt-{name}")
        reuse = args.reuse and session.latest_checkpoint() is not None and name in results
        t0 = time.perf_counter()
        if not reuse:
            run_training(job, session)
        train_s = time.perf_counter() - t0
        state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
        enc = build_text_encoder(OBJECTIVES[objective], tok.vocab_size, tok.pad_id, **enc_kwargs)
        enc.load_state_dict(state["eval_encoder"])
        metrics = evaluate(enc, name)
        if objective == "causal_lm":
            metrics["perplexity/ppl"] = causal_perplexity(enc, lm_test, pad_id=tok.pad_id)
        if objective == "mlm":  # the pseudo-perplexity needs the MLM head: rebuild the whole objective
            from ssl_tasks.training.feeds import open_feed
            from ssl_tasks.training.loop import build_objective

            obj = build_objective(job, open_feed(job))
            obj.load_state_dict(state["objective"])
            metrics["pseudo_perplexity/ppl"] = pseudo_perplexity(obj, lm_test, special_ids=tok.special_ids,
                                                                 mask_id=tok.mask_id)
        if reuse:
            results[name]["metrics"].update(metrics)
            write()
            continue
        reports = session.reports
        rows = train[0] if objective == "simcse" else lm_train  # what the objective trained on (pad vs pack)
        tokens_per_row = float((rows != tok.pad_id).sum(1).mean())
        sps = float(np.mean([r["train/samples_per_s"] for r in reports]))
        results[name] = {"metrics": metrics, "encoder": OBJECTIVES[objective], "encoder_kwargs": enc_kwargs,
                         "objective_kwargs": obj_kwargs, "init_from": args.init_from or None,
                         "seed": args.seed, "epochs": epochs, "batch_size": batch, "lr": lr,
                         "train_seconds": round(train_s, 1), "rows_per_s": round(sps, 1),
                         "tokens_per_s": round(sps * tokens_per_row), "final_loss": round(reports[-1]["train/loss"], 4),
                         "report": {k: round(v, 4) for k, v in reports[-1].items() if k.startswith("train/")}}
        write()
        print(f"{name}: {results[name]['tokens_per_s']} tokens/s, {train_s:.0f} s", flush=True)


def throughput(work: Path, args: argparse.Namespace, out: Path, warmup: int = 3, steps: int = 20) -> None:
    """Steady-state training speed: ``steps`` optimizer steps after ``warmup``, real batches of the training rows."""
    from ssl_tasks.training.feeds import open_feed
    from ssl_tasks.training.loop import build_objective, make_optimizer

    rows_out = {}
    for name in args.objectives:
        job = TrainJob(run=name, seed=0, data_dir=str(work / "sst2"), objective=name,
                       objective_config=objective_config(name, {}),
                       encoder=OBJECTIVES[name], encoder_kwargs=ENCODER, mean=(), std=(),
                       tokenizer=str(work / "tokenizer.json"), train=TrainConfig(batch_size=args.batch_size))
        feed = open_feed(job)
        obj = build_objective(job, feed)
        opt = make_optimizer(obj, job.train)
        g = torch.Generator().manual_seed(0)
        tokens = n = 0
        t0 = time.perf_counter()
        for i, xb in enumerate(feed.epoch(batch_size=args.batch_size, seed=0, epoch=0, rank=0, world_size=1)):
            if i == warmup:
                t0, tokens, n = time.perf_counter(), 0, 0
            if i == warmup + steps:
                break
            x = torch.from_numpy(xb)
            obj.monitoring = False
            res = obj(obj.make_views(x, g))
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
            tokens, n = tokens + int((x != feed.spec.pad_id).sum()), n + len(x)
        dt = time.perf_counter() - t0
        rows_out[name] = {"rows_per_s": round(n / dt, 1), "tokens_per_s": round(tokens / dt), "layout": feed.layout}
        print(name, rows_out[name], flush=True)
    out.write_text(json.dumps({"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
                               "provenance": provenance(args), "encoder": ENCODER,
                               "batch_size": args.batch_size, "steps": steps, "rows": rows_out}, indent=2) + "\n")


def render(result: dict) -> str:
    rows = result["rows"]
    ref = rows.get("random_init", {}).get("metrics", {})
    lines = ["| row | encoder | knn/top1 | linear/top1 | perplexity | beats random init (linear) | train s | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        m = r["metrics"]
        cells = [f"{m[k]:.4f}" if k in m else "-" for k in ("knn/top1", "linear/top1")]
        ppl = f"{m['perplexity/ppl']:.1f}" if "perplexity/ppl" in m else "-"
        if "pseudo_perplexity/ppl" in m:
            ppl = f"{m['pseudo_perplexity/ppl']:.1f} (pseudo)"
        base = name.startswith(("random_init", "bag_of_words", "unigram", "supervised"))
        beat = "-" if base or "linear/top1" not in ref else ("yes" if m["linear/top1"] > ref["linear/top1"] else "**no**")
        lines.append(f"| {name} | {r.get('encoder', '-')} | " + " | ".join(cells) +
                     f" | {ppl} | {beat} | {r.get('train_seconds', '-')} | {r.get('tokens_per_s', '-')} |")
    return "\n".join(lines)


def render_seeds(results: list[dict]) -> str:
    """Rows ``x``, ``x-s1``, ``x-s2`` ... of several result files grouped as one objective (or random init)."""
    import re

    from ssl_tasks.pipeline.leaderboard import mean_ci95

    groups: dict[str, dict[str, dict]] = {}
    for r in results:
        for name, row in r["rows"].items():
            base = re.sub(r"-s\d+$", "", name)
            groups.setdefault(base, {}).setdefault(name, row)
    ref_base = next((b for b in groups if b.startswith("random_init")), None)  # the first file's random init
    ref = [row["metrics"]["linear/top1"] for row in groups.get(ref_base, {}).values()]
    ref_mean = mean_ci95(ref)[0] if ref else None
    lines = ["| row | seeds | linear/top1 (mean ± 95% CI) | k-NN top-1 | linear − random init | per seed (linear) |",
             "|---|---:|---|---|---:|---|"]
    order = ("random_init", "mlm", "causal_lm", "span_corruption", "simcse")
    for base in sorted(groups, key=lambda b: (b != ref_base, next((i for i, o in enumerate(order)
                                                                   if b.startswith(o)), len(order)), b)):
        rows = groups[base]
        if base in ("bag_of_words", "supervised", "unigram", "random_init_causal"):  # baselines, not seed groups
            continue
        lin = [row["metrics"]["linear/top1"] for row in rows.values()]
        knn = [row["metrics"]["knn/top1"] for row in rows.values()]
        (lm, lc), (km, kc) = mean_ci95(lin), mean_ci95(knn)
        delta = "-" if base == ref_base or ref_mean is None else f"{lm - ref_mean:+.4f}"
        ci = (lambda m, c: f"{m:.4f}") if len(lin) == 1 else (lambda m, c: f"{m:.4f} ± {c:.4f}")
        lines.append(f"| {base} | {len(lin)} | {ci(lm, lc)} | {ci(km, kc)} | {delta} | "
                     + ", ".join(f"{v:.4f}" for v in lin) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
