"""Graph SSL on Cora (public Planetoid split): DGI, GraphCL and GraphMAE with the papers' settings, several seeds,
next to random init of the same encoder, raw features and supervised GCNs.

    python bench/graph_quality.py --seeds 10 --out bench/results/graph_quality.json

Each run trains full-batch with the library's objectives and encoders (one optimisation step per epoch, the
objective's ``make_views`` / ``forward`` driven by this script's loop, not the pipeline, so early stopping on the
training loss as in DGI's code is possible), then probes the frozen encoder's node embeddings with
``modalities/graph/probes.py``: logistic regression fit on the 140 train nodes, C chosen on the 500 val nodes,
accuracy on the 1000 test nodes; k-NN (k=20, T=0.07) alongside. The JSON is rewritten after every run, so a cut-off
bench keeps what finished. Paper figures (test accuracy, %): DGI 82.3 +- 0.6, GraphCL 81.8 +- 0.2, GraphMAE
84.2 +- 0.4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import ResultsFile, provenance  # noqa: E402  (bench/ is on sys.path when run as a script)

from ssl_tasks.core.config import build  # noqa: E402
from ssl_tasks.modalities.graph.encoders import GATEncoder, GCNEncoder, normalise_features  # noqa: E402
from ssl_tasks.modalities.graph.feed import GraphDataSpec  # noqa: E402
from ssl_tasks.modalities.graph.probes import node_embeddings, node_protocols, train_supervised_gnn  # noqa: E402
from ssl_tasks.modalities.graph.sources import planetoid  # noqa: E402
from ssl_tasks.objectives import OBJECTIVES  # noqa: E402

# The papers' Cora settings (DGI: the authors' execute.py; GraphCL: its node-level execute.py, edge dropping 20%;
# GraphMAE: configs.yml). patience: early stopping on the training loss (DGI's code); None: a fixed epoch count.
SETTINGS = {
    "dgi": {"encoder": ("gcn", {"hidden": 512}), "lr": 1e-3, "weight_decay": 0.0, "max_epochs": 1000,
            "patience": 20, "cosine": False, "kwargs": {}},
    "graphcl": {"encoder": ("gcn", {"hidden": 512}), "lr": 1e-3, "weight_decay": 0.0, "max_epochs": 1000,
                "patience": 20, "cosine": False, "kwargs": {"drop_edge": 0.2}},
    "graphmae": {"encoder": ("gat", {"hidden": 512, "heads": 4, "layers": 2, "feat_drop": 0.2, "attn_drop": 0.1}),
                 "lr": 1e-3, "weight_decay": 2e-4, "max_epochs": 1500, "patience": None, "cosine": True,
                 "kwargs": {"mask_rate": 0.5, "replace_rate": 0.05, "alpha": 3.0}},
}
ENCODERS = {"gcn": GCNEncoder, "gat": GATEncoder}


def make_encoder(name: str, kwargs: dict, in_dim: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ENCODERS[name](in_dim, **kwargs)


def with_init(name: str, kwargs: dict, init: str) -> dict:
    """``kwargs`` with the GAT ``init`` option added for the ``gat`` encoder (the GCN has no such option)."""
    return {**kwargs, "init": init} if name == "gat" else kwargs


def make_objective(objective: str, seed: int, x: torch.Tensor, impl: str | None = None,
                   init: str = "reference") -> nn.Module:
    """The objective around a fresh encoder from ``seed``; ``impl`` (GraphMAE: 'csr' or 'pyg') picks the GAT
    encoder's and the decoder's implementation, None their defaults; ``init`` (GAT layers only, encoder and decoder:
    the library's ``gat.reference_init`` or PyG's default) is passed to both as their ``init`` option."""
    s = SETTINGS[objective]
    name, enc_kwargs = s["encoder"]
    kwargs = dict(s["kwargs"])
    if impl is not None:
        enc_kwargs, kwargs = {**enc_kwargs, "impl": impl}, {**kwargs, "impl": impl}
    enc = make_encoder(name, with_init(name, enc_kwargs, init), x.shape[1], seed)
    cls = OBJECTIVES.get(objective)
    return cls(enc, build(cls.Config, with_init(name, kwargs, init), objective), GraphDataSpec(x.shape[0], x.shape[1]))


def pretrain(objective: str, seed: int, x: torch.Tensor, ei: torch.Tensor, max_epochs: int | None,
             impl: str | None = None, init: str = "reference") -> tuple:
    """Train one objective from ``seed``; returns the encoder (the lowest-loss epoch's, under early stopping), the
    epochs run and the last loss."""
    s = SETTINGS[objective]
    obj = make_objective(objective, seed, x, impl, init)
    enc = obj.encoder
    opt = torch.optim.Adam(obj.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    epochs = max_epochs or s["max_epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (1 + np.cos(e * np.pi / epochs)) * 0.5) \
        if s["cosine"] else None
    g = torch.Generator().manual_seed(seed)
    best, wait, state, losses = float("inf"), 0, None, []
    for _ in range(epochs):
        obj.train()
        res = obj(obj.make_views((x, ei), g))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        loss = float(res.loss.detach())
        losses.append(loss)
        if len(losses) % 50 == 0:
            print(f"  {objective} seed {seed}: epoch {len(losses)} loss {loss:.4f}", flush=True)
        if s["patience"] is not None:
            if loss < best:
                best, wait, state = loss, 0, {k: v.detach().clone() for k, v in enc.state_dict().items()}
            else:
                wait += 1
                if wait >= s["patience"]:
                    break
    if state is not None:
        enc.load_state_dict(state)
    return enc, len(losses), losses[-1]


def time_graphmae_steps(x: torch.Tensor, ei: torch.Tensor, steps: int, seed: int = 0) -> dict:
    """Seconds per GraphMAE training step (views, forward, backward, Adam) with ``impl: pyg`` (PyG's GATConv on
    every node, the original code) and ``impl: csr``, alternated step by step in this process so that both see the
    same machine load; and each step's loss, both trained from the same seed with the same draws (equal up to
    float order, which compounds slowly over the steps)."""
    objs = {impl: make_objective("graphmae", seed, x, impl) for impl in ("pyg", "csr")}
    s = SETTINGS["graphmae"]
    opts = {k: torch.optim.Adam(o.parameters(), lr=s["lr"], weight_decay=s["weight_decay"]) for k, o in objs.items()}
    gens = {k: torch.Generator().manual_seed(seed) for k in objs}
    times: dict[str, list[float]] = {k: [] for k in objs}
    losses: dict[str, list[float]] = {k: [] for k in objs}
    for step in range(steps + 1):  # step 0: warm-up (not timed), the loss compared
        for impl, obj in objs.items():
            obj.train()
            torch.manual_seed(seed * 1000 + step)
            t0 = time.perf_counter()
            res = obj(obj.make_views((x, ei), gens[impl]))
            opts[impl].zero_grad()
            res.loss.backward()
            opts[impl].step()
            if step:
                times[impl].append(time.perf_counter() - t0)
            losses[impl].append(float(res.loss.detach()))
    out = {k: {"median_s": float(np.median(v)), "min_s": float(np.min(v)), "mean_s": float(np.mean(v)),
               "steps": len(v), "first_loss": losses[k][0], "losses": losses[k]} for k, v in times.items()}
    out["max_loss_difference"] = max(abs(a - b) for a, b in zip(losses["pyg"], losses["csr"]))
    # where a step's time goes: torch.profiler's self CPU time per op (ms per step, 3 steps), the top ten
    from torch.profiler import ProfilerActivity, profile

    for impl, obj in objs.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                res = obj(obj.make_views((x, ei), gens[impl]))
                opts[impl].zero_grad()
                res.loss.backward()
                opts[impl].step()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        out[impl]["profile_ms_per_step"] = {"total": total / 3e3, **{e.key: e.self_cpu_time_total / 3e3
                                                                     for e in ops[:10]}}
    out["speedup_median"] = out["pyg"]["median_s"] / out["csr"]["median_s"]
    out["load_average"] = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return out


def adam_probe(emb: np.ndarray, labels: np.ndarray, splits: dict, seed: int, lr: float = 0.01,
               weight_decay: float = 1e-4, epochs: int = 300) -> dict[str, float]:
    """GraphMAE's own linear probe (its Cora settings: lr_f 0.01, weight_decay_f 1e-4, max_epoch_f 300): a linear
    layer on the raw (not standardised) embeddings trained with Adam on the train nodes, full batch; the test
    accuracy at the last epoch whose val accuracy is >= every earlier one ("early-stopping" accuracy), and at the
    final epoch."""
    torch.manual_seed(seed)
    h, y = torch.from_numpy(emb).float(), torch.from_numpy(labels).long()
    tr, va, te = (torch.from_numpy(splits[k]) for k in ("train", "val", "test"))
    lin = nn.Linear(h.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, at_best, last = -1.0, 0.0, 0.0
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(lin(h[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            pred = lin(h).argmax(1)
        acc_va, last = float((pred[va] == y[va]).float().mean()), float((pred[te] == y[te]).float().mean())
        if acc_va >= best_val:
            best_val, at_best = acc_va, last
    return {"adam_linear/top1": at_best, "adam_linear_final/top1": last}


def kipf_gcn(x: torch.Tensor, ei: torch.Tensor, y: torch.Tensor, splits: dict, seed: int) -> float:
    """Kipf & Welling's 2-layer GCN (16 hidden, dropout 0.5, Adam 0.01, wd 5e-4 on layer 1, 200 epochs), the
    test accuracy at the best val epoch: the supervised ceiling of the GCN papers (81.5 on this split)."""
    from ssl_tasks.modalities.graph.encoders import normalised_adjacency

    torch.manual_seed(seed)
    adj = normalised_adjacency(ei, x.shape[0])
    w1, w2 = nn.Linear(x.shape[1], 16), nn.Linear(16, int(y.max()) + 1)
    opt = torch.optim.Adam([{"params": w1.parameters(), "weight_decay": 5e-4}, {"params": w2.parameters()}], lr=0.01)

    def fwd(train: bool) -> torch.Tensor:
        h = torch.relu(torch.sparse.mm(adj, w1(nn.functional.dropout(x, 0.5, train))))
        return torch.sparse.mm(adj, w2(nn.functional.dropout(h, 0.5, train)))

    tr, va, te = (torch.from_numpy(splits[k]) for k in ("train", "val", "test"))
    best = (-1.0, 0.0)
    for _ in range(200):
        loss = nn.functional.cross_entropy(fwd(True)[tr], y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p = fwd(False).argmax(1)
        acc_va, acc_te = float((p[va] == y[va]).float().mean()), float((p[te] == y[te]).float().mean())
        if acc_va > best[0]:
            best = (acc_va, acc_te)
    return best[1]


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per row name: its seeds, mean and std over seeds of the linear and k-NN accuracies, the mean seconds and
    the epochs each run took (as in ``bench/results/graph_quality.json``)."""
    out = {}
    for name, rows in runs.items():
        def stat(key: str, fn: object) -> float | None:
            vals = [r[key] for r in rows if key in r]
            return float(fn(vals)) if vals else None

        out[name] = {"seeds": [r["seed"] for r in rows], "linear_mean": stat("linear/top1", np.mean),
                     "linear_std": stat("linear/top1", np.std), "knn_mean": stat("knn/top1", np.mean),
                     "knn_std": stat("knn/top1", np.std), "seconds_mean": stat("seconds", np.mean),
                     "epochs": [r["epochs"] for r in rows] if all("epochs" in r for r in rows) else None}
        if all("final_loss" in r for r in rows):
            out[name]["final_loss_mean"] = stat("final_loss", np.mean)
        for key in ("adam_linear", "adam_linear_final"):  # only the seeds that have it
            vals = [r[f"{key}/top1"] for r in rows if f"{key}/top1" in r]
            if vals:
                out[name].update({f"{key}_mean": float(np.mean(vals)), f"{key}_std": float(np.std(vals)),
                                  f"{key}_seeds": [r["seed"] for r in rows if f"{key}/top1" in r]})
    return out


