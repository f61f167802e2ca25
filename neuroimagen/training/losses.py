"""Losses of the EEG stages: triplet mining, GAN hinge, mode seeking, SSIM, DiffAugment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._check import check_option


def pairwise_sq_dists(emb: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, (n, d) -> (n, n)."""
    sq = (emb * emb).sum(1)
    return (sq[:, None] + sq[None] - 2 * emb @ emb.T).clamp_min(0)


def mine_batch_hard(labels: torch.Tensor, dists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining (Hermans et al. 2017): per anchor, the farthest positive and the nearest negative.

    Parameters
    ----------
    labels : Tensor, shape (n,)
        Class of each embedding.
    dists : Tensor, shape (n, n)
        Squared distances (:func:`pairwise_sq_dists`).

    Returns
    -------
    anchor, positive, negative : Tensor, shape (n_triplets,)
        Indices, one triplet per anchor that has a positive and a negative in the batch.
    """
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    pos = dists.masked_fill(~pos_mask, -1.0).argmax(1)
    neg = dists.masked_fill(~neg_mask, float("inf")).argmin(1)
    anchors = torch.nonzero(valid).squeeze(1)
    return anchors, pos[anchors], neg[anchors]


def mine_semi_hard(labels: torch.Tensor, dists: torch.Tensor,
                   margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Semi-hard mining (Schroff et al. 2015, FaceNet) over every anchor-positive pair of the batch.

    For each pair (a, p), the negative is the nearest one farther from ``a`` than ``p`` is (semi-hard:
    ``d(a,p) < d(a,n)``, it violates the margin when ``d(a,n) < d(a,p) + margin``); when there is none,
    the farthest negative (the easiest), as TensorFlow Addons' ``triplet_semihard_loss``.

    Returns
    -------
    anchor, positive, negative : Tensor, shape (n_triplets,)
        Indices, one triplet per anchor-positive pair whose anchor has a negative in the batch.
    """
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg_mask = ~same
    a, p = torch.nonzero(same & ~eye & neg_mask.any(1, keepdim=True), as_tuple=True)
    d_an = dists[a]  # (n_pairs, n): distances of each pair's anchor to every embedding
    neg_ok = neg_mask[a]
    outside = neg_ok & (d_an > dists[a, p][:, None])
    semi = d_an.masked_fill(~outside, float("inf")).argmin(1)
    easiest = d_an.masked_fill(~neg_ok, -1.0).argmax(1)
    n = torch.where(outside.any(1), semi, easiest)
    return a, p, n


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 mining: str = "batch_hard") -> torch.Tensor:
    """The paper's triplet loss, max(0, m + ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2), on mined triplets.

    Parameters
    ----------
    emb : Tensor, shape (n, d)
        Embeddings of a class-balanced batch.
    labels : Tensor, shape (n,)
    margin : float
    mining : str
        ``"batch_hard"`` (:func:`mine_batch_hard`) or ``"semi_hard"`` (:func:`mine_semi_hard`).
    """
    check_option("mining", mining, ("batch_hard", "semi_hard"))
    d = pairwise_sq_dists(emb)
    a, p, n = mine_batch_hard(labels, d) if mining == "batch_hard" else mine_semi_hard(labels, d, margin)
    if len(a) == 0:
        return emb.sum() * 0.0  # no valid triplet (one class in the batch): a zero that keeps the graph
    return F.relu(margin + d[a, p] - d[a, n]).mean()


def d_hinge(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (Lim & Ye 2017; Miyato et al. 2018): relu(1 - D(real)) + relu(1 + D(fake))."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def mode_seeking(img1: torch.Tensor, img2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5):
    """MSGAN's regulariser (Mao et al. 2019): small when different noise gives different images."""
    ratio = (img1 - img2).abs().mean() / (z1 - z2).abs().mean()
    return 1.0 / (ratio + eps)


def _gauss_1d(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Differentiable SSIM (Wang et al. 2004; Gaussian window 7, sigma 1.5, valid convolution).

    ``a``, ``b`` are (n, C, H, W) images in [-1, 1]; SSIM is computed on them mapped to [0, 1] (its
    luminance term assumes non-negative intensities), so it equals SSIM on the uint8 images. Returns the
    mean over the batch, or with ``reduce=False`` one value per image, shape (n,).
    """
    a, b = (a + 1) / 2, (b + 1) / 2
    c = a.shape[1]
    g = _gauss_1d().to(device=a.device, dtype=a.dtype)
    # The five local moments in one separable (7 x 1 then 1 x 7) depthwise convolution.
    x = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    k = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)
    mu_a, mu_b, e_aa, e_bb, e_ab = x.split(c, dim=1)
    s_aa, s_bb, s_ab = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.mean() if reduce else m.flatten(1).mean(1)


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020), policy "color,translation,cutout", differentiable in ``x``.

    Brightness +-0.5, saturation x [0, 2], contrast x [0.5, 1.5], translation up to 1/8 of the side
    (zero padding), a cutout of half the side, each drawn per image from ``generator`` (a CPU generator).
    """
    n = len(x)

    def r(*shape):
        return torch.rand(*shape, generator=generator).to(x.device)

    x = x + (r(n, 1, 1, 1) - 0.5)  # brightness in [-0.5, 0.5], as the reference code
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (r(n, 1, 1, 1) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (r(n, 1, 1, 1) + 0.5) + mean
    h, w = x.shape[-2:]
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (r(n, 2) - 0.5) * 0.5  # shift by up to 1/8 of the side ([-1, 1] grid coordinates)
    x = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), padding_mode="zeros", align_corners=False)
    cy, cx = (r(n) * h).long(), (r(n) * w).long()
    yy, xx = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    mask = ((yy - cy[:, None, None]).abs() >= h // 4) | ((xx - cx[:, None, None]).abs() >= w // 4)
    return x * mask[:, None].float()
