"""The text modality's stage work: tokenizer training, token rows for evaluation, LM metrics, the unigram baseline.

``modality.TextModality`` calls these; everything else (Ray Train, MLflow, the atomic outputs, the leaderboard) is
the pipeline's and shared with every modality.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_tasks.core.io import atomic_dir, write_json_atomic
from ssl_tasks.evaluation.protocols import PROTOCOLS
from ssl_tasks.modalities.text.batching import make_rows
from ssl_tasks.modalities.text.shards import TextDataset
from ssl_tasks.modalities.text.tokenizer import TextTokenizer, train_text_tokenizer

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LEN = 64


def train_tokenizer_stage(data_dir: Path, out_dir: Path, t: Any) -> dict[str, Any]:
    """Byte-level BPE over the training split's texts: ``tokenizer.json`` + ``summary.json`` (atomically)."""
    from ssl_tasks.core.modality import open_dataset

    ds = open_dataset(data_dir)  # a text dataset, or the captions of an image-text dataset
    with atomic_dir(out_dir) as tmp:
        summary = train_text_tokenizer(ds.iter_texts("train"), tmp / TOKENIZER_FILE, vocab_size=t.vocab_size,
                                       num_sentinels=t.num_sentinels, min_frequency=t.min_frequency,
                                       lowercase=t.lowercase)
        tok = TextTokenizer.load(tmp / TOKENIZER_FILE)
        lengths = [len(s) for s in tok.encode(list(ds.iter_texts("train"))[:5000])]
        summary["mean_tokens_per_text"] = round(float(np.mean(lengths)), 2) if lengths else 0.0
        summary["p95_tokens_per_text"] = int(np.percentile(lengths, 95)) if lengths else 0
        write_json_atomic(tmp / "summary.json", summary)
    return summary


def token_rows(ds: TextDataset, tok: TextTokenizer, split: str, layout: str, max_len: int) -> np.ndarray:
    texts, _ = ds.load(split)
    return make_rows(tok.encode(texts), layout, max_len, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)


def labelled_rows(ds: TextDataset, tok: TextTokenizer, max_len: int) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                              tuple[np.ndarray, np.ndarray]]:
    """(rows, labels) of train and test: one padded sentence per row, what every classification protocol sees."""
    out = []
    for split in ("train", "test"):
        texts, labels = ds.load(split)
        rows = make_rows(tok.encode(texts), "pad", max_len, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)
        out.append((rows, labels))
    return out[0], out[1]


def is_labelled(ds: TextDataset) -> bool:
    return ds.num_classes > 0 and all(ds.manifest["splits"][s]["labeled"] == ds.count(s) for s in ("train", "test"))


def language_metrics(meta: dict[str, Any], pretrain_dir: Path, ds: TextDataset, protocols: Any, *,
                     say: Any, device: str = "cpu") -> tuple[dict[str, float], list[str]]:
    """Perplexity (causal LM) or pseudo-perplexity (MLM) on the held-out packed rows, and generated samples."""
    from ssl_tasks.evaluation.language import causal_perplexity, pseudo_perplexity, sample_texts
    from ssl_tasks.modalities.text.encoders import build_text_encoder
    from ssl_tasks.objectives import OBJECTIVES, TextDataSpec
    from ssl_tasks.training.config import objective_config_from

    wanted = [p for p in protocols if PROTOCOLS.get(p).kind == "language"]
    objective = meta["objective"]
    applies = {"perplexity": objective == "causal_lm", "pseudo_perplexity": objective == "mlm"}
    todo = [p for p in wanted if applies.get(p)]
    if not todo:
        return {}, []
    tok = TextTokenizer.load(pretrain_dir / TOKENIZER_FILE)
    max_len = int(meta["encoder_kwargs"].get("max_len", DEFAULT_MAX_LEN))
    rows = token_rows(ds, tok, "test", "pack", max_len)
    spec = TextDataSpec(vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id,
                        mask_id=tok.mask_id, sentinel_ids=tuple(tok.sentinel_ids),
                        special_ids=tuple(sorted(tok.special_ids)), seq_len=max_len)
    cls = OBJECTIVES.get(objective)
    obj = cls(build_text_encoder(meta["encoder"], tok.vocab_size, tok.pad_id, **meta["encoder_kwargs"]),
              objective_config_from(meta), spec)
    obj.load_state_dict(torch.load(pretrain_dir / "objective.pt", map_location="cpu", weights_only=True))
    obj.to(device)
    metrics: dict[str, float] = {}
    samples: list[str] = []
    for p in todo:
        t0 = time.perf_counter()
        if p == "perplexity":
            metrics["perplexity/ppl"] = causal_perplexity(obj.encoder, rows, pad_id=tok.pad_id, device=device)
            prompts = [s[:8] for s in tok.encode(ds.load("test")[0][:5]) if len(s) >= 8]
            samples = [tok.decode(s) for s in sample_texts(obj.encoder, prompts, max_new_tokens=40,
                                                           stop_id=tok.sep_id, device=device)]
        else:
            metrics["pseudo_perplexity/ppl"] = pseudo_perplexity(obj, rows, special_ids=tok.special_ids,
                                                                 mask_id=tok.mask_id, device=device)
        say(f"{p}: {metrics[PROTOCOLS.get(p).key]:.2f} over {len(rows)} held-out rows of {max_len} tokens "
            f"({time.perf_counter() - t0:.0f} s)")
    return metrics, samples


def unigram_row(ds: TextDataset, tokenizer_path: Path, max_len: int) -> dict[str, float]:
    from ssl_tasks.evaluation.language import unigram_perplexity

    tok = TextTokenizer.load(tokenizer_path)
    train, test = (token_rows(ds, tok, s, "pack", max_len) for s in ("train", "test"))
    return {"perplexity/ppl": unigram_perplexity(train, test, vocab_size=tok.vocab_size, pad_id=tok.pad_id)}
