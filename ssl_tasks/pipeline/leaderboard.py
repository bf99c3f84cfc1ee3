"""The leaderboard table, its Markdown and its bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KIND_ORDER = {"ssl": 0, "random_init": 1, "raw_pixels": 2, "supervised": 3, "unigram": 4}
ACCURACY, PERPLEXITY = "/top1", "/ppl"  # the metric suffixes: top-1 accuracy (higher is better), perplexity (lower)
RECALL = "/r1"  # retrieval recall@1 (higher is better)
FINETUNE = "finetune/top1"  # full fine-tuning: read against random init fine-tuned with the same budget


def metric_columns(columns: Any) -> list[str]:
    return [c for c in columns if c.endswith((ACCURACY, PERPLEXITY, RECALL))]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def paired_differences(row: dict[str, Any], ref: dict[str, Any], col: str) -> list[float]:
    """``row`` minus its reference on metric ``col``, seed by seed (the seeds both have)."""
    mine, theirs = row.get("seed_metrics", {"-": row["metrics"]}), ref.get("seed_metrics", {"-": ref["metrics"]})
    return [mine[s][col] - theirs[s][col] for s in mine
            if s in theirs and mine[s].get(col) is not None and theirs[s].get(col) is not None]


def build_leaderboard(rows: dict[str, dict[str, Any]], protocols: Any) -> pd.DataFrame:
    """One row per encoder or baseline; per protocol a ``<protocol>/<metric>`` column (``top1``, or ``ppl`` for the
    language protocols; the mean over seeds) and ``..._ci95`` (half-width of the 95% interval of that mean; 0 with
    one seed). Language columns appear only when some row has a value for them. A run evaluated next to random init
    of its own encoder names that row in ``reference`` and gets ``<column> margin`` (+ ``_ci95``): its mean paired
    difference to it over seeds."""
    from ssl_tasks.evaluation.protocols import PROTOCOLS

    specs = [PROTOCOLS.get(p) for p in protocols]
    cols = [s.key for s in specs if s.kind in ("frozen", "finetune") or any(s.key in r["metrics"] for r in rows.values())]
    records = []
    for name, r in rows.items():
        rec = {"name": name, "dataset": r["dataset"], "kind": r["kind"], "objective": r["objective"],
               "encoder": r["encoder"], "collapsed": bool(r.get("collapsed", False)),
               "diverged": bool(r.get("diverged", False))}
        per_seed = list(r.get("seed_metrics", {"-": r["metrics"]}).values())
        rec["n_seeds"] = len(per_seed)
        for c in cols:
            vals = [m[c] for m in per_seed if m.get(c) is not None]
            rec[c], rec[f"{c}_ci95"] = mean_ci95(vals) if vals else (None, None)
        rec["mlflow_run_id"] = ",".join(r.get("mlflow_run_ids", [r["mlflow_run_id"]]))
        rec["reference"] = r.get("reference", "")
        ref = rows.get(rec["reference"])
        for c in cols if ref else ():
            diffs = paired_differences(r, ref, c)
            rec[f"{c} margin"], rec[f"{c} margin_ci95"] = mean_ci95(diffs) if diffs else (None, None)
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    df["_k"] = df["kind"].map(KIND_ORDER).fillna(9)
    sort_col = next((c for c in cols if c in df and df[c].notna().any()), "name")
    df = df.sort_values(["dataset", "_k", sort_col], ascending=[True, True, sort_col.endswith(PERPLEXITY)],
                        na_position="last").drop(columns="_k")
    return df.reset_index(drop=True)


def _cell(r: pd.Series, col: str) -> str:
    if pd.isna(r[col]):
        return "-"
    ci = r.get(f"{col}_ci95")
    return f"{r[col]:.4f} ± {ci:.4f}" if r.get("n_seeds", 1) > 1 and not pd.isna(ci) else f"{r[col]:.4f}"


def margin_markdown(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """The margin of each run over random init of its own encoder, as Markdown lines (none without references)."""
    margins = [c for c in cols if f"{c} margin" in df.columns]
    runs = df[df["reference"].astype(bool)] if "reference" in df.columns else df.iloc[:0]
    if runs.empty or not margins:
        return []
    lines = ["", "Margin over random init of each run's own encoder (same architecture and seed; paired by seed):", "",
             "| name | random init | " + " | ".join(margins) + " |", "|" + "---|" * (len(margins) + 2)]
    for _, r in runs.iterrows():
        vals = []
        for c in margins:
            m, ci = r[f"{c} margin"], r[f"{c} margin_ci95"]
            vals.append("-" if pd.isna(m) else f"{m:+.4f}" + (f" ± {ci:.4f}" if r.get("n_seeds", 1) > 1 else ""))
        lines.append(f"| {r['name']} | {r['reference']} | " + " | ".join(vals) + " |")
    return lines


def finetune_markdown(df: pd.DataFrame) -> list[str]:
    """``finetune/top1`` of each run beside that of its random-init row (the same architecture and seeds, fine-tuned
    with the identical budget: labels, epochs, views, schedule) and the paired margin, as Markdown lines (none when
    no run has a finetune value and a reference)."""
    if FINETUNE not in df.columns or "reference" not in df.columns:
        return []
    by_name = df.set_index("name")
    runs = df[df["reference"].astype(bool) & df[FINETUNE].notna()]
    runs = runs[[ref in by_name.index for ref in runs["reference"]]]
    if runs.empty:
        return []
    lines = ["", "Fine-tuning every parameter on every training label, pretrained vs from scratch at equal budget "
             "(the margin is what pretraining bought):", "",
             f"| name | {FINETUNE} | random init | {FINETUNE} of random init | margin |", "|---|---|---|---|---|"]
    for _, r in runs.iterrows():
        ref = by_name.loc[r["reference"]]
        m, ci = r.get(f"{FINETUNE} margin"), r.get(f"{FINETUNE} margin_ci95")
        margin = "-" if m is None or pd.isna(m) else f"{m:+.4f}" + (f" ± {ci:.4f}" if r.get("n_seeds", 1) > 1 else "")
        lines.append(f"| {r['name']} | {_cell(r, FINETUNE)} | {r['reference']} | {_cell(ref, FINETUNE)} | {margin} |")
    return lines


def to_markdown(df: pd.DataFrame, evaluation: Any) -> str:
    cols = metric_columns(df.columns)
    multi = "n_seeds" in df.columns and (df["n_seeds"] > 1).any()
    head = ["name", "dataset", "kind", "encoder", *(["seeds"] if multi else []), *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        vals = [_cell(r, h) if h in cols else str(r["n_seeds"] if h == "seeds" else r[h]) for h in head]
        if r.get("collapsed"):
            vals[0] += " (collapsed)"
        if r.get("diverged"):
            vals[0] += " (diverged)"
        lines.append("| " + " | ".join(vals) + " |")
    lines += margin_markdown(df, cols)
    lines += finetune_markdown(df)
    s = evaluation.settings
    lines.append("")
    if multi:
        lines.append("Rows with several seeds show the mean ± the half-width of its 95% Student-t interval.")
    lines.append(f"Protocols: knn = weighted k-NN (cosine, k={s.k}, T={s.temperature}); linear = linear probe on "
                 f"frozen features ({s.linear_epochs} epochs); semi_1pct / semi_10pct = fine-tuning the whole "
                 f"encoder on class-balanced 1% / 10% label subsets ({s.finetune_epochs} epochs, seed {s.seed}). "
                 "raw_pixels runs k-NN / linear on pixels and a linear classifier for the semi protocols.")
    if FINETUNE in cols:
        lines.append(f"finetune = fine-tuning the whole encoder on every training label with the same settings "
                     f"({s.finetune_epochs} epochs, batch {s.finetune_batch_size}, lr {s.finetune_lr}, the same views; "
                     "precise-BN where the encoder has batch norm); each run's random-init row is fine-tuned with "
                     "that identical budget, so its finetune/top1 margin is what pretraining bought over training "
                     "from scratch at equal cost (the supervised row, where listed, is a ceiling, not this "
                     "reference). raw_pixels: a linear classifier on every label.")
    if any(c.endswith(PERPLEXITY) for c in cols):
        lines.append("Text: raw_pixels is a bag of words (log counts of subword tokens); perplexity/ppl = held-out "
                     "next-token perplexity of a causal LM, pseudo_perplexity/ppl = masked-LM pseudo-perplexity "
                     "(lower is better; the unigram row is the token-frequency baseline).")
    if any(c.startswith(("zero_shot/", "retrieval/")) for c in cols):
        lines.append("Image-text: zero_shot/top1 = classification of held-out images from class-name prompts (a "
                     "prompt ensemble; labels only score); retrieval/r1 = recall@1 on held-out pairs, mean of "
                     "image->text and text->image (@5, @10 are in MLflow). Their raw_pixels row is the bag-of-words "
                     "baseline: an image takes the captions of its 5 pixel-nearest training images.")
    return "\n".join(lines) + "\n"


def axis_limits(values: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """A y range fitted to the bars and their error bars, inside [0, 1], so 0.95 vs 0.97 is visible."""
    ok = np.isfinite(values)
    if not ok.any():
        return 0.0, 1.0
    lo, hi = float(np.min(values[ok] - errors[ok])), float(np.max(values[ok] + errors[ok]))
    pad = max(0.01, 0.15 * (hi - lo))
    return max(0.0, lo - pad), min(1.0, hi + pad)


def metric_label(col: str) -> str:
    return "recall@1" if col.endswith(RECALL) else "top-1 accuracy"


def plot_leaderboard(df: pd.DataFrame, path: Path) -> None:
    """``leaderboard_figure`` written to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    from ssl_tasks.core.io import atomic_file

    fig = leaderboard_figure(df)
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def leaderboard_figure(df: pd.DataFrame) -> Any:
    """One panel per protocol (accuracy and recall columns; perplexities stay in the table) and dataset: a row of
    panels per protocol, a column per dataset, each panel holding that dataset's rows only, with a y range fitted
    to its own values (so points with error bars, not bars that would pretend the axis starts at 0; a second dataset
    at 0.6 does not flatten the 0.95-0.99 gaps of the first), every point labelled with its value to three
    decimals. Rows are coloured by kind, so SSL runs stand apart from their references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    cols = [c for c in df.columns if c.endswith((ACCURACY, RECALL)) and df[c].notna().any()]
    datasets = list(dict.fromkeys(df["dataset"])) if "dataset" in df.columns and len(df) else [""]
    parts = [df[df["dataset"] == d] if d else df for d in datasets]
    colours = {"ssl": "tab:blue", "random_init": "tab:gray", "raw_pixels": "tab:orange", "supervised": "tab:green"}
    n = max(1, len(cols))
    widths = [max(2, len(p)) for p in parts]
    fig, axes = plt.subplots(n, len(parts), figsize=(max(6, 0.9 * sum(widths) + 2 * len(parts)), 2.6 * n + 1.2),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for j, (dataset, part) in enumerate(zip(datasets, parts)):
        names = [str(x) for x in part["name"]]
        colour_of = [colours.get(k, "tab:purple") for k in part["kind"]]
        x = np.arange(len(names))
        for i, c in enumerate(cols):
            ax = axes[i, j]
            v = part[c].astype(float).to_numpy()
            err = (part[f"{c}_ci95"].astype(float).fillna(0).to_numpy() if f"{c}_ci95" in part.columns
                   else np.zeros_like(v))
            if err.any():
                ax.errorbar(x, v, yerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=3)
            ax.scatter(x, v, s=40, c=colour_of, zorder=3)  # points, not bars: the axis does not start at 0
            for xi, vi in zip(x, v):
                if np.isfinite(vi):
                    ax.annotate(f"{vi:.3f}", (xi, vi), ha="left", va="bottom", fontsize=7,
                                xytext=(4, 2), textcoords="offset points")
            ax.set_ylim(*axis_limits(v, err))
            if j == 0:
                ax.set_ylabel(metric_label(c), fontsize=8)
            ax.set_title(f"{dataset}: {c}" if dataset else c, fontsize=9, loc="left")
            ax.set_xticks(x, [] if i < n - 1 else names, rotation=25, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(names) - 0.5)
            ax.grid(axis="y", alpha=0.3)
    if not cols:
        axes[0, 0].text(0.5, 0.5, "no accuracy or recall columns", ha="center", transform=axes[0, 0].transAxes)
    kinds = [k for k in colours if k in set(df["kind"])]
    handles = [matplotlib.patches.Patch(color=colours[k], label=k) for k in kinds]
    if handles:
        axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.suptitle("SSL leaderboard (test split; each panel's y axis fitted to its own dataset)", fontsize=10)
    fig.tight_layout()
    return fig
