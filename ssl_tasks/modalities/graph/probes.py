"""Node-classification protocols on a frozen graph encoder (or raw features), on the dataset's node splits.

* ``linear``: multinomial logistic regression (scikit-learn, L-BFGS) on the embeddings of the ``train`` nodes,
  standardised with train statistics; the inverse regularisation ``C`` is chosen on the ``val`` nodes from a
  log-spaced grid, and the ``test`` accuracy at that ``C`` is reported (DGI / GraphMAE protocol on the public
  Cora split: 140 / 500 / 1000 nodes).
* ``knn``: the library's weighted k-NN (cosine, ``exp(sim / T)`` votes) from train to test nodes.

Embeddings come from one full-graph forward pass of the encoder in eval mode (dropout off).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))


@torch.no_grad()
def node_embeddings(encoder: nn.Module, features: np.ndarray, edge_index: np.ndarray,
                    device: str | torch.device = "cpu") -> np.ndarray:
    was = encoder.training
    encoder.eval().to(device)
    h = encoder(torch.from_numpy(features).to(device), torch.from_numpy(edge_index).to(device))
    encoder.train(was)
    return h.float().cpu().numpy()


def logistic_probe(emb: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray,
                   grid: Sequence[float] = C_GRID) -> dict[str, float]:
    """Fit on ``train``, pick C by ``val`` accuracy (ties: the smaller C), report ``test`` accuracy at that C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(emb[train])
    z = scaler.transform(emb).astype(np.float64)
    best = (-1.0, 0.0, float("nan"))
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=c, max_iter=2000).fit(z[train], labels[train])
        val_acc = float((clf.predict(z[val]) == labels[val]).mean()) if len(val) else 0.0
        if val_acc > best[0]:
            best = (val_acc, c, float((clf.predict(z[test]) == labels[test]).mean()))
    return {"val_top1": best[0], "C": best[1], "top1": best[2]}


def knn_probe(emb: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, num_classes: int, k: int,
              temperature: float) -> float:
    from ssl_tasks.evaluation.knn import knn_top1

    t = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(labels).long()
    return float(knn_top1(t[train], y[train], t[test], y[test], num_classes=num_classes, k=min(k, len(train)),
                          temperature=temperature))


def node_protocols(emb: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray], protocols: Sequence[str],
                   num_classes: int, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """``linear/top1`` and ``knn/top1`` (those named in ``protocols``) on the train / val / test nodes."""
    train, test = splits["train"], splits["test"]
    val = splits.get("val", train)
    out: dict[str, float] = {}
    if "linear" in protocols:
        out["linear/top1"] = logistic_probe(emb, labels, train, val, test)["top1"]
    if "knn" in protocols:
        out["knn/top1"] = knn_probe(emb, labels, train, test, num_classes, k, temperature)
    return out


def train_supervised_gnn(encoder: nn.Module, features: np.ndarray, edge_index: np.ndarray, labels: np.ndarray,
                         train: np.ndarray, val: np.ndarray, num_classes: int, *, epochs: int = 200,
                         lr: float = 0.01, weight_decay: float = 5e-4, dropout: float = 0.5,
                         seed: int = 0) -> tuple[nn.Module, float]:
    """The supervised ceiling: the encoder + a linear head trained on the train nodes' labels (full batch, Adam,
    dropout on the embeddings); the encoder weights of the epoch with the best val accuracy are kept. Returns the
    encoder and that val accuracy."""
    import copy

    torch.manual_seed(seed)
    head = nn.Linear(encoder.out_dim, num_classes)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    x, ei = torch.from_numpy(features), torch.from_numpy(edge_index)
    y = torch.from_numpy(labels).long()
    tr, va = torch.from_numpy(train), torch.from_numpy(val)
    best, state = -1.0, copy.deepcopy(encoder.state_dict())
    for _ in range(epochs):
        encoder.train()
        head.train()
        logits = head(nn.functional.dropout(encoder(nn.functional.dropout(x, dropout), ei), dropout))
        loss = nn.functional.cross_entropy(logits[tr], y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        encoder.eval()
        head.eval()
        with torch.no_grad():
            acc = float((head(encoder(x, ei))[va].argmax(1) == y[va]).float().mean())
        if acc > best:
            best, state = acc, copy.deepcopy(encoder.state_dict())
    encoder.load_state_dict(state)
    return encoder, best
