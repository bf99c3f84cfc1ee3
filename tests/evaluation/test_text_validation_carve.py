"""bench/text_quality.carve_validation: the SST-2 validation carve leaks no sub-phrase into the probe's training part."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # text_quality imports its sibling provenance.py
_spec = importlib.util.spec_from_file_location("bench_text_quality", ROOT / "bench" / "text_quality.py")
tq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tq)

# Two "sentences" with their parse-tree phrases, as SST-2 stores them, plus a third sentence and a duplicate.
PHRASES = [
    "a good film .", "a good film", "good film", "good", "film", "a",
    "the film is not good", "is not good", "not good", "the film",
    "goodness knows",
    "a good film .",  # the same sentence twice
]


def _runs(text: str) -> set[str]:
    w = text.split()
    return {" ".join(w[a:b]) for a in range(len(w)) for b in range(a + 1, len(w) + 1)}


@pytest.mark.parametrize("seed", range(6))
def test_no_probe_phrase_is_a_run_of_words_of_a_validation_phrase(seed):
    probe, val, counts = tq.carve_validation(PHRASES, 1, seed)
    assert len(val) == 1
    v = PHRASES[val[0]]
    assert v in ("a good film .", "the film is not good", "goodness knows")  # a maximal phrase, never a sub-phrase
    for i in probe:
        assert PHRASES[i] not in _runs(v), (PHRASES[i], v)
    assert counts["maximal_phrases"] == 3
    assert counts["probe_train"] == len(probe)
    assert counts["probe_train"] + counts["validation"] + counts["removed_from_probe_train"] == len(PHRASES)
    assert set(probe.tolist()).isdisjoint(val.tolist())


def test_removal_is_by_whole_words_and_keeps_unrelated_phrases():
    for seed in range(50):  # find the seed that draws "goodness knows"
        probe, val, counts = tq.carve_validation(PHRASES, 1, seed)
        if PHRASES[val[0]] == "goodness knows":
            break
    else:
        pytest.fail("no seed drew 'goodness knows'")
    kept = {PHRASES[i] for i in probe}
    assert "good" in kept  # a substring of "goodness", but not a word of it
    assert "goodness knows" not in kept
    assert counts["removed_from_probe_train"] == 0
    probe, val, counts = tq.carve_validation(PHRASES, 1, next(s for s in range(50) if PHRASES[
        tq.carve_validation(PHRASES, 1, s)[1][0]] == "a good film ."))
    kept = {PHRASES[i] for i in probe}
    # every sub-phrase of "a good film ." goes, the duplicate sentence too; the other sentences' phrases stay
    assert kept == {"the film is not good", "is not good", "not good", "the film", "goodness knows"}
    assert counts["removed_from_probe_train"] == 6


def test_the_carve_is_seeded_and_checks_its_size():
    assert tq.carve_validation(PHRASES, 2, 3)[1].tolist() == tq.carve_validation(PHRASES, 2, 3)[1].tolist()
    with pytest.raises(ValueError, match="exceeds the 3 maximal"):
        tq.carve_validation(PHRASES, 4, 0)
    with pytest.raises(ValueError, match=">= 1"):
        tq.carve_validation(PHRASES, 0, 0)
