"""wav2vec 2.0 and HuBERT pretraining on FSDD (spoken digits), probed with speakers held out.

    python bench/speech_pretrain.py --steps 150 --out bench/results/speech_fsdd_short.json

Data: the FSDD tar read in place with ``tarfile`` + ``soundfile`` (no extraction), resampled 8 kHz -> 16 kHz with
``torchaudio.functional.resample``, peak-normalised, cropped / zero-padded to 1 s (16,000 samples, 49 encoder
frames) with each clip's valid length kept (the encoder and the masks use it). Pretraining uses the upstream train
split (2,700 clips, every speaker; no labels); the probe is leave-one-speaker-out over all 3,000 clips (train a
linear probe on five speakers' utterance embeddings, test on the sixth; mean and spread over the six folds), so
pretraining has heard the held-out speaker's voice, never its labels.

HuBERT's iteration-1 targets are computed here, not by the speech-data branch's tokenizer stage (not merged when
this was written): 13 MFCCs + deltas + delta-deltas (39 dims; window 400, hop 320 at 16 kHz, ``center=False``, so
frame i covers the samples of encoder frame i), standardised, k-means with 100 clusters (scikit-learn
``MiniBatchKMeans``) fitted on the valid frames of the pretraining clips; -100 beyond a clip's valid frames.

Each objective trains ``--steps`` AdamW steps of ``--batch-size`` clips with this script's loop, which does what the
library's loop does per step (linear warm-up, cosine decay, ``objective.progress`` for the Gumbel schedule); the
random-init row is the same encoder at the same seed, untrained. Throughput is audio seconds per second of
training: valid audio (the clips' own lengths) and padded rows (1 s each). The MFCC mean + std row (78 dims,
logistic regression on the same folds) is the raw-input reference. The JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import ResultsFile, provenance  # noqa: E402  (bench/ is on sys.path when run as a script)

from ssl_tasks.core.config import build  # noqa: E402
from ssl_tasks.evaluation.linear_probe import linear_probe_top1, standardise  # noqa: E402
from ssl_tasks.modalities.speech.encoders import Wav2Vec2Encoder, frame_counts  # noqa: E402
from ssl_tasks.modalities.speech.frames import SpeechDataSpec, conv_frames  # noqa: E402
from ssl_tasks.objectives import OBJECTIVES  # noqa: E402

SR, SECONDS = 16000, 1.0


def load_fsdd(root: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """(8 kHz float32 waveforms, digit, speaker index, upstream split == 'train') from the tar and labels.csv."""
    import soundfile as sf

    rows = [ln.split(",") for ln in (root / "labels.csv").read_text().splitlines()[1:]]
    waves, digits, speakers, train = [], [], [], []
    names = sorted({r[2] for r in rows})
    with tarfile.open(root / "fsdd_recordings.tar") as tar:
        for r in rows:
            data, sr = sf.read(io.BytesIO(tar.extractfile(r[0]).read()), dtype="float32")
            if sr != 8000 or data.ndim != 1:
                raise ValueError(f"{r[0]}: expected mono 8 kHz, got {sr} Hz, shape {data.shape}")
            waves.append(data)
            digits.append(int(r[1]))
            speakers.append(names.index(r[2]))
            train.append(r[4] == "train")
    return waves, np.array(digits), np.array(speakers), np.array(train)


def prepare(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample to 16 kHz, peak-normalise, crop / zero-pad to 1 s -> (N, 16000) float32 and valid lengths (N,)."""
    import torchaudio.functional as AF

    n = int(SR * SECONDS)
    out, lengths = torch.zeros(len(waves), n), torch.zeros(len(waves), dtype=torch.long)
    for i, w in enumerate(waves):
        x = AF.resample(torch.from_numpy(w), 8000, SR)
        x = x / x.abs().max().clamp_min(1e-6)
        k = min(len(x), n)
        out[i, :k], lengths[i] = x[:k], k
    return out, lengths


