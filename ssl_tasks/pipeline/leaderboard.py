"""The leaderboard table, its Markdown and its bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

KIND_ORDER = {"ssl": 0, "random_init": 1, "raw_pixels": 2, "supervised": 3}


def build_leaderboard(rows: dict[str, dict[str, Any]], protocols: Any) -> pd.DataFrame:
    """One row per encoder or baseline; one ``<protocol>/top1`` column per protocol."""
    cols = [f"{p}/top1" for p in protocols]
    records = []
    for name, r in rows.items():
        rec = {"name": name, "dataset": r["dataset"], "kind": r["kind"], "objective": r["objective"],
               "encoder": r["encoder"], "collapsed": bool(r.get("collapsed", False))}
        rec.update({c: r["metrics"].get(c) for c in cols})
        rec["mlflow_run_id"] = r["mlflow_run_id"]
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    df["_k"] = df["kind"].map(KIND_ORDER).fillna(9)
    sort_col = cols[0] if cols else "name"
    df = df.sort_values(["dataset", "_k", sort_col], ascending=[True, True, False]).drop(columns="_k")
    return df.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, evaluation: Any) -> str:
    cols = [c for c in df.columns if c.endswith("/top1")]
    head = ["name", "dataset", "kind", "encoder", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        vals = [str(r[h]) if not h.endswith("/top1") else ("-" if pd.isna(r[h]) else f"{r[h]:.4f}") for h in head]
        if r.get("collapsed"):
            vals[0] += " (collapsed)"
        lines.append("| " + " | ".join(vals) + " |")
    s = evaluation.settings
    lines.append("")
    lines.append(f"Protocols: knn = weighted k-NN (cosine, k={s.k}, T={s.temperature}); linear = linear probe on "
                 f"frozen features ({s.linear_epochs} epochs); semi_1pct / semi_10pct = fine-tuning the whole "
                 f"encoder on class-balanced 1% / 10% label subsets ({s.finetune_epochs} epochs, seed {s.seed}). "
                 "raw_pixels runs k-NN / linear on pixels and a linear classifier for the semi protocols.")
    return "\n".join(lines) + "\n"


def plot_leaderboard(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ssl_tasks.core.io import atomic_file

    cols = [c for c in df.columns if c.endswith("/top1")]
    names = [f"{n}" for n in df["name"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    x = np.arange(len(names))
    w = 0.8 / max(1, len(cols))
    for i, c in enumerate(cols):
        ax.bar(x + i * w - 0.4 + w / 2, df[c].astype(float).fillna(0), w, label=c)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("top-1 accuracy (test split)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("SSL leaderboard")
    fig.tight_layout()
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
