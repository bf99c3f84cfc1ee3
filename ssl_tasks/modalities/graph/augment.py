"""Graph corruptions and augmentations, all drawn from the training loop's generator (so a seeded run repeats and
each Ray rank draws differently).

PyG's ``dropout_edge`` / ``mask_feature`` draw from the global RNG and take no generator, so the same operations are
written here with one: feature-row shuffling (DGI's corruption), edge dropping and feature-column masking
(GraphCL's node-level augmentations), and GraphMAE's node masking.
"""

from __future__ import annotations

import torch


def shuffle_rows(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """DGI's corruption: the feature matrix with its rows permuted (the graph is kept)."""
    return x[torch.randperm(x.shape[0], generator=g, device=g.device).to(x.device)]


def drop_edges(edge_index: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Each directed edge kept with probability ``1 - p``."""
    if p <= 0:
        return edge_index
    keep = torch.rand(edge_index.shape[1], generator=g, device=g.device).to(edge_index.device) >= p
    return edge_index[:, keep]


def mask_feature_columns(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """GraphCL's attribute masking: a share ``p`` of feature dimensions set to zero for every node."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape[1], generator=g, device=g.device).to(x.device) >= p
    return x * keep.to(x.dtype)


def mask_nodes(n: int, rate: float, replace_rate: float, g: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GraphMAE's node masking: (masked, token, noise, noise_source) node ids. ``rate`` of the nodes are masked;
    of those, ``replace_rate`` get another random node's features (``noise``, copied from ``noise_source``) and the
    rest the learnable mask token."""
    perm = torch.randperm(n, generator=g, device=g.device).to(device)
    num_mask = int(rate * n)
    masked = perm[:num_mask]
    if replace_rate > 0:
        num_noise = int(replace_rate * num_mask)
        order = torch.randperm(num_mask, generator=g, device=g.device).to(device)
        token = masked[order[:num_mask - num_noise]]
        noise = masked[order[num_mask - num_noise:]]
        source = torch.randperm(n, generator=g, device=g.device).to(device)[:num_noise]
    else:
        token, noise, source = masked, masked[:0], masked[:0]
    return masked, token, noise, source