def mfcc_frames(wave: torch.Tensor) -> torch.Tensor:
    """(N, T) -> (N, F, 39) MFCC + deltas + delta-deltas on the encoder's frame grid."""
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(sample_rate=SR, n_mfcc=13, melkwargs={
        "n_fft": 400, "win_length": 400, "hop_length": 320, "n_mels": 40, "center": False})
    m = torch.cat([mfcc(wave[i:i + 500]) for i in range(0, len(wave), 500)])  # (N, 13, F)
    d1 = torchaudio.functional.compute_deltas(m)
    d2 = torchaudio.functional.compute_deltas(d1)
    feats = torch.cat([m, d1, d2], dim=1).transpose(1, 2)  # (N, F, 39)
    assert feats.shape[1] == conv_frames(wave.shape[1]), feats.shape
    return feats


def kmeans_targets(feats: torch.Tensor, lengths: torch.Tensor, fit_rows: np.ndarray, k: int, seed: int
                   ) -> tuple[torch.Tensor, float]:
    """(N, F, 39) -> (N, F) cluster ids (-100 beyond valid frames), k-means fitted on ``fit_rows``' valid frames."""
    from sklearn.cluster import MiniBatchKMeans

    valid = torch.arange(feats.shape[1])[None] < frame_counts(lengths)[:, None]  # (N, F)
    fit = feats[torch.from_numpy(fit_rows)][valid[torch.from_numpy(fit_rows)]].numpy()
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit((fit - mean) / std)
    ids = km.predict(((feats.reshape(-1, feats.shape[-1]).numpy() - mean) / std).astype(np.float32))
    ids = torch.from_numpy(ids).long().view(feats.shape[:2])
    used = np.bincount(ids[valid].numpy(), minlength=k) / valid.sum().item()
    return ids.masked_fill(~valid, -100), float(np.exp(-(used[used > 0] * np.log(used[used > 0])).sum()))


def mfcc_stats(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, F, 39) -> (N, 78): mean and std over each clip's valid frames."""
    keep = (torch.arange(feats.shape[1])[None] < frame_counts(lengths).clamp_min(1)[:, None]).float()[..., None]
    n = keep.sum(1)
    mean = (feats * keep).sum(1) / n
    std = (((feats - mean[:, None]) ** 2 * keep).sum(1) / n).sqrt()
    return torch.cat([mean, std], dim=1)


@torch.no_grad()
def embed(encoder: torch.nn.Module, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(wave[i:i + 100], lengths[i:i + 100]) for i in range(0, len(wave), 100)])


def loso(feats: torch.Tensor, digits: np.ndarray, speakers: np.ndarray, seed: int) -> dict[str, object]:
    """Leave-one-speaker-out linear-probe digit accuracy: per held-out speaker, mean, std."""
    accs = []
    for s in range(int(speakers.max()) + 1):
        tr, te = torch.from_numpy(speakers != s), torch.from_numpy(speakers == s)
        a, b = standardise(feats[tr], feats[te])
        y = torch.from_numpy(digits)
        accs.append(linear_probe_top1(a, y[tr], b, y[te], num_classes=10, epochs=100, seed=seed))
    return {"loso_linear_mean": float(np.mean(accs)), "loso_linear_std": float(np.std(accs)),
            "loso_linear_per_speaker": [round(float(a), 4) for a in accs]}


