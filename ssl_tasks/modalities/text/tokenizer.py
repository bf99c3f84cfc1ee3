"""The subword tokenizer the pipeline trains on each text dataset (the ``tokenizer@<dataset>`` stage).

Byte-level BPE (Radford et al. 2019, GPT-2; Sennrich et al. 2016) from Hugging Face ``tokenizers``: every
string encodes without an unknown token and decodes back exactly, which generated samples and span
corruption's reconstruction rely on. The special tokens every text objective needs come first, with fixed
ids: ``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, then T5's sentinels ``<extra_id_0>`` ... .
The file is the library's own JSON (``tokenizer.json``): no pickle, safe to load from anywhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ssl_tasks.core.errors import UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
BASE_SPECIALS = (PAD, UNK, CLS, SEP, MASK)


def sentinel(i: int) -> str:
    """T5's i-th span sentinel."""
    return f"<extra_id_{i}>"


def train_text_tokenizer(texts: Iterable[str], out: Path, *, vocab_size: int = 4096, num_sentinels: int = 32,
                         min_frequency: int = 2, lowercase: bool = False) -> dict[str, Any]:
    """Train byte-level BPE on ``texts``; write ``out`` (tokenizer.json) and return a summary.

    Deterministic: one thread (``RAYON_NUM_THREADS=1`` for the duration) and a fixed input order give a
    byte-identical file on every run.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 300:  # 256 byte symbols + specials: smaller cannot hold the alphabet
        raise UserError(f"tokenizer vocab_size must be >= 300 (the 256 bytes plus specials), got {vocab_size}")
    if not 0 <= num_sentinels <= 1000:
        raise UserError(f"tokenizer num_sentinels must be in [0, 1000], got {num_sentinels}")
    specials = [*BASE_SPECIALS, *(sentinel(i) for i in range(num_sentinels))]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.perf_counter()
    n_texts = 0

    def counted() -> Iterable[str]:
        nonlocal n_texts
        for t in texts:
            n_texts += 1
            yield t

    old = os.environ.get("RAYON_NUM_THREADS")
    os.environ["RAYON_NUM_THREADS"] = "1"
    try:
        tok.train_from_iterator(counted(), trainer=trainer)
    finally:
        if old is None:
            os.environ.pop("RAYON_NUM_THREADS", None)
        else:
            os.environ["RAYON_NUM_THREADS"] = old
    if n_texts == 0:
        raise UserError("cannot train a tokenizer on an empty corpus")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tok.to_str(pretty=False), encoding="utf-8")
    t = TextTokenizer.load(out)
    return {"kind": "byte_level_bpe", "vocab_size": t.vocab_size, "requested_vocab_size": vocab_size,
            "num_sentinels": num_sentinels, "lowercase": lowercase, "min_frequency": min_frequency,
            "texts": n_texts, "seconds": round(time.perf_counter() - t0, 2)}


class TextTokenizer:
    """Ids of the special tokens plus batch encode/decode; encoding never adds specials by itself."""

    def __init__(self, tok: Any, path: Path | None = None) -> None:
        self.tok, self.path = tok, path
        ids = {s: tok.token_to_id(s) for s in BASE_SPECIALS}
        missing = [s for s, i in ids.items() if i is None]
        if missing:
            raise UserError(f"tokenizer {path} lacks the special tokens {missing}; train it with ssl-tasks tokenizer")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[s] for s in BASE_SPECIALS)
        self.sentinel_ids: list[int] = []
        while (i := tok.token_to_id(sentinel(len(self.sentinel_ids)))) is not None:
            self.sentinel_ids.append(i)
        self.special_ids = frozenset([*ids.values(), *self.sentinel_ids])
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def load(cls, path: Path | str) -> TextTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} does not exist; run the tokenizer stage (dvc repro) first")
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return cls(Tokenizer.from_file(str(path)), path)
        except (ValueError, Exception) as e:  # tokenizers raises plain Exception on a malformed file
            if isinstance(e, UserError):
                raise
            raise UserError(f"tokenizer file {path} is not a valid tokenizer.json: {str(e)[:200]}") from None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no specials added."""
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_words(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of each text and, per token, the index of the word it belongs to (0, 1, ...)."""
        enc = self.tok.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in enc], [[-1 if w is None else w for w in e.word_ids] for e in enc]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def token(self, i: int) -> str:
        return self.tok.id_to_token(int(i))
