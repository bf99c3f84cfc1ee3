"""CLIP's symmetric InfoNCE against a slow per-pair reference, its known properties, and 2 gloo workers."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssl_tasks.losses.clip import INIT_LOG_SCALE, CLIPLoss, clamp_logit_scale


def reference_clip(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(1/2B) sum_i [-log softmax_j(s x_i.y_j)[i] - log softmax_j(s y_i.x_j)[i]], one logit at a time."""
    b = len(image)

    def one_direction(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=rows.dtype)
        for i in range(b):
            logits = [scale * sum(rows[i, k] * cols[j, k] for k in range(rows.shape[1])) for j in range(b)]
            denom = sum(torch.exp(logit) for logit in logits)
            total = total - torch.log(torch.exp(logits[i]) / denom)
        return total / b

    return (one_direction(image, text) + one_direction(text, image)) / 2


def _pairs(b: int, d: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    text = F.normalize(image + 0.7 * torch.randn(b, d, generator=g, dtype=dtype), dim=1)  # correlated pairs
    return image, text


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_matches_reference_value_and_gradients(scale: float) -> None:
    image, text = _pairs(6, 5, seed=0)
    args = [image.clone().requires_grad_(True), text.clone().requires_grad_(True),
            torch.tensor(scale, dtype=torch.float64, requires_grad=True)]
    ref_args = [a.detach().clone().requires_grad_(True) for a in args]
    loss, ref = CLIPLoss()(*args), reference_clip(*ref_args)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    for a, r in zip(args, ref_args):
        torch.testing.assert_close(a.grad, r.grad)


def test_symmetric_in_image_and_text() -> None:
    image, text = _pairs(9, 4, seed=1)
    s = torch.tensor(7.0, dtype=torch.float64)
    torch.testing.assert_close(CLIPLoss()(image, text, s), CLIPLoss()(text, image, s))


def test_perfect_alignment_large_scale_near_zero() -> None:
    z = torch.eye(5, dtype=torch.float64)  # pairs identical, different pairs orthogonal
    assert CLIPLoss()(z, z, torch.tensor(100.0, dtype=torch.float64)).item() < 1e-30
    # ...but a wrong pairing is punished by about the scale.
    assert CLIPLoss()(z, z.roll(1, 0), torch.tensor(100.0, dtype=torch.float64)).item() > 99


def test_identical_embeddings_give_log_batch() -> None:
    b = 8
    z = F.normalize(torch.ones(b, 3, dtype=torch.float64), dim=1)
    torch.testing.assert_close(CLIPLoss()(z, z, torch.tensor(30.0, dtype=torch.float64)),
                               torch.tensor(math.log(b), dtype=torch.float64))


def test_gradient_flows_to_logit_scale() -> None:
    image, text = _pairs(6, 5, seed=2)
    log_scale = torch.tensor(INIT_LOG_SCALE, dtype=torch.float64, requires_grad=True)
    CLIPLoss()(image, text, clamp_logit_scale(log_scale)).backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad) and log_scale.grad.abs() > 1e-6


def test_clamp_logit_scale() -> None:
    assert INIT_LOG_SCALE == pytest.approx(math.log(1 / 0.07))
    small = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    out = clamp_logit_scale(small)
    out.backward()
    assert out.item() == pytest.approx(10.0) and small.grad.item() == pytest.approx(10.0)  # d exp = exp
    big = torch.tensor(math.log(1000.0), dtype=torch.float64, requires_grad=True)
    out = clamp_logit_scale(big)
    out.backward()
    assert out.item() == 100.0 and big.grad.item() == 0.0  # clamped: no push to grow further
    assert clamp_logit_scale(torch.tensor(math.log(50.0)), max_scale=20.0).item() == pytest.approx(20.0)
    with pytest.raises(ValueError):
        clamp_logit_scale(torch.tensor(0.0), max_scale=0.0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        CLIPLoss()(torch.ones(3, 2), torch.ones(4, 2), torch.tensor(1.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, image: torch.Tensor, text: torch.Tensor, scale: float, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    b = image.shape[0] // world
    x = image[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    y = text[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    s = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    loss = CLIPLoss(gather_distributed=True)(x, y, s)
    # DDP averages over workers: backward of loss/W, the gather's gradient flowing back to each owner.
    (loss / world).backward()
    out[rank] = (loss.item(), x.grad.clone(), y.grad.clone(), s.grad.clone())
    dist.destroy_process_group()


def test_two_gloo_workers_equal_full_batch() -> None:
    world, scale = 2, 9.0
    image, text = _pairs(8, 6, seed=3)
    fx, fy = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    fs = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    ref = CLIPLoss(gather_distributed=False)(fx, fy, fs)
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(world, _free_port(), image, text, scale, out), nprocs=world, join=True)
    res = [out[r] for r in range(world)]
    torch.testing.assert_close(torch.tensor(sum(r[0] for r in res) / world, dtype=torch.float64), ref.detach())
    torch.testing.assert_close(torch.cat([r[1] for r in res]), fx.grad)  # each worker's own rows
    torch.testing.assert_close(torch.cat([r[2] for r in res]), fy.grad)
    # The scale is a replicated parameter: DDP's average of the per-worker grads of loss, i.e. the
    # sum of the grads of loss/W, is the full-batch gradient.
    torch.testing.assert_close(sum(r[3] for r in res), fs.grad)