def pretrain(name: str, kwargs: dict, enc_kwargs: dict, wave: torch.Tensor, lengths: torch.Tensor,
             targets: torch.Tensor | None, rows: np.ndarray, args: argparse.Namespace, seed: int
             ) -> tuple[torch.nn.Module, dict[str, object]]:
    torch.manual_seed(seed)
    cls = OBJECTIVES.get(name)
    spec = SpeechDataSpec(sample_rate=SR, num_samples=wave.shape[1], num_targets=args.clusters)
    obj = cls(Wav2Vec2Encoder(**enc_kwargs), build(cls.Config, kwargs, name), spec)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    warm = max(1, int(args.warmup * args.steps))
    log, sums, valid_s, t0 = [], {}, 0.0, time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * ((step + 1) / warm if step < warm else
                        0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, args.steps - warm))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        obj.progress = step / args.steps
        idx = torch.from_numpy(rows)[torch.randint(0, len(rows), (args.batch_size,), generator=g)]
        batch = (wave[idx], lengths[idx]) if targets is None else (wave[idx], lengths[idx], targets[idx])
        obj.train()
        res = obj(obj.make_views(batch, g))
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        valid_s += lengths[idx].sum().item() / SR
        for k, v in [("loss", res.loss.item()), *res.terms.items(), *res.report.items()]:
            sums[k] = sums.get(k, 0.0) + float(v)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step + 1) - (log[-1]["step"] if log else 0)
            log.append({"step": step + 1, "seconds": round(time.perf_counter() - t0, 1),
                        **{k: round(v / n, 4) for k, v in sums.items()}})
            sums = {}
            print(f"  {name} {log[-1]}", flush=True)
    dt = time.perf_counter() - t0
    stats = {"train_seconds": round(dt, 1), "steps": args.steps, "batch_size": args.batch_size,
             "audio_s_per_s_valid": round(valid_s / dt, 3),
             "audio_s_per_s_padded": round(args.steps * args.batch_size * SECONDS / dt, 3), "log": log}
    return obj.eval_encoder, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    ap.add_argument("--objectives", default="wav2vec2,hubert")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--encoder", default="{}", help="JSON kwargs of the wav2vec2 encoder (defaults otherwise)")
    ap.add_argument("--objective-kwargs", default="{}", help='JSON: {"wav2vec2": {...}, "hubert": {...}}')
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speech_fsdd_short.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc_kwargs, obj_kwargs = json.loads(args.encoder), json.loads(args.objective_kwargs)
    t0 = time.perf_counter()
    waves, digits, speakers, train = load_fsdd(Path(args.data))
    wave, lengths = prepare(waves)
    feats = mfcc_frames(wave)
    rows = np.flatnonzero(train)
    frames = frame_counts(lengths)
    prov = provenance(args)
    out: dict[str, object] = {
        "provenance": prov, "command": prov["command"], "commit": prov["commit"], "cpu": prov["cpu"],
        "threads": args.threads, "encoder_kwargs": enc_kwargs, "objective_kwargs": obj_kwargs,
        "data": {"clips": len(waves), "pretrain_clips": len(rows), "sample_rate": SR, "seconds": SECONDS,
                 "frames_min": int(frames.min()), "frames_max": int(frames.max()),
                 "frames_mean": round(float(frames.float().mean()), 2),
                 "cropped_clips": int(sum(len(w) * 2 > SR * SECONDS for w in waves)),
                 "prepare_seconds": round(time.perf_counter() - t0, 1)},
        "runs": {}}
    record = ResultsFile(args.out, out, "runs").record

    record("mfcc_mean_std", 0, loso(mfcc_stats(feats, lengths), digits, speakers, 0))
    targets, ppl = None, None
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        rand = Wav2Vec2Encoder(**enc_kwargs)
        record("random_init", seed, loso(embed(rand, wave, lengths), digits, speakers, seed))
        for name in args.objectives.split(","):
            if name == "hubert" and targets is None:
                targets, ppl = kmeans_targets(feats, lengths, rows, args.clusters, 0)
                out["data"]["kmeans_cluster_perplexity"] = round(ppl, 2)
            enc, stats = pretrain(name, obj_kwargs.get(name, {}), enc_kwargs, wave, lengths,
                                  targets if name == "hubert" else None, rows, args, seed)
            record(name, seed, {**loso(embed(enc, wave, lengths), digits, speakers, seed), **stats})


if __name__ == "__main__":
    main()
