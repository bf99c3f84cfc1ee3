"""Language benchmark: each text objective vs a random-init encoder, bag of words and a supervised ceiling on the
SST-2 linear probe (train phrases -> dev sentences), perplexity vs a unigram model, tokens/s per objective.

The pipeline's own pieces in one process (ingest, the tokenizer, the training loop, the protocols), so the
figures measure the methods, not orchestration. Usage:

    python bench/text_quality.py --out bench/results/text_sst2.json
    python bench/text_quality.py --render bench/results/text_sst2.json

Rows are written after each one, so an interrupted run keeps what finished; ``--objectives`` reruns those.

``--validated`` (``validated_main``) makes the choices without reading the test split: a seeded validation
split of whole SST-2 training sentences is carved from the labelled training phrases (``carve_validation``),
every candidate variant of an objective (``CANDIDATES``) is trained at seed 0 and scored on it, the best by
validation linear top-1 is chosen (``--choose``), and only then is that one scored on the dev sentences (the
test split) and trained for more seeds. Pretraining keeps using every training phrase without labels.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
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
    ap.add_argument("--validated", action="store_true", help="selection on a validation split carved from the "
                    "training phrases, the test split scored once per chosen configuration (validated_main)")
    ap.add_argument("--val-size", type=int, default=872, help="validation sentences carved (--validated)")
    ap.add_argument("--val-seed", type=int, default=0, help="seed of the validation carve (--validated)")
    ap.add_argument("--candidates", nargs="+", default=[], metavar="OBJ:VARIANT",
                    help="--validated: train these candidates at --seed, score them on validation only")
    ap.add_argument("--choose", action="store_true", help="--validated: choose each of --objectives' variant by "
                    "validation linear top-1 at seed 0, then score the chosen one on the test split")
    ap.add_argument("--chosen", action="store_true", help="--validated: train --objectives' chosen variants at "
                    "--seed and score them on validation and test")
    ap.add_argument("--baselines", nargs="+", default=[], choices=["bag_of_words", "supervised"],
                    help="--validated: score these baselines on validation and test")
    args = ap.parse_args()
    if args.validated:
        if args.threads:
            torch.set_num_threads(args.threads)
        validated_main(args)
        return
    if args.render:
        result = json.loads(Path(args.render).read_text())
        print(render_validated(result) if "carve" in result else render(result))
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

# The variants each objective's encoder or recipe went through while they were being chosen on the dev sentences
# (bench/RESULTS.md History H7-H10), now candidates chosen among on the validation split. A candidate is
# {"encoder_kwargs": merged into ENCODER, "recipe": (epochs, batch, lr) if not RECIPES', "checkpoint_of": a
# candidate whose trained checkpoint it evaluates (pooling changes evaluation only), "init_from": "mlm" (start
# from the chosen MLM candidate's encoder of the same seed, with its kwargs)}. Left out for time (2 shared cores):
# MLM with RoPE and no window (H7), span corruption with RoPE + window but no embedding LayerNorm (H8) and the
# single-run span ablations (one decoder layer, noise 0.3, spans of 1, lr 1e-3), the 12-epoch budgets.
ROPE_W2 = {"position": "rope", "window": 2}
CANDIDATES: dict[str, dict[str, dict]] = {
    "mlm": {"plain": {}, "rope_w2": {"encoder_kwargs": ROPE_W2}},
    "causal_lm": {"plain": {}},
    "span_corruption": {"plain": {},
                        "rope_w2_en": {"encoder_kwargs": {**ROPE_W2, "embed_norm": True}},
                        "rope_w2_en_fl": {"encoder_kwargs": {**ROPE_W2, "embed_norm": True, "pooling": "first_last"},
                                          "checkpoint_of": "rope_w2_en"}},
    "simcse": {"plain": {}, "from_mlm": {"init_from": "mlm", "recipe": (1, 64, 1e-4)}},
}


def _words(text: str) -> list[str]:
    return text.split()


def _spans(words: list[str]) -> set[str]:
    """Every contiguous run of words of a phrase, as text: what "a phrase contained in it" can be."""
    return {" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1)}


def carve_validation(texts: list[str], size: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(probe-train indices, validation indices, counts) over SST-2's training phrases.

    SST-2's training "sentences" are the phrases of each sentence's parse tree, so a random carve would put a
    sentence in validation and its sub-phrases (with their labels) in the probe's training part. Instead the
    validation phrases are drawn (seeded) among the maximal phrases, those not contained word for word in any other
    training phrase (whole sentences, as far as the data goes), and every training phrase contained in a validation
    phrase (a run of its words, duplicates included) is removed from the probe's training part.
    """
    if size < 1:
        raise ValueError(f"--val-size must be >= 1, got {size}")
    norm = [" ".join(_words(t)) for t in texts]
    covered: set[str] = set()
    maximal = []
    for i in sorted(range(len(norm)), key=lambda i: (-len(_words(norm[i])), i)):  # longest first
        if norm[i] in covered or not norm[i]:
            continue  # a run of words of a longer (or an equal, earlier) phrase
        maximal.append(i)
        covered |= _spans(_words(norm[i]))
    del covered
    if size > len(maximal):
        raise ValueError(f"--val-size {size} exceeds the {len(maximal)} maximal training phrases")
    val = np.sort(np.random.default_rng(seed).choice(np.asarray(maximal), size=size, replace=False))
    in_val: set[str] = set()
    for i in val:
        in_val |= _spans(_words(norm[i]))
    val_set = set(val.tolist())
    removed = [i for i in range(len(norm)) if i not in val_set and norm[i] in in_val]
    drop = val_set | set(removed)
    probe = np.asarray([i for i in range(len(norm)) if i not in drop], dtype=np.int64)
    counts = {"train_phrases": len(norm), "maximal_phrases": len(maximal), "validation": int(size),
              "removed_from_probe_train": len(removed), "probe_train": len(probe),
              "validation_words_mean": round(float(np.mean([len(_words(norm[i])) for i in val])), 1)}
    return probe, val, counts