def merge(paths: list[str], out_path: str, args: argparse.Namespace) -> None:
    """One results file from several processes' files: their rows by name (sorted by seed; a seed in two files
    must hold the same metrics), each file's provenance and command, and the summary over all seeds."""
    docs = {p: json.loads(Path(p).read_text()) for p in paths}
    runs: dict[str, dict[int, dict]] = {}
    for p, doc in docs.items():
        for name, rows in doc["runs"].items():
            for row in rows:
                have = runs.setdefault(name, {}).get(row["seed"])
                metrics = {k: v for k, v in row.items() if "seconds" not in k}
                if have is not None and {k: v for k, v in have.items() if "seconds" not in k} != metrics:
                    raise SystemExit(f"{name} seed {row['seed']}: different results in two files ({p})")
                runs[name].setdefault(row["seed"], row)
    first = next(iter(docs.values()))
    merged = {k: first[k] for k in ("cpu", "threads", "torch", "settings", "split") if k in first}
    merged_runs = {name: [rows[s] for s in sorted(rows)] for name, rows in runs.items()}
    out = {"provenance": provenance(args), "merged_from": {p: doc.get("provenance") for p, doc in docs.items()},
           "commands": [doc["command"] for doc in docs.values()], **merged, "runs": merged_runs,
           "summary": summarise(merged_runs)}
    results = ResultsFile(out_path, out, "runs")
    results.write()
    print(json.dumps(out["summary"], indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cora"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--objectives", default="dgi,graphcl,graphmae")
    ap.add_argument("--graphmae-epochs", type=int, default=None, help="override GraphMAE's 1500 epochs (CPU time)")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap DGI's / GraphCL's epochs (early stopping may "
                    "end them sooner; CPU time)")
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--no-baselines", action="store_true", help="only the SSL runs (and their random init)")
    ap.add_argument("--graphmae-seeds", type=int, default=None, help="fewer seeds for GraphMAE (CPU time)")
    ap.add_argument("--graphcl-seeds", type=int, default=None, help="fewer seeds for GraphCL (CPU time)")
    ap.add_argument("--probe-seeds", type=int, default=1, help="seeds of the supervised gcn-512 + probe baseline")
    ap.add_argument("--graphmae-impl", choices=("csr", "pyg"), default="csr", help="GraphMAE's GAT encoder and "
                    "decoder: the CSR path (default) or PyG's GATConv on every node (the original code; same maths)")
    ap.add_argument("--init", choices=("pyg", "reference"), default="reference", help="GAT layers' initialisation "
                    "(the gat encoder's and GraphMAE decoder's `init` option): GraphMAE's reference (xavier_normal_, "
                    "gain sqrt(2), on the weights and attention vectors, bias 0; the library's default since "
                    "2026-12-08) or PyG's default (glorot, gain 1: the earlier 1500-epoch runs)")
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many GraphMAE steps, pyg and csr "
                    "alternated, and record them (no training runs)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="only merge these results files "
                    "(processes run side by side) into --out, with the summary over all their seeds")
    ap.add_argument("--adam-probe", action="store_true", help="also GraphMAE's own linear probe (Adam, raw "
                    "embeddings, test accuracy at the best val epoch) next to the standard ones")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "graph_quality.json"))
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out, args)
        return
    torch.set_num_threads(args.threads)
    r = planetoid(Path(args.data), test_fraction=0.5, split_seed=0)
    x = normalise_features(torch.from_numpy(r.features))
    ei = torch.from_numpy(r.edge_index)
    labels = r.labels
    splits = {k: v.index for k, v in r.splits.items()}
    xn, ein = x.numpy(), ei.numpy()
    prov = provenance(args)
    out = {"provenance": prov, "command": prov["command"], "commit": prov["commit"], "cpu": prov["cpu"],
           "threads": args.threads, "torch": torch.__version__, "args": vars(args), "settings": SETTINGS,
           "split": {k: len(v) for k, v in splits.items()}, "runs": {}}
    results = ResultsFile(args.out, out, "runs")

    def record(name: str, seed: int, metrics: dict, seconds: float, **extra: object) -> None:
        runs = results.add(name, seed, {**metrics, "seconds": round(seconds, 2), **extra})
        accs = [row["linear/top1"] for row in runs]
        out.setdefault("summary", {})[name] = {"linear_mean": float(np.mean(accs)), "linear_std": float(np.std(accs)),
                                               "seeds": len(accs)}
        results.write()
        print(f"{name} seed {seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
              + f" ({seconds:.1f} s) {extra or ''}", flush=True)

    if args.time_steps:
        out["step_timing"] = time_graphmae_steps(x, ei, args.time_steps, args.seed_start)
        results.write()
        print(out["step_timing"], flush=True)
        return
    protocols = ["linear", "knn"]
    t0 = time.perf_counter()
    if not args.no_baselines:
        record("raw_features", 0, node_protocols(xn, labels, splits, protocols, 7), time.perf_counter() - t0)
    objectives = args.objectives.split(",")
    limit = {"graphmae": args.graphmae_seeds, "graphcl": args.graphcl_seeds}
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        t0 = time.perf_counter()
        if not args.no_baselines:
            acc = kipf_gcn(x, ei, torch.from_numpy(labels), splits, seed)
            record("supervised_gcn_kipf", seed, {"linear/top1": acc}, time.perf_counter() - t0,
                   note="the GCN's own test accuracy (no probe)")
        for objective in objectives:
            if limit.get(objective) is not None and seed >= args.seed_start + limit[objective]:
                continue
            s = SETTINGS[objective]
            t0 = time.perf_counter()
            name, enc_kwargs = s["encoder"]
            enc = make_encoder(name, with_init(name, enc_kwargs, args.init), x.shape[1], seed)
            emb = node_embeddings(enc, xn, ein)
            extra = adam_probe(emb, labels, splits, seed) if args.adam_probe else {}
            record(f"random_init_{s['encoder'][0]}", seed,
                   {**node_protocols(emb, labels, splits, protocols, 7), **extra}, time.perf_counter() - t0)
            t0 = time.perf_counter()
            graphmae = objective == "graphmae"
            enc, epochs, last = pretrain(objective, seed, x, ei, args.graphmae_epochs if graphmae else args.max_epochs,
                                         args.graphmae_impl if graphmae else None, args.init)
            train_s = time.perf_counter() - t0
            emb = node_embeddings(enc, xn, ein)
            metrics = node_protocols(emb, labels, splits, protocols, 7)
            if args.adam_probe:
                metrics.update(adam_probe(emb, labels, splits, seed))
            record(objective, seed, metrics, time.perf_counter() - t0, epochs=epochs, final_loss=round(last, 5),
                   train_seconds=round(train_s, 2))
    # the pipeline's supervised baseline: gcn 512 + a linear head on the train labels, then probed
    for seed in range(0 if args.no_baselines else args.probe_seeds):
        t0 = time.perf_counter()
        enc = make_encoder("gcn", {"hidden": 512}, x.shape[1], seed)
        enc, _ = train_supervised_gnn(enc, xn, ein, labels, splits["train"], splits["val"], 7, seed=seed)
        record("supervised_gcn512_probe", seed, node_protocols(node_embeddings(enc, xn, ein), labels, splits,
                                                               protocols, 7), time.perf_counter() - t0)


if __name__ == "__main__":
    main()
