"""SigLIP's pairwise sigmoid loss against a slow per-pair reference, its properties, and the chunked
ring form on real gloo workers (W=2 and W=3)."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssl_tasks.losses import siglip
from ssl_tasks.losses.siglip import INIT_BIAS, INIT_LOG_TEMPERATURE, SigLIPLoss


def reference_siglip(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-(1/N) sum_i sum_j log(1 / (1 + exp(-z_ij (t x_i.y_j + b)))), one pair at a time."""
    n = len(x)
    total = torch.zeros((), dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * sum(x[i, k] * y[j, k] for k in range(x.shape[1])) + b
            total = total + torch.log1p(torch.exp(-z * logit))
    return total / n


def _pairs(b: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    y = F.normalize(x + 0.7 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)  # correlated pairs
    return x, y


def _scalar(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("t, b", [(10.0, -10.0), (1.0, 0.0), (3.5, 2.0)])
def test_matches_reference_value_and_gradients(t: float, b: float) -> None:
    x, y = _pairs(6, 5, seed=0)
    args = [x.clone().requires_grad_(True), y.clone().requires_grad_(True), _scalar(t), _scalar(b)]
    ref_args = [a.detach().clone().requires_grad_(True) for a in args]
    loss, ref = SigLIPLoss()(*args), reference_siglip(*ref_args)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    for a, r in zip(args, ref_args):  # inputs, temperature and bias
        torch.testing.assert_close(a.grad, r.grad)


def test_init_constants() -> None:
    assert math.exp(INIT_LOG_TEMPERATURE) == pytest.approx(10.0)
    assert INIT_BIAS == -10.0


def test_aligned_positives_orthogonal_negatives_near_zero() -> None:
    z = torch.eye(5, dtype=torch.float64)  # positives: x.y = 1, negatives: x.y = 0
    t, b = torch.tensor(100.0, dtype=torch.float64), torch.tensor(-50.0, dtype=torch.float64)
    assert SigLIPLoss()(z, z, t, b).item() < 1e-15  # every pair's margin is 50
    assert SigLIPLoss()(z, z.roll(1, 0), t, b).item() > 2 * 50 - 1  # wrong pairing: ~50 per row, twice


def test_stable_at_extreme_logits() -> None:
    """Wrong pairing at t = 1e4, b = 0: per row one negative at logit 1e4 (costs 1e4) and two pairs at
    logit 0 (log 2 each); a naive log(sigmoid(.)) would give inf."""
    z = torch.eye(3, dtype=torch.float64)
    t = torch.tensor(1e4, dtype=torch.float64, requires_grad=True)
    loss = SigLIPLoss()(z, z.roll(1, 0), t, torch.tensor(0.0, dtype=torch.float64))
    loss.backward()
    assert loss.item() == pytest.approx(1e4 + 2 * math.log(2), rel=1e-12)
    assert torch.isfinite(t.grad) and t.grad.item() == pytest.approx(1.0)  # d/dt of (1/3) * 3 * t


def test_single_pair() -> None:
    x, y = _pairs(1, 4, seed=1)
    t, b = 10.0, -10.0
    expected = -math.log(1 / (1 + math.exp(-(t * float(x[0] @ y[0]) + b))))
    for mod in (SigLIPLoss(), SigLIPLoss(distributed=False)):
        assert mod(x, y, torch.tensor(t), torch.tensor(b)).item() == pytest.approx(expected, rel=1e-12)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        SigLIPLoss()(torch.ones(3, 2), torch.ones(4, 2), torch.tensor(1.0), torch.tensor(0.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forbidden(*args, **kwargs):
    raise AssertionError("the chunked SigLIP path must not use a collective")


def _worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, t: float, b: float, out) -> None:
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_nn

    from ssl_tasks.core import distributed as core_dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    # Only point-to-point traffic is allowed: every gather / collective raises in this process.
    for mod, names in [
        (dist, ["all_gather", "all_gather_into_tensor", "all_gather_object", "all_reduce", "all_to_all",
                "all_to_all_single", "broadcast", "reduce_scatter", "reduce_scatter_tensor", "gather"]),
        (dist_nn, ["all_gather", "all_to_all", "all_reduce", "broadcast"]),
        (core_dist, ["gather_with_grad", "gather_no_grad"]),
    ]:
        for name in names:
            setattr(mod, name, _forbidden)
    blocks: list[tuple[int, ...]] = []
    real_block = siglip._pair_loss_sum

    def recording_block(image, text, *args, **kwargs):
        blocks.append((*image.shape, *text.shape))
        return real_block(image, text, *args, **kwargs)

    siglip._pair_loss_sum = recording_block
    n = x.shape[0] // world
    xs = x[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    ys = y[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    ts, bs = _scalar(t), _scalar(b)
    loss = SigLIPLoss(distributed=True)(xs, ys, ts, bs)
    (loss / world).backward()  # DDP convention: every worker's loss counts 1/W
    out[rank] = (loss.item(), xs.grad.clone(), ys.grad.clone(), ts.grad.clone(), bs.grad.clone(), blocks)
    dist.barrier()  # p2p only above; barrier is untouched
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_chunked_gloo_workers_equal_full_batch(world: int) -> None:
    t, b = 4.0, -3.0
    x, y = _pairs(6, 5, seed=3)  # N = 6: 3 rows per worker for W=2, 2 for W=3
    fx, fy, ft, fb = x.clone().requires_grad_(True), y.clone().requires_grad_(True), _scalar(t), _scalar(b)
    ref = SigLIPLoss(distributed=False)(fx, fy, ft, fb)  # normaliser 1/N over the whole batch
    ref.backward()
    torch.testing.assert_close(ref.detach(), reference_siglip(x, y, torch.tensor(t), torch.tensor(b)))
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(world, _free_port(), x, y, t, b, out), nprocs=world, join=True)
    res = [out[r] for r in range(world)]
    # Per worker (1/B_local) * its partial sum; the mean over W of those is (1/(W*B_local)) * total = ref.
    torch.testing.assert_close(torch.tensor(sum(r[0] for r in res) / world, dtype=torch.float64), ref.detach())
    # Gradients of each worker's own rows (image directly, text back around the ring) = full-batch ones.
    torch.testing.assert_close(torch.cat([r[1] for r in res]), fx.grad)
    torch.testing.assert_close(torch.cat([r[2] for r in res]), fy.grad)
    # t and b are replicated parameters: DDP averages the per-worker grads of loss, i.e. sums those of loss/W.
    torch.testing.assert_close(sum(r[3] for r in res), ft.grad)
    torch.testing.assert_close(sum(r[4] for r in res), fb.grad)
    # Only W local-by-chunk blocks of B_local x B_local were scored on each worker, never an N x N one.
    bl = x.shape[0] // world
    for r in res:
        assert [blk[0] for blk in r[5]] == [bl] * world and [blk[2] for blk in r[5]] == [bl] * world