def _lock(work: Path):
    """An exclusive lock (the work dir's), so two invocations side by side can add rows to one results file."""
    f = open(work / "results.lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def validated_main(args: argparse.Namespace) -> None:
    """Selection on a validation split carved from the training phrases; the test split read once per choice.

    Rows ``<objective>.<variant>-s<seed>``, ``random_init.<objective>.<variant>-s<seed>``, ``bag_of_words``,
    ``supervised``; metrics ``val/<protocol>/top1`` and, once chosen, ``test/<protocol>/top1``. ``selection``
    records each choice with every candidate's validation scores. Several invocations may add to one file.
    """
    if not args.work:
        raise SystemExit("--validated needs --work (the checkpoints of the chosen candidates are reused from it)")
    from ssl_tasks.evaluation.features import extract_features, raw_features
    from ssl_tasks.evaluation.knn import knn_top1
    from ssl_tasks.evaluation.linear_probe import linear_probe_top1

    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "sst2"
    with _lock(work):
        if not (data / "manifest.json").is_file():
            ingest("text_table", SHARED / "sst2", data, options={"text_column": "sentence", "label_column": "label",
                                                                "test_file": "dev.tsv"})
        tok_file = work / "tokenizer.json"
        if not tok_file.is_file():
            print("tokenizer:", train_text_tokenizer(TextDataset(data).iter_texts("train"), tok_file,
                                                     vocab_size=args.vocab_size), flush=True)
    ds = TextDataset(data)
    tok = TextTokenizer.load(tok_file)
    (x_all, y_all), test = labelled_rows(ds, tok, ENCODER["max_len"])
    texts, _ = ds.load("train")
    t0 = time.perf_counter()
    probe_idx, val_idx, counts = carve_validation(texts, args.val_size, args.val_seed)
    print(f"validation carve ({time.perf_counter() - t0:.0f} s): {counts}", flush=True)
    train, val = (x_all[probe_idx], y_all[probe_idx]), (x_all[val_idx], y_all[val_idx])
    splits = {"val": val, "test": test}
    ecfg = EvalConfig(linear_epochs=args.linear_epochs)
    me = provenance(args)
    carve = {"seed": args.val_seed, "counts": {**counts, "test": len(test[1])},
             "label_balance": {s: round(float(np.mean(y)), 4) for s, (_, y) in
                               {"probe_train": train, "val": val, "test": test}.items()},
             "validation_indices_sha": __import__("hashlib").sha256(val_idx.tobytes()).hexdigest()[:16],
             "rule": "validation: seeded draw among the maximal training phrases (not a run of words of any other); "
                     "probe train: the other phrases minus every phrase that is a run of words of a validation one",
             "pretraining": "every training phrase (validation ones included), without labels"}

    def update(rows: dict[str, dict] | None = None, selection: dict[str, dict] | None = None) -> dict:
        with _lock(work):
            old = json.loads(out.read_text()) if out.is_file() else {}
            if old.get("carve") and old["carve"]["validation_indices_sha"] != carve["validation_indices_sha"]:
                raise SystemExit(f"{out} was written with another validation carve; use another --out")
            earlier = [*old.get("earlier_provenance", [])]
            if old.get("provenance") and old["provenance"]["recorded_utc"] != me["recorded_utc"]:
                earlier.append(old["provenance"])
            new = {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
                   "data": "sst2: probe train phrases (validation carved out) -> validation sentences, dev sentences "
                           "(the test split)", "carve": carve,
                   "tokenizer": {"vocab_size": tok.vocab_size}, "encoder": ENCODER, "candidates": CANDIDATES,
                   "recipes": RECIPES, "args": vars(args), "provenance": me, "earlier_provenance": earlier,
                   "notes": old.get("notes", []),  # added by hand: what was not run, and why
                   "selection": {**old.get("selection", {}), **(selection or {})},
                   "rows": {**old.get("rows", {}), **(rows or {})}}
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(new, indent=2) + "\n")
            tmp.replace(out)
            return new

    def score(encoder: torch.nn.Module | None, label: str, which: tuple[str, ...]) -> dict[str, float]:
        t0 = time.perf_counter()
        feats = (lambda x: raw_features(x, tok.vocab_size)) if encoder is None else (
            lambda x: extract_features(encoder, x, (), (), batch_size=ecfg.batch_size))
        f_tr, y_tr = feats(train[0]), torch.from_numpy(train[1]).long()
        m = {}
        for split in which:
            f_s, y_s = feats(splits[split][0]), torch.from_numpy(splits[split][1]).long()
            m[f"{split}/knn/top1"] = knn_top1(f_tr, y_tr, f_s, y_s, num_classes=2, k=ecfg.k,
                                              temperature=ecfg.temperature)
            m[f"{split}/linear/top1"] = linear_probe_top1(f_tr, y_tr, f_s, y_s, num_classes=2,
                                                          epochs=ecfg.linear_epochs, lr=ecfg.linear_lr, seed=ecfg.seed)
        print(f"{label}: {m} (eval {time.perf_counter() - t0:.0f} s)", flush=True)
        return m

    def resolve(objective: str, variant: str, seed: int) -> dict:
        """A candidate's encoder kwargs, recipe, checkpoint row and init row."""
        if objective not in CANDIDATES or variant not in CANDIDATES[objective]:
            raise SystemExit(f"unknown candidate {objective}:{variant}; valid: " + ", ".join(
                f"{o}:{v}" for o, vs in CANDIDATES.items() for v in vs))
        c = CANDIDATES[objective][variant]
        kwargs = {**ENCODER, **c.get("encoder_kwargs", {})}
        init = None
        if c.get("init_from"):
            sel = json.loads(out.read_text()).get("selection", {}) if out.is_file() else {}
            if c["init_from"] not in sel:
                raise SystemExit(f"{objective}:{variant} starts from the chosen {c['init_from']}: choose it first")
            src = sel[c["init_from"]]["chosen"]
            kwargs = {**ENCODER, **CANDIDATES[c["init_from"]][src].get("encoder_kwargs", {})}
            init = f"{c['init_from']}.{CANDIDATES[c['init_from']][src].get('checkpoint_of', src)}-s{seed}"
        return {"encoder_kwargs": kwargs, "recipe": c.get("recipe", RECIPES[objective]), "init_from": init,
                "ckpt_row": f"{objective}.{c.get('checkpoint_of', variant)}-s{seed}"}

    def train_and_score(objective: str, variant: str, seed: int, which: tuple[str, ...]) -> dict:
        r = resolve(objective, variant, seed)
        epochs, batch, lr = r["recipe"]
        session = LocalSession(work / f"ckpt-{r['ckpt_row']}")
        record: dict = {"objective": objective, "variant": variant, "seed": seed, "encoder": OBJECTIVES[objective],
                        "encoder_kwargs": r["encoder_kwargs"], "epochs": epochs, "batch_size": batch, "lr": lr,
                        "init_from": r["init_from"], "checkpoint": r["ckpt_row"], "written_by": me["command"]}
        if session.latest_checkpoint() is None:
            init = ""
            if r["init_from"]:
                ckpt = LocalSession(work / f"ckpt-{r['init_from']}").latest_checkpoint()
                if ckpt is None:
                    raise SystemExit(f"{objective}:{variant} needs the trained {r['init_from']} in {work}")
                init = str(work / f"{r['init_from']}-encoder.pt")
                torch.save(torch.load(ckpt / "state.pt", weights_only=True)["eval_encoder"], init)
            train_kwargs = {k: v for k, v in r["encoder_kwargs"].items() if k != "pooling"}  # evaluation only
            job = TrainJob(run=r["ckpt_row"], seed=seed, data_dir=str(data), objective=objective,
                           objective_config=objective_config(objective, {}), encoder=OBJECTIVES[objective],
                           encoder_kwargs=train_kwargs, mean=(), std=(), tokenizer=str(tok_file), init_encoder=init,
                           train=TrainConfig(epochs=epochs, batch_size=batch, lr=lr, weight_decay=0.01,
                                             warmup_epochs=1))
            t0 = time.perf_counter()
            run_training(job, session)
            reports = session.reports
            record.update(train_seconds=round(time.perf_counter() - t0, 1),
                          rows_per_s=round(float(np.mean([x["train/samples_per_s"] for x in reports])), 1),
                          final_loss=round(reports[-1]["train/loss"], 4))
        else:
            record["trained_by"] = "an earlier invocation (checkpoint reused)"
        state = torch.load(session.latest_checkpoint() / "state.pt", weights_only=True)
        enc = build_text_encoder(OBJECTIVES[objective], tok.vocab_size, tok.pad_id, **r["encoder_kwargs"])
        enc.load_state_dict(state["eval_encoder"])
        record["metrics"] = score(enc, f"{objective}.{variant}-s{seed}", which)
        return record

    rows: dict[str, dict] = {}
    for cand in args.candidates:  # selection runs: validation only
        objective, _, variant = cand.partition(":")
        name = f"{objective}.{variant}-s{args.seed}"
        rows[name] = train_and_score(objective, variant, args.seed, ("val",))
        update(rows={name: rows[name]})
    if args.choose:
        for objective in args.objectives:
            have = json.loads(out.read_text())["rows"] if out.is_file() else {}
            scores = {v: have.get(f"{objective}.{v}-s0", {}).get("metrics", {}) for v in CANDIDATES[objective]}
            missing = [v for v, m in scores.items() if "val/linear/top1" not in m]
            if missing:
                raise SystemExit(f"--choose {objective}: no seed-0 validation score for {missing}")
            chosen = max(scores, key=lambda v: scores[v]["val/linear/top1"])  # ties: the first listed (simplest)
            sel = {"chosen": chosen, "by": "validation linear/top1 at seed 0",
                   "validation": {v: {k: m[k] for k in ("val/linear/top1", "val/knn/top1")} for v, m in scores.items()},
                   "encoder_kwargs": resolve(objective, chosen, 0)["encoder_kwargs"]}
            update(selection={objective: sel})
            print(f"{objective}: chose {chosen} ({sel['validation']})", flush=True)
            name = f"{objective}.{chosen}-s0"  # the test split, read once for the chosen configuration
            row = train_and_score(objective, chosen, 0, ("val", "test"))
            update(rows={name: {**have[name], "metrics": row["metrics"], "test_scored_by": me["command"]}})
    if args.chosen or args.random_seeds:
        sel = json.loads(out.read_text()).get("selection", {}) if out.is_file() else {}
        for objective in args.objectives:
            if objective not in sel:
                raise SystemExit(f"{objective}: not chosen yet (run --choose first)")
            chosen = sel[objective]["chosen"]
            if args.chosen:
                name = f"{objective}.{chosen}-s{args.seed}"
                update(rows={name: train_and_score(objective, chosen, args.seed, ("val", "test"))})
            for seed in args.random_seeds:  # random init of the chosen architecture
                kwargs = resolve(objective, chosen, seed)["encoder_kwargs"]
                name = f"random_init.{objective}.{chosen}-s{seed}"
                torch.manual_seed(seed)
                enc = build_text_encoder(OBJECTIVES[objective], tok.vocab_size, tok.pad_id, **kwargs)
                update(rows={name: {"encoder": OBJECTIVES[objective], "encoder_kwargs": kwargs, "seed": seed,
                                    "written_by": me["command"], "metrics": score(enc, name, ("val", "test"))}})
    if "bag_of_words" in args.baselines:
        update(rows={"bag_of_words": {"written_by": me["command"],
                                      "metrics": score(None, "bag_of_words", ("val", "test"))}})
    if "supervised" in args.baselines:  # the encoder trained on the probe's training labels
        torch.manual_seed(0)
        enc = build_text_encoder("text_transformer", tok.vocab_size, tok.pad_id, **ENCODER)
        t0 = time.perf_counter()
        train_supervised(enc, *train, num_classes=2, views=None, epochs=args.supervised_epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=0)
        update(rows={"supervised": {"encoder": "text_transformer", "encoder_kwargs": ENCODER, "seed": 0,
                                    "epochs": args.supervised_epochs, "lr": args.lr, "batch_size": args.batch_size,
                                    "train_seconds": round(time.perf_counter() - t0, 1), "written_by": me["command"],
                                    "metrics": score(enc, "supervised", ("val", "test"))}})

