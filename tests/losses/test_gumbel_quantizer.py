"""The Gumbel-softmax product quantizer: straight-through one-hot, perplexity, diversity loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.losses.gumbel_quantizer import GumbelProductQuantizer, perplexity, straight_through_gumbel


def test_straight_through_forward_is_hard_one_hot_and_gradient_is_the_softmaxs() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 5, generator=g, requires_grad=True)
    gumbels = -torch.empty(6, 2, 5).exponential_(generator=g).log()
    w = torch.randn(6, 2, 5, generator=g)
    y = straight_through_gumbel(logits, 0.7, gumbels)
    hard = F.one_hot((logits + gumbels).argmax(-1), 5).float()
    assert torch.allclose(y, hard, atol=1e-6)  # forward: exactly one 1 per group, at argmax(logits + noise)
    (y * w).sum().backward()
    ref = logits.detach().clone().requires_grad_()
    (torch.softmax((ref + gumbels) / 0.7, -1) * w).sum().backward()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-6)  # backward: the soft probabilities' gradient


def _reference_perplexity(probs: torch.Tensor) -> float:
    total = 0.0
    for grp in range(probs.shape[1]):
        avg = [sum(probs[n, grp, v].item() for n in range(probs.shape[0])) / probs.shape[0]
               for v in range(probs.shape[2])]
        total += math.exp(-sum(p * math.log(p) for p in avg if p > 0))
    return total


def test_perplexity_uniform_collapsed_and_against_a_loop() -> None:
    v, g = 8, 2
    uniform = F.one_hot(torch.arange(4 * v) % v, v).float().unsqueeze(1).expand(-1, g, -1)  # each entry equally
    collapsed = F.one_hot(torch.zeros(4 * v, dtype=torch.long), v).float().unsqueeze(1).expand(-1, g, -1)
    assert perplexity(uniform).item() == pytest.approx(g * v, rel=1e-5)
    assert perplexity(collapsed).item() == pytest.approx(g, rel=1e-5)
    soft = torch.softmax(torch.randn(10, g, v, generator=torch.Generator().manual_seed(1)), -1)
    assert perplexity(soft).item() == pytest.approx(_reference_perplexity(soft), rel=1e-5)


def test_quantizer_output_codes_and_diversity_range() -> None:
    torch.manual_seed(0)
    qz = GumbelProductQuantizer(in_dim=6, groups=2, entries=4, out_dim=8)
    z = torch.randn(50, 6)
    out = qz(z, tau=1.0)
    assert out.q.shape == (50, 8) and out.codes.shape == (50, 2)
    # q is the concatenation of the chosen entries of each group
    expected = torch.cat([qz.codebook[grp][out.codes[:, grp]] for grp in range(2)], dim=1)
    assert torch.allclose(out.q, expected, atol=1e-6)
    assert 2 <= out.code_perplexity.item() <= 8 and 2 <= out.prob_perplexity.item() <= 8
    assert 0 <= out.diversity_loss.item() <= 1 - 1 / 4
    assert out.diversity_loss.item() == pytest.approx((8 - out.prob_perplexity.item()) / 8, rel=1e-5)
    # a quantizer whose logits ignore the input and favour one entry: diversity loss near its maximum 1 - 1/V
    with torch.no_grad():
        qz.to_logits.weight.zero_()
        qz.to_logits.bias.copy_(torch.tensor([30.0, 0, 0, 0] * 2))
    stuck = qz(z, tau=1.0)
    assert stuck.diversity_loss.item() == pytest.approx(1 - 1 / 4, abs=1e-4)
    assert stuck.code_perplexity.item() == pytest.approx(2.0, abs=1e-4)


def test_eval_mode_is_deterministic_argmax_and_gradients_reach_logits_and_codebook() -> None:
    torch.manual_seed(0)
    qz = GumbelProductQuantizer(in_dim=6, groups=2, entries=4, out_dim=8)
    z = torch.randn(20, 6)
    qz.eval()
    a, b = qz(z, 1.0), qz(z, 1.0)
    assert torch.equal(a.q, b.q)
    assert torch.equal(a.codes, qz.to_logits(z).view(20, 2, 4).argmax(-1))
    qz.train()
    out = qz(z, 1.0)
    (out.q.pow(2).sum() + out.diversity_loss).backward()
    assert qz.to_logits.weight.grad.abs().sum() > 0 and qz.codebook.grad.abs().sum() > 0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of groups"):
        GumbelProductQuantizer(4, groups=3, entries=4, out_dim=8)
    with pytest.raises(ValueError, match="entries >= 2"):
        GumbelProductQuantizer(4, groups=2, entries=1, out_dim=8)
