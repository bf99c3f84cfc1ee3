"""A generated speech corpus for tests: 16-bit WAV clips whose "digit" is two formants and whose "speaker" is a
pitch and a level, with a labels.csv as FSDD's (path, digit, speaker, split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

RATE = 8000
SPEAKERS = ("ann", "bob", "cid")
DIGITS = 3


def tone(digit: int, speaker: int, take: int, rate: int = RATE, seconds: float | None = None) -> np.ndarray:
    """A clip that says ``digit`` in ``speaker``'s voice: the digit's two formants, the speaker's pitch and level."""
    rng = np.random.default_rng([digit, speaker, take])
    n = int(rate * (seconds if seconds is not None else 0.25 + 0.05 * ((take + digit) % 4)))
    t = np.arange(n) / rate
    f1, f2 = 300 + 250 * digit, 1500 + 300 * digit
    pitch = 1.0 + 0.04 * speaker
    x = np.sin(2 * np.pi * f1 * pitch * t) + 0.5 * np.sin(2 * np.pi * f2 * pitch * t)
    x = x * np.hanning(n) * (0.3 + 0.1 * speaker) + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def write_corpus(root: Path, takes: int = 6, rate: int = RATE, digits: int = DIGITS) -> Path:
    """``root/clips/<digit>_<speaker>_<take>.wav`` (16-bit PCM) and ``root/labels.csv`` (path, digit, speaker,
    split: takes 0 and 1 are test, as FSDD's upstream rule)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for d in range(digits):
        for s, name in enumerate(SPEAKERS):
            for k in range(takes):
                rel = f"clips/{d}_{name}_{k}.wav"
                sf.write(root / rel, tone(d, s, k, rate), rate, subtype="PCM_16")
                rows.append({"path": rel, "digit": d, "speaker": name, "split": "test" if k < 2 else "train"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"