def render_validated(result: dict) -> str:
    """The selection table (validation scores of every seed-0 candidate) and the chosen rows over their seeds on
    validation and test (mean, then min-max), each objective next to random init of its own architecture."""
    rows, sel = result["rows"], result.get("selection", {})
    lines = ["| objective | candidate | encoder kwargs (beyond the base) | val linear/top1 | val k-NN top-1 | chosen |",
             "|---|---|---|---|---|---|"]
    for objective, cands in CANDIDATES.items():
        for variant, c in cands.items():
            m = rows.get(f"{objective}.{variant}-s0", {}).get("metrics", {})
            extra = {k: v for k, v in (rows.get(f"{objective}.{variant}-s0", {}).get("encoder_kwargs") or {}).items()
                     if ENCODER.get(k) != v}
            cells = [f"{m[k]:.4f}" if k in m else "-" for k in ("val/linear/top1", "val/knn/top1")]
            chosen = "**yes**" if sel.get(objective, {}).get("chosen") == variant else ""
            lines.append(f"| {objective} | {variant} | {json.dumps(extra) if extra else '-'} | "
                         + " | ".join(cells) + f" | {chosen} |")

    def group(base: str) -> list[dict]:
        return [r["metrics"] for n, r in rows.items() if n == base or n.startswith(base + "-s")]

    def cell(ms: list[dict], key: str) -> str:
        v = [m[key] for m in ms if key in m]
        if not v:
            return "-"
        return f"{np.mean(v):.4f}" if len(v) == 1 else f"{np.mean(v):.4f} ({min(v):.4f}-{max(v):.4f})"

    keys = ("test/linear/top1", "test/knn/top1", "val/linear/top1", "val/knn/top1")
    lines += ["", "| row | seeds | test linear/top1 mean (min-max) | test k-NN top-1 | val linear/top1 | val k-NN top-1 |",
              "|---|---:|---|---|---|---|"]
    for objective, s in sel.items():
        for base in (f"{objective}.{s['chosen']}", f"random_init.{objective}.{s['chosen']}"):
            ms = [m for m in group(base) if "test/linear/top1" in m]
            if ms:
                lines.append(f"| {base} | {len(ms)} | " + " | ".join(cell(ms, k) for k in keys) + " |")
    for base in ("bag_of_words", "supervised"):
        if base in rows:
            lines.append(f"| {base} | 1 | " + " | ".join(cell([rows[base]["metrics"]], k) for k in keys) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
