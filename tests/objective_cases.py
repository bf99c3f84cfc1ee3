"""Per-objective settings shared by the contract and DDP tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ssl_tasks.objectives import DataSpec, PairDataSpec, TextDataSpec


@dataclass(frozen=True)
class Case:
    """How the contract tests build one objective: small kwargs, the encoder it runs with, the data it fits."""

    objective_kwargs: dict = field(default_factory=dict)
    encoder: str = "small_cnn"
    encoder_kwargs: dict = field(default_factory=lambda: {"width": 8})
    colour: bool = False  # True: 3-channel data (the colour fixture) instead of grayscale digits
    text: bool = False  # True: token ids (the SST-2 text fixture and its tokenizer)
    pair: bool = False  # True: (images, captions) batches (the clip-art pair fixture and its caption tokenizer)
    graph: bool = False  # True: (features, edge_index) of a whole graph (the 60-node graph fixture)
    speech: bool = False  # True: (wave, lengths[, targets]) batches of synthetic waveforms (in memory only, for now)
    video: bool = False  # True: uint8 clips (B, T, C, H, W) (in memory: 4 frames of 1 x 8 x 8)


TINY_VIT = {"patch_size": 2, "width": 32, "depth": 2, "heads": 2}
TINY_TEXT = {"max_len": 16, "width": 32, "depth": 1, "heads": 2}
TINY_SPEECH = {"conv_channels": 16, "dim": 32, "depth": 2, "heads": 2, "pos_groups": 4}
TINY_VIDEO = {"tubelet": 2, "patch_size": 4, "width": 32, "depth": 2, "heads": 2}
# Every registered objective must have a case here (test_every_objective_has_a_case); the default is fine for most.
CASES: dict[str, Case] = {
    "rotation": Case(), "relative_position": Case(), "jigsaw": Case(), "colorization": Case(colour=True),
    "simclr": Case(), "byol": Case(), "simsiam": Case(), "barlow_twins": Case(), "vicreg": Case(),
    "moco_v2": Case({"queue_size": 64}),
    "moco_v3": Case(encoder="vit", encoder_kwargs=TINY_VIT),
    "mae": Case({"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder="vit", encoder_kwargs=TINY_VIT),
    "ijepa": Case({"pred_width": 16, "pred_depth": 1, "pred_heads": 2}, encoder="vit",
                  encoder_kwargs={**TINY_VIT, "pool": "mean"}),
    "dino": Case({"num_prototypes": 64, "hidden_dim": 64, "bottleneck_dim": 32, "crops": {"local_crops": 2}}),
    "beit": Case({"tokenizer": ""}, encoder="vit", encoder_kwargs=TINY_VIT),  # path set by the `name` fixture
    "mlm": Case(encoder="text_transformer", encoder_kwargs=TINY_TEXT, text=True),
    "causal_lm": Case(encoder="causal_transformer", encoder_kwargs=TINY_TEXT, text=True),
    # as configs/text.yaml runs it: RoPE (encoder and decoder), a window, embed_norm; learned is tested elsewhere
    "span_corruption": Case(encoder="seq2seq_transformer",
                            encoder_kwargs={**TINY_TEXT, "position": "rope", "window": 2, "embed_norm": True},
                            text=True),
    "simcse": Case(encoder="text_transformer", encoder_kwargs=TINY_TEXT, text=True),
    "clip": Case({"text_encoder_kwargs": TINY_TEXT, "embed_dim": 16}, pair=True),
    "siglip": Case({"text_encoder_kwargs": TINY_TEXT, "embed_dim": 16}, pair=True),
    "dgi": Case(encoder="gcn", encoder_kwargs={"hidden": 16}, graph=True),
    "graphcl": Case(encoder="gcn", encoder_kwargs={"hidden": 16}, graph=True),
    "graphmae": Case(encoder="gat", encoder_kwargs={"hidden": 16, "heads": 2}, graph=True),
    "wav2vec2": Case({"num_negatives": 10, "codebook_entries": 8, "final_dim": 16}, encoder="wav2vec2",
                     encoder_kwargs=TINY_SPEECH, speech=True),
    "hubert": Case({"num_clusters": 12, "proj_dim": 16}, encoder="wav2vec2", encoder_kwargs=TINY_SPEECH, speech=True),
    "videomae": Case({"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder="video_vit",
                     encoder_kwargs=TINY_VIDEO, video=True),
}
GREY = DataSpec(channels=1, image_size=8, mean=(0.3,), std=(0.37,))
COLOUR = DataSpec(channels=3, image_size=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


# Synthetic token ids for the in-memory checks: [PAD]=0 .. [MASK]=4, 16 sentinels, 300 ordinary tokens.
TEXT = TextDataSpec(vocab_size=321, pad_id=0, cls_id=2, sep_id=3, mask_id=4, sentinel_ids=tuple(range(5, 21)),
                    special_ids=tuple(range(21)), seq_len=16)


GRAPH_FEATURES = 12  # the synthetic graph batch's and the graph fixture's feature width
PAIR = PairDataSpec(image=DataSpec(channels=3, image_size=16, mean=(0.8, 0.78, 0.75), std=(0.3, 0.3, 0.32)),
                    text=TEXT)


SPEECH_CLUSTERS = 12  # the synthetic targets' classes (hubert's case sets num_clusters to match)


def spec_for(name: str):  # noqa: ANN201
    from ssl_tasks.modalities.graph.feed import GraphDataSpec
    from ssl_tasks.modalities.speech.frames import SpeechDataSpec
    from ssl_tasks.modalities.video.spec import VideoDataSpec

    case = CASES[name]
    if case.video:  # 4 frames of 1 x 8 x 8: a 2 x 2 x 2 grid of 2 x 4 x 4 tubelets
        return VideoDataSpec(frames=4, channels=1, height=8, width=8, mean=(0.3,), std=(0.37,))
    if case.speech:  # 0.25 s rows at 16 kHz: 12 frames
        return SpeechDataSpec(sample_rate=16000, num_samples=4000, num_targets=SPEECH_CLUSTERS)
    if case.graph:
        return GraphDataSpec(num_nodes=16, num_features=GRAPH_FEATURES)
    return PAIR if case.pair else TEXT if case.text else COLOUR if case.colour else GREY


def build_case_encoder(name: str):  # noqa: ANN201
    """The case's encoder for the in-memory checks (image shape, or the synthetic vocabulary)."""
    from ssl_tasks.modalities.image.encoders import build_encoder
    from ssl_tasks.modalities.text.encoders import build_text_encoder

    case, spec = CASES[name], spec_for(name)
    if case.speech:
        from ssl_tasks.core.encoders import ENCODERS

        return ENCODERS.get(case.encoder)(**case.encoder_kwargs)
    if case.graph:
        from ssl_tasks.core.encoders import ENCODERS

        return ENCODERS.get(case.encoder)(spec.num_features, **case.encoder_kwargs)
    if case.video:
        from ssl_tasks.core.encoders import ENCODERS

        return ENCODERS.get(case.encoder)(in_channels=spec.channels, frames=spec.frames,
                                          image_size=min(spec.height, spec.width), **case.encoder_kwargs)
    if case.text:
        return build_text_encoder(case.encoder, spec.vocab_size, spec.pad_id, **case.encoder_kwargs)
    if case.pair:  # the image tower
        spec = spec.image
    return build_encoder(case.encoder, spec.channels, spec.image_size, **case.encoder_kwargs)


