"""The speech modality: the audio sources (folders, tars, tables; bad input), the waveform shards, the GX audio
suite, HuBERT's MFCC k-means targets, the feed, the speaker-held-out probes and the plug-in's evaluation and
baselines, on small corpora of generated WAVs (a tone per digit, a voice per speaker)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import speech_toy_encoder  # noqa: F401  (registers the test-only encoder toy_speech)
import torch
from helpers import validation_failure
from speech_corpus import RATE, SPEAKERS, tone, write_corpus

from ssl_tasks.core.errors import UserError
from ssl_tasks.core.modality import EvalContext, get_modality, open_dataset
from ssl_tasks.data.ingest import ingest
from ssl_tasks.evaluation.protocols import EvalConfig
from ssl_tasks.modalities.speech.feed import IGNORE, SpeechFeed, load_targets, needs_targets, peak_normalise
from ssl_tasks.modalities.speech.frames import SpeechDataSpec, conv_frames
from ssl_tasks.modalities.speech.probes import speech_protocols
from ssl_tasks.modalities.speech.sources import audio_folder, audio_table, crop
from ssl_tasks.modalities.speech.targets import SpeechTargetConfig, deltas, mfcc_frames, train_targets
from ssl_tasks.validation.gx_suite import ValidationConfig, validate_dataset

TABLE = {"label_column": "digit", "group_column": "speaker", "split_column": "split"}


def ctx(protocols: tuple[str, ...] = ("knn", "linear")) -> EvalContext:
    return EvalContext(protocols=protocols, settings=EvalConfig(k=5, finetune_epochs=2, finetune_batch_size=16),
                       finetune_views=None, zero_shot=None, seed=0, batch_size=16, say=lambda _line: None)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def speech_ds(corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    ingest("audio_table", corpus, out, options={**TABLE, "num_samples": 4000})
    return out


# --------------------------------------------------------------------------- sources


def test_audio_table_reads_labels_groups_the_upstream_split_and_resamples(corpus: Path) -> None:
    r = audio_table(corpus, test_fraction=0.2, split_seed=0, **TABLE, sample_rate=16000)
    assert r.label_names == ["0", "1", "2"] and r.group_names == list(SPEAKERS) and r.sample_rate == 16000
    assert {k: len(v.ids) for k, v in r.splits.items()} == {"test": 18, "train": 36}
    test = r.splits["test"]
    i = test.ids.index("clips/2_bob_1.wav")
    assert test.labels[i] == 2 and test.groups[i] == 1 and test.source_rate[i] == RATE
    n8 = len(tone(2, 1, 1))
    ingest("audio_table", corpus, corpus.parent / "ds16", options={**TABLE, "sample_rate": 16000})
    ds16 = open_dataset(corpus.parent / "ds16")
    assert ds16.manifest["source_sample_rate"] == RATE and ds16.band_limit == RATE / 2  # no sound above 4 kHz
    assert len(test.waves[i]) == 2 * n8 and r.num_samples == 2 * max(len(tone(d, s, k)) for d in range(3)
                                                                       for s in range(3) for k in range(6))
    from scipy.signal import resample_poly  # the resampler: the exact 2/1 polyphase filter

    ref = resample_poly(sf.read(corpus.parent / "clips/2_bob_1.wav", dtype="float32")[0], 2, 1)
    np.testing.assert_allclose(test.waves[i], ref, atol=1e-6)


def test_a_tar_root_gives_the_same_clips_as_the_folder(corpus: Path, tmp_path: Path) -> None:
    tar = tmp_path / "clips.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(corpus.parent / "clips", arcname="clips")
    a = audio_table(corpus, test_fraction=0.2, split_seed=0, **TABLE)
    b = audio_table(corpus, test_fraction=0.2, split_seed=0, **TABLE, root=str(tar))
    for s in a.splits:
        assert a.splits[s].ids == b.splits[s].ids
        assert all(np.array_equal(x, y) for x, y in zip(a.splits[s].waves, b.splits[s].waves))


def test_audio_folder_class_folders_flat_folders_and_tars(tmp_path: Path) -> None:
    for d in range(2):
        (tmp_path / "cls" / f"digit{d}").mkdir(parents=True)
        for k in range(5):
            sf.write(tmp_path / "cls" / f"digit{d}" / f"{k}.wav", tone(d, 0, k), RATE)
    r = audio_folder(tmp_path / "cls", test_fraction=0.4, split_seed=0)
    assert r.label_names == ["digit0", "digit1"] and r.info["layout"] == "class_folders"
    assert sorted(np.concatenate([s.labels for s in r.splits.values()]).tolist()) == [0] * 5 + [1] * 5
    assert [len(s.ids) for s in r.splits.values()] == [6, 4]  # stratified: 2 of each class to test
    with tarfile.open(tmp_path / "cls.tar", "w") as tf:
        tf.add(tmp_path / "cls", arcname="recordings")
    t = audio_folder(tmp_path / "cls.tar", test_fraction=0.4, split_seed=0)
    assert t.label_names == r.label_names and t.info["container"] == "tar"
    flat = audio_folder(tmp_path / "cls" / "digit0", test_fraction=0.4, split_seed=0)
    assert flat.label_names == [] and (flat.splits["train"].labels == -1).all()


def test_the_content_decides_the_decoder_not_the_extension(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    buf = io.BytesIO()
    sf.write(buf, tone(1, 0, 0), RATE, format="FLAC")
    (d / "flac_named.wav").write_bytes(buf.getvalue())  # FLAC bytes, a .wav name: read as FLAC
    sf.write(d / "real.flac", tone(1, 0, 0), RATE)
    r = audio_folder(d, test_fraction=0.5, split_seed=0)
    waves = {i: w for s in r.splits.values() for i, w in zip(s.ids, s.waves)}
    np.testing.assert_array_equal(waves["flac_named.wav"], waves["real.flac"])


@pytest.mark.parametrize("content, why", [
    (b"", "empty file"),
    (b"this is a text file, not audio\n" * 20, "not a decodable WAV or FLAC"),
    (None, "not a decodable WAV or FLAC"),  # a real WAV cut inside its header
])
def test_undecodable_files_fail_the_ingest_by_name_and_write_nothing(corpus: Path, tmp_path: Path, content: bytes | None,
                                                                      why: str) -> None:
    bad = corpus.parent / "clips" / "1_ann_3.wav"
    content = bad.read_bytes()[:30] if content is None else content
    bad.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=rf"1 of 54 audio files cannot be ingested: .*1_ann_3.wav: {why}"):
        ingest("audio_table", corpus, out, options=TABLE)
    assert not out.exists()


def test_24_bit_float_and_stereo_wavs_decode_to_the_same_clip(tmp_path: Path) -> None:
    x = tone(2, 1, 0)
    d = tmp_path / "formats"
    (d / "a").mkdir(parents=True)
    sf.write(d / "a" / "pcm16.wav", x, RATE, subtype="PCM_16")
    sf.write(d / "a" / "pcm24.wav", x, RATE, subtype="PCM_24")
    sf.write(d / "a" / "float.wav", x, RATE, subtype="FLOAT")
    sf.write(d / "a" / "stereo.wav", np.stack([x, x], axis=1), RATE, subtype="PCM_16")
    r = audio_folder(d / "a", test_fraction=0.25, split_seed=0)
    s = {i: (w, c) for sp in r.splits.values() for i, w, c in zip(sp.ids, sp.waves, sp.source_channels)}
    for name in ("pcm24.wav", "float.wav", "stereo.wav"):
        np.testing.assert_allclose(s[name][0], s["pcm16.wav"][0], atol=1.0 / 32768 + 1e-7)
    assert s["stereo.wav"][1] == 2 and s["pcm16.wav"][1] == 1
    with pytest.raises(UserError, match="stereo.wav: 2 channels; set the source option mono: true"):
        audio_folder(d / "a", test_fraction=0.25, split_seed=0, mono=False)


@pytest.mark.parametrize("path", ["../outside.wav", "/etc/passwd", "clips/../../outside.wav", "link/outside.wav"])
def test_a_table_path_cannot_leave_the_root(corpus: Path, tmp_path: Path, path: str) -> None:
    sf.write(tmp_path / "outside.wav", tone(0, 0, 0), RATE)
    os.symlink(tmp_path, corpus.parent / "link")  # a folder inside the root that points out of it
    table = pd.read_csv(corpus)
    table.loc[0, "path"] = path
    table.to_csv(corpus, index=False)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="(absolute or leaves the audio root|outside the audio root)"):
        ingest("audio_table", corpus, out, options=TABLE)
    assert not out.exists()


def test_fixed_length_crops_and_pads_and_loudest_keeps_the_word() -> None:
    x = np.zeros(1000, np.float32)
    x[100:200] = 1.0
    assert np.array_equal(crop(x, 300, "loudest"), x[:300])  # the earliest window holding all of it
    assert np.array_equal(crop(x, 100, "loudest"), x[100:200]) and crop(x, 100, "start").sum() == 0
    assert crop(x, 100, "center").sum() == 0 and len(crop(x, 2000, "center")) == 1000  # shorter: kept whole


def test_options_are_checked(corpus: Path) -> None:
    for opts, msg in (({"nope": 1}, "unknown option 'nope'"), ({"crop": "middle"}, "crop must be one of"),
                      ({"num_samples": 100, "max_seconds": 1.0}, "not both"), ({"sample_rate": 0}, "positive"),
                      ({"label_column": "digits"}, "has no column 'digits'")):
        with pytest.raises(UserError, match=msg):
            audio_table(corpus, test_fraction=0.2, split_seed=0, **opts)


def test_split_by_group_holds_whole_speakers_out(corpus: Path) -> None:
    r = audio_table(corpus, test_fraction=0.34, split_seed=0, label_column="digit", group_column="speaker",
                    split_by="group")
    train, test = set(r.splits["train"].groups), set(r.splits["test"].groups)
    assert len(test) == 1 and not train & test


# --------------------------------------------------------------------------- shards


def test_ingest_is_byte_identical_and_reads_back(corpus: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        ingest("audio_table", corpus, out, options={**TABLE, "num_samples": 4000})
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    ds = open_dataset(a)
    waves, labels = ds.load("train")
    assert waves.dtype == np.int16 and waves.shape == (36, 4000) and ds.num_samples == 4000
    lengths = ds.column("train", "lengths")
    assert (lengths <= 4000).all() and (waves[np.arange(4000)[None] >= lengths[:, None]] == 0).all()
    i = [c["id"] for c in ds.clips("train")].index("clips/1_cid_4.wav")
    ref = np.clip(np.rint(tone(1, 2, 4)[:4000].astype(np.float64) * 32767), -32768, 32767)
    src = sf.read(corpus.parent / "clips/1_cid_4.wav", dtype="float32")[0][:4000]
    np.testing.assert_allclose(waves[i, : len(src)], np.rint(src.astype(np.float64) * 32767), atol=1)
    assert len(ref) == lengths[i] and labels[i] == 1 and ds.column("train", "groups")[i] == 2
    ds.verify()
    np.save(a / ds.manifest["splits"]["train"]["shards"][0]["waves"], np.zeros((36, 4000), np.int16))
    with pytest.raises(UserError, match="does not match the sha256"):
        ds.verify()


def test_float16_storage(corpus: Path, tmp_path: Path) -> None:
    ingest("audio_table", corpus, tmp_path / "f", options={**TABLE, "dtype": "float16"})
    ds = open_dataset(tmp_path / "f")
    w = ds.column("test", "waves")
    assert w.dtype == np.float16 and ds.manifest["dtype"] == "float16"
    i = [c["id"] for c in ds.clips("test")].index("clips/0_ann_0.wav")
    src = sf.read(corpus.parent / "clips/0_ann_0.wav", dtype="float32")[0]
    np.testing.assert_allclose(w[i, : len(src)].astype(np.float32), src, atol=1e-3)


# --------------------------------------------------------------------------- validation


def test_a_clean_corpus_passes_the_audio_suite(speech_ds: Path, tmp_path: Path) -> None:
    cfg = ValidationConfig(sample_rate=RATE, channels=1, min_class_fraction=0.9, max_class_fraction=1.1,
                           max_cross_split_duplicates=0, shared_groups=True)
    report = validate_dataset(speech_ds, tmp_path / "r.json", config=cfg)
    assert report["success"] and report["audio"]["groups"] == 3 and report["audio"]["groups_in_two_splits"] == 3
    names = " ".join(e["name"] for e in report["expectations"])
    for what in ("finite samples", "clip duration", "clipping", "near-silent", "declared 8000 Hz", "channels == "
                 "declared 1", "class fraction", "duplicate a train clip"):
        assert what in names, what


def test_every_audio_check_names_its_failing_clips(corpus: Path, tmp_path: Path) -> None:
    clips = corpus.parent / "clips"
    sf.write(clips / "0_ann_2.wav", np.zeros((0,), np.float32), RATE)  # a valid header, no samples
    sf.write(clips / "0_ann_3.wav", tone(0, 0, 3, rate=16000), 16000)  # another rate than declared
    sf.write(clips / "0_ann_4.wav", np.stack([tone(0, 0, 4)] * 2, 1), RATE)  # stereo
    sf.write(clips / "1_bob_2.wav", np.clip(tone(1, 1, 2) * 20, -1, 1), RATE)  # clipped
    sf.write(clips / "1_bob_3.wav", tone(1, 1, 3) * 1e-4, RATE)  # near-silent
    (clips / "2_cid_0.wav").write_bytes((clips / "2_cid_5.wav").read_bytes())  # test clip == a train clip
    ds = tmp_path / "ds"
    ingest("audio_table", corpus, ds, options={**TABLE, "sample_rate": RATE})
    _, failed = validation_failure(ds, tmp_path, config=ValidationConfig(sample_rate=RATE, channels=1,
                                                                         max_cross_split_duplicates=0))

    def offenders(fragment: str) -> str:
        return json.dumps([e for n, e in failed.items() if fragment in n])

    assert "train/clips/0_ann_2.wav" in offenders("clip duration")
    assert "train/clips/0_ann_3.wav" in offenders("declared 8000 Hz")
    assert "train/clips/0_ann_4.wav" in offenders("channels == declared 1")
    assert "train/clips/1_bob_2.wav" in offenders("clipping")
    assert "train/clips/1_bob_3.wav" in offenders("near-silent")
    assert "test/clips/2_cid_0.wav" in offenders("duplicate a train clip")
    assert "test/clips/0_ann_0.wav" in offenders("no group (speaker)") and "ann" in offenders("no group (speaker)")


# --------------------------------------------------------------------------- MFCC k-means targets


def test_deltas_match_torchaudio() -> None:
    import torchaudio

    for shape in ((2, 13, 7), (13, 1), (4, 13, 2)):
        c = torch.randn(*shape)
        torch.testing.assert_close(deltas(c), torchaudio.functional.compute_deltas(c))


def test_mfcc_frames_are_exactly_the_encoders_frames() -> None:
    lengths = np.array([0, 399, 400, 719, 720, 4000, 3919])
    waves = np.zeros((len(lengths), 4000), np.int16)
    for i, n in enumerate(lengths):
        waves[i, :n] = (tone(1, 0, i, seconds=0.5)[:n] * 20000).astype(np.int16)
    frames = mfcc_frames(waves, lengths, RATE)
    assert [len(f) for f in frames] == [conv_frames(int(n)) for n in lengths] == [0, 0, 1, 1, 2, 12, 11]
    assert all(f.shape[1:] == (39,) for f in frames)
    alone = mfcc_frames(waves[6:7, :3919], np.array([3919]), RATE)[0]  # a clip's frames do not see its padding
    np.testing.assert_allclose(alone, frames[6], atol=1e-5)


def test_targets_are_fitted_on_train_only_deterministic_and_cover_every_split(speech_ds: Path, tmp_path: Path) -> None:
    cfg = SpeechTargetConfig(num_clusters=8, n_init=1)
    say = lambda _line: None  # noqa: E731
    s = train_targets(speech_ds, tmp_path / "t1", cfg, say)
    train_targets(speech_ds, tmp_path / "t2", cfg, say)
    for f in ("tokenizer.json", "targets/train.npy", "targets/test.npy"):
        assert (tmp_path / "t1" / f).read_bytes() == (tmp_path / "t2" / f).read_bytes(), f
    ds = open_dataset(speech_ds)
    t, k = load_targets(tmp_path / "t1", "train", ds)
    assert k == 8 and t.shape == (36, conv_frames(4000)) and s["frames_per_clip"] == conv_frames(4000)
    lengths = ds.column("train", "lengths")
    valid = np.arange(t.shape[1])[None] < np.array([conv_frames(int(n)) for n in lengths])[:, None]
    assert (t[valid] >= 0).all() and (t[valid] < 8).all() and (t[~valid] == IGNORE).all()
    assert s["train_frames"] == int(valid.sum())
    # the test split's clips do not move the centres: replace them and refit
    test_shard = speech_ds / ds.manifest["splits"]["test"]["shards"][0]["waves"]
    np.save(test_shard, np.random.default_rng(0).integers(-3000, 3000, np.load(test_shard).shape).astype(np.int16))
    train_targets(speech_ds, tmp_path / "t3", cfg, say)
    meta1, meta3 = (json.loads((tmp_path / d / "tokenizer.json").read_text()) for d in ("t1", "t3"))
    assert meta1["centres"] == meta3["centres"]
    assert np.array_equal(np.load(tmp_path / "t1/targets/train.npy"), np.load(tmp_path / "t3/targets/train.npy"))
    assert not np.array_equal(np.load(tmp_path / "t1/targets/test.npy"), np.load(tmp_path / "t3/targets/test.npy"))


def test_too_many_clusters_is_a_user_error_and_writes_nothing(speech_ds: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fewer than num_clusters 5000"):
        train_targets(speech_ds, tmp_path / "t", SpeechTargetConfig(num_clusters=5000), lambda _line: None)
    assert not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- feed


def test_the_feed_yields_the_contracts_batches(speech_ds: Path, tmp_path: Path) -> None:
    ds = open_dataset(speech_ds)
    train_targets(speech_ds, tmp_path / "tok", SpeechTargetConfig(num_clusters=8, n_init=1), lambda _line: None)
    targets, k = load_targets(tmp_path / "tok", "train", ds)
    feed = SpeechFeed(ds.column("train", "waves"), ds.column("train", "lengths"), targets,
                      SpeechDataSpec(RATE, 4000, k))
    batches = list(feed.epoch(batch_size=8, seed=0, epoch=0, rank=0, world_size=1))
    assert len(batches) == 4
    wave, lengths, tgt = batches[0]
    assert wave.dtype == np.float32 and wave.shape == (8, 4000) and lengths.dtype == np.int64
    assert tgt.shape == (8, conv_frames(4000)) and tgt.dtype == np.int64
    assert np.allclose(np.abs(wave).max(1), 1.0)  # each row peak-normalised
    assert all((wave[i, n:] == 0).all() for i, n in enumerate(lengths))
    again = next(iter(feed.epoch(batch_size=8, seed=0, epoch=0, rank=0, world_size=1)))
    other = next(iter(feed.epoch(batch_size=8, seed=0, epoch=1, rank=0, world_size=1)))
    assert all(np.array_equal(a, b) for a, b in zip(batches[0], again)) and not np.array_equal(other[0], wave)
    ranks = [np.concatenate([b[0] for b in feed.epoch(batch_size=4, seed=0, epoch=0, rank=r, world_size=2)])
             for r in range(2)]
    seen = {hashlib.sha1(row.tobytes()).hexdigest() for r in ranks for row in r}
    assert len(seen) == 32  # two ranks, disjoint rows
    plain = SpeechFeed(feed.waves, feed.lengths, None, SpeechDataSpec(RATE, 4000))
    assert len(next(iter(plain.epoch(batch_size=8, seed=0, epoch=0, rank=0, world_size=1)))) == 2


def test_needs_targets_and_the_modality_hook() -> None:
    class Hubert:
        needs_targets = True

    class W2V:
        pass

    m = get_modality("speech")
    assert needs_targets(Hubert) and m.needs_tokenizer(Hubert) and not m.needs_tokenizer(W2V)
    z = peak_normalise(np.array([[100, -200, 50, 7]], np.int16), np.array([3]))
    np.testing.assert_allclose(z, [[0.5, -1.0, 0.25, 0.0]])


# --------------------------------------------------------------------------- probes, evaluation and baselines


def test_speaker_held_out_probes_score_separable_data_high_and_shuffled_labels_at_chance() -> None:
    rng = np.random.default_rng(0)
    n, k, g = 600, 5, 6
    y, groups = rng.integers(0, k, n), rng.integers(0, g, n)
    centres = rng.normal(size=(k, 16)) * 4
    f = centres[y] + rng.normal(size=(n, 16)) + rng.normal(size=(g, 16))[groups]  # a per-speaker offset too
    is_test = rng.random(n) < 0.2
    m = speech_protocols(f, y, groups, is_test, ["knn", "linear"], k)
    assert m["linear/top1"] > 0.95 and m["knn/top1"] > 0.95 and m["linear/upstream_top1"] > 0.95
    assert 0 <= m["linear/loso_std"] < 0.05 and m["linear/loso_min"] <= m["linear/top1"]
    shuffled = speech_protocols(f, rng.permutation(y), groups, is_test, ["knn", "linear"], k)
    assert abs(shuffled["linear/top1"] - 1 / k) < 0.08 and abs(shuffled["knn/top1"] - 1 / k) < 0.08


def test_evaluation_and_baselines_on_the_plugin(speech_ds: Path) -> None:
    from ssl_tasks.pipeline.params import BaselineParams

    m = get_modality("speech")
    ds = m.open(speech_ds)
    torch.manual_seed(0)
    enc = m.build_encoder("toy_speech", {"channels": 8, "out_dim": 16}, m.encoder_meta(ds, None))
    metrics, subsets, samples = m.evaluate(ctx(("knn", "linear", "semi_10pct")), enc, ds, {}, speech_ds, "r")
    assert samples == [] and set(subsets) == {"semi_10pct"} and len(subsets["semi_10pct"]) == 3  # one per class
    for key in ("knn/top1", "linear/top1", "linear/loso_std", "linear/loso_min", "linear/upstream_top1",
                "knn/upstream_top1", "semi_10pct/top1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    cfg = BaselineParams(encoder="toy_speech", encoder_kwargs={"channels": 8, "out_dim": 16},
                         include=("raw_pixels", "supervised"), supervised_epochs=1)
    specs = m.baselines(ds, cfg, ("knn", "linear"))
    assert [(s.kind, s.name, s.encoder_name) for s in specs] == [("raw_pixels", "mfcc_stats", "toy_speech"),
                                                                 ("supervised", "supervised", "toy_speech")]
    mfcc = m.run_baseline(ctx(("knn", "linear", "semi_10pct")), specs[0], ds, Path(), cfg, "mfcc")
    assert mfcc.encoder is None and mfcc.metrics["linear/top1"] > 0.9  # each digit is its own pair of tones
    sup = m.run_baseline(ctx(), specs[1], ds, Path(), cfg, "sup")
    assert sup.encoder is not None and {"linear/top1", "knn/top1", "linear/upstream_top1"} <= set(sup.metrics)
    with pytest.raises(UserError, match="does not encode speech"):
        m.build_encoder("small_cnn", {}, {})


def test_iteration_two_clusters_a_pretrained_encoders_frames(speech_ds: Path, tmp_path: Path) -> None:
    from ssl_tasks.core.io import write_json_atomic

    torch.manual_seed(0)
    enc = speech_toy_encoder.ToySpeechEncoder(channels=8, out_dim=16)
    ckpt = tmp_path / "pretrain" / "seed-0"
    ckpt.mkdir(parents=True)
    torch.save(enc.state_dict(), ckpt / "encoder.pt")
    write_json_atomic(ckpt / "meta.json", {"encoder": "toy_speech", "encoder_kwargs": {"channels": 8, "out_dim": 16}})
    cfg = SpeechTargetConfig(num_clusters=6, n_init=1, checkpoint=str(ckpt), layer=1)
    s = train_targets(speech_ds, tmp_path / "it2", cfg, lambda _line: None)
    ds = open_dataset(speech_ds)
    t, k = load_targets(tmp_path / "it2", "test", ds)
    lengths = ds.column("test", "lengths")
    assert s["tokenizer"] == "encoder_kmeans" and k == 6
    assert ((t >= 0).sum(1) == [conv_frames(int(n)) for n in lengths]).all()
    meta = json.loads((tmp_path / "it2" / "tokenizer.json").read_text())
    assert meta["dim"] == 16 and "layer 1 of" in meta["features"]
    with pytest.raises(UserError, match="pretrain that run first"):
        train_targets(speech_ds, tmp_path / "it2b", SpeechTargetConfig(checkpoint=str(tmp_path / "nope")),
                      lambda _line: None)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        SpeechTargetConfig(layer=2)
