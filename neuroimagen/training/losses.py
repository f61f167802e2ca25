"""Losses of the EEG stages: triplet mining, GAN hinge, mode seeking, SSIM, DiffAugment."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_sq_dists(emb: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, (n, d) -> (n, n)."""
    sq = (emb * emb).sum(1)
    return (sq[:, None] + sq[None] - 2 * emb @ emb.T).clamp_min(0)


def mine_batch_hard(labels: torch.Tensor, dists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining (Hermans et al. 2017): per anchor, the farthest positive and the nearest negative.

    Returns (anchor, positive, negative) index tensors, for anchors that have both.
    """
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    pos = dists.masked_fill(~pos_mask, -1.0).argmax(1)
    neg = dists.masked_fill(~neg_mask, float("inf")).argmin(1)
    anchors = torch.nonzero(valid).squeeze(1)
    return anchors, pos[anchors], neg[anchors]


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The paper's triplet loss, max(0, m + ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2), on batch-hard triplets."""
    d = pairwise_sq_dists(emb)
    a, p, n = mine_batch_hard(labels, d)
    return F.relu(margin + d[a, p] - d[a, n]).mean()


def d_hinge(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def mode_seeking(img1: torch.Tensor, img2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5):
    """MSGAN's regulariser (Mao et al. 2019): small when different noise gives different images."""
    ratio = (img1 - img2).abs().mean() / (z1 - z2).abs().mean()
    return 1.0 / (ratio + eps)


def _gauss_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None]).expand(3, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Differentiable SSIM (Wang et al. 2004, Gaussian window 7, sigma 1.5) of (n, 3, H, W) images, averaged."""
    w = _gauss_window(device=a.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = F.conv2d(a, w, groups=3), F.conv2d(b, w, groups=3)
    s_aa = F.conv2d(a * a, w, groups=3) - mu_a**2
    s_bb = F.conv2d(b * b, w, groups=3) - mu_b**2
    s_ab = F.conv2d(a * b, w, groups=3) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.mean()


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): colour (brightness, saturation, contrast), translation, cutout."""
    n = len(x)

    def r(*shape):
        return torch.rand(*shape, generator=generator).to(x.device)

    x = x + (r(n, 1, 1, 1) - 0.5) * 0.5
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (r(n, 1, 1, 1) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (r(n, 1, 1, 1) + 0.5) + mean
    h, w = x.shape[-2:]
    shift = (r(n, 2) * 0.25 - 0.125) * torch.tensor([h, w], device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift * 2 / torch.tensor([w, h], device=x.device)
    x = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), padding_mode="zeros", align_corners=False)
    cy, cx = (r(n) * h).long(), (r(n) * w).long()
    yy, xx = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    mask = ((yy - cy[:, None, None]).abs() >= h // 4) | ((xx - cx[:, None, None]).abs() >= w // 4)
    return x * mask[:, None].float()