def case_batch(name: str, seed: int = 0, n: int = 16):  # noqa: ANN201
    """A batch the objective trains on: uint8 images, or token rows (padded rows end in [SEP] [PAD]...)."""
    import torch

    spec, g = spec_for(name), torch.Generator().manual_seed(seed)
    if CASES[name].speech:
        return speech_batch(spec, g, n, targets=name == "hubert")
    if CASES[name].graph:  # n nodes with 0/1 features, a ring plus random chords, both directions
        x = (torch.rand(n, spec.num_features, generator=g) < 0.3).float()
        src = torch.cat([torch.arange(n), torch.randint(0, n, (n,), generator=g)])
        dst = torch.cat([(torch.arange(n) + 1) % n, torch.randint(0, n, (n,), generator=g)])
        keep = src != dst
        ei = torch.stack([src[keep], dst[keep]])
        return x, torch.cat([ei, ei.flip(0)], dim=1)
    if CASES[name].video:  # clips with black background: about half the pixels are 0
        clips = torch.randint(0, 256, (n, spec.frames, spec.channels, spec.height, spec.width), generator=g)
        return (clips * (torch.rand(clips.shape, generator=g) < 0.5)).to(torch.uint8)
    if CASES[name].pair:
        im = spec.image
        images = torch.randint(0, 256, (n, im.channels, im.image_size, im.image_size), generator=g, dtype=torch.uint8)
        return images, _token_rows(spec.text, g, n)
    if not CASES[name].text:
        return torch.randint(0, 256, (n, spec.channels, spec.image_size, spec.image_size), generator=g,
                             dtype=torch.uint8)
    return _token_rows(spec, g, n)


def _token_rows(spec: TextDataSpec, g, n: int):  # noqa: ANN001, ANN202
    import torch

    ids = torch.randint(21, spec.vocab_size, (n, spec.seq_len), generator=g)
    lengths = torch.randint(4, spec.seq_len + 1, (n,), generator=g)
    pos = torch.arange(spec.seq_len)
    ids[:, 0] = spec.cls_id
    ids[pos[None] == (lengths[:, None] - 1)] = spec.sep_id
    return ids.masked_fill(pos[None] >= lengths[:, None], spec.pad_id)


def speech_batch(spec, g, n: int, targets: bool = False):  # noqa: ANN001, ANN201
    """Synthetic clips as the speech feed yields them: peak-normalised tones in noise, zero-padded after random
    lengths; with ``targets``, random cluster ids on each clip's valid frames and -100 beyond."""
    import torch

    from ssl_tasks.modalities.speech.encoders import frame_counts
    from ssl_tasks.modalities.speech.frames import conv_frames

    t = torch.arange(spec.num_samples) / spec.sample_rate
    freq = 100 + 700 * torch.rand(n, 1, generator=g)
    wave = torch.sin(2 * torch.pi * freq * t) + 0.3 * torch.randn(n, spec.num_samples, generator=g)
    lengths = torch.randint(spec.num_samples // 4, spec.num_samples + 1, (n,), generator=g)
    wave = wave.masked_fill(torch.arange(spec.num_samples)[None] >= lengths[:, None], 0.0)
    wave = wave / wave.abs().amax(1, keepdim=True)
    if not targets:
        return wave, lengths
    f = conv_frames(spec.num_samples)
    ids = torch.randint(0, spec.num_targets, (n, f), generator=g)
    return wave, lengths, ids.masked_fill(torch.arange(f)[None] >= frame_counts(lengths)[:, None], -100)
