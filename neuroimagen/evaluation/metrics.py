"""The paper's reconstruction metrics: N-way top-k ACC, Inception-style score, SSIM, pixel correlation.

Lan et al. 2023 score a reconstruction by classifying it (and the stimulus) with an ImageNet classifier
and counting it correct when the true class wins among N classes (the true one and N - 1 drawn at
random, repeated): "50-way top-1". With the 40 EEG-ImageNet classes, N = 40 is plain 40-way top-1; the
EEG-to-image literature also reports N = 2, 5, 10. :func:`n_way_accuracy` computes the protocol's
*expected* value exactly (hypergeometric over the random draws, ties broken at random), so the number
has no Monte Carlo noise; ``n_repeats`` runs the sampled protocol instead.

Images here are float arrays in [0, 1], shape (n, H, W, 3) (or one (H, W, 3) image), as
``pipe(..., output_type="np")`` returns them.
"""

from __future__ import annotations

from math import comb

import numpy as np

from .._check import check_range

EVAL_SIZE = 64  # SSIM and pixel correlation are computed at 64 x 64 RGB, the stimulus set's size


# ----------------------------------------------------------------------------------------------
# Class-level metrics
def _check_probs(probs, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n_samples, n_classes) with n_classes >= 2, got {probs.shape}.")
    if labels is None:
        return probs, None
    labels = np.asarray(labels).astype(int).ravel()
    if len(labels) != len(probs):
        raise ValueError(f"Got {len(labels)} labels for {len(probs)} rows of probabilities.")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must be class indices in 0..{probs.shape[1] - 1}, got {labels.min()}..{labels.max()}.")
    return probs, labels


def n_way_accuracy(probs, labels, n_way: int | None = None, k: int = 1, n_repeats: int | None = None,
                   rng: np.random.Generator | None = None) -> float:
    """N-way top-k accuracy: the true class among the top k of itself and ``n_way - 1`` random other classes.

    The paper's ACC protocol (50-way top-1 with 1,000 ImageNet classes). For each sample, ``n_way - 1``
    distractor classes are drawn without replacement from the other classes; the sample counts as
    correct when fewer than ``k`` of them score above the true class.

    Parameters
    ----------
    probs : ndarray, shape (n_samples, n_classes)
        Class scores (probabilities or logits: only their order matters).
    labels : ndarray, shape (n_samples,)
        True class of each sample.
    n_way : int | None
        N, 2..n_classes (None: all classes, i.e. plain top-k accuracy).
    k : int
        Top-k, 1..n_way.
    n_repeats : int | None
        None: the exact expectation over all draws (and over random tie-breaking). An int: the sampled
        protocol, ``n_repeats`` draws per sample from ``rng``.
    rng : numpy.random.Generator | None
        Needed with ``n_repeats``.

    Returns
    -------
    accuracy : float
        In [0, 1]; chance is ``k / n_way``.
    """
    probs, labels = _check_probs(probs, labels)
    n_classes = probs.shape[1]
    n_way = n_classes if n_way is None else int(n_way)
    check_range("n_way", n_way, 2, n_classes)
    check_range("k", k, 1, n_way)
    if len(probs) == 0:
        return float("nan")
    true = probs[np.arange(len(probs)), labels][:, None]
    others = np.ones_like(probs, dtype=bool)
    others[np.arange(len(probs)), labels] = False
    if n_repeats is not None:
        if rng is None:
            raise ValueError("n_repeats needs rng, a numpy.random.Generator (no global random state is used).")
        check_range("n_repeats", n_repeats, 1)
        hits = 0.0
        for i in range(len(probs)):
            pool = np.flatnonzero(others[i])
            for _ in range(int(n_repeats)):
                d = probs[i, rng.choice(pool, n_way - 1, replace=False)]
                above, tied = int((d > true[i, 0]).sum()), int((d == true[i, 0]).sum())
                hits += max(0, min(tied + 1, k - above)) / (tied + 1)  # random tie-break: expected hit
        return float(hits / (len(probs) * n_repeats))
    n_above = ((probs > true) & others).sum(1)
    n_tied = ((probs == true) & others).sum(1)
    return float(np.mean([_expected_hit(n_classes - 1, int(a), int(t), n_way - 1, k) for a, t in zip(n_above, n_tied)]))


def _expected_hit(n_other: int, n_above: int, n_tied: int, n_draw: int, k: int) -> float:
    """P(correct) when ``n_draw`` of ``n_other`` classes are drawn, ``n_above`` of them outscore the true
    class and ``n_tied`` tie with it (tie order random): a multivariate hypergeometric sum."""
    n_rest = n_other - n_above - n_tied
    total = 0.0
    for a in range(min(n_above, n_draw, k - 1) + 1):  # a >= k distractors above: never correct
        for t in range(min(n_tied, n_draw - a) + 1):
            ways = comb(n_above, a) * comb(n_tied, t) * comb(n_rest, n_draw - a - t)
            if ways:
                total += ways * min(t + 1, k - a) / (t + 1)
    return total / comb(n_other, n_draw)


def top_k_accuracy(probs, labels, k: int = 1) -> float:
    """Plain top-k accuracy over all classes (``n_way_accuracy`` with N = n_classes)."""
    return n_way_accuracy(probs, labels, None, k)


def inception_score(probs, n_splits: int = 1) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), with p(y) the mean over the images.

    Parameters
    ----------
    probs : ndarray, shape (n_images, n_classes)
        The classifier's softmax probabilities of the images.
    n_splits : int
        Compute on this many equal splits and return mean and std (10 in the GAN literature; 1 by default
        because the evaluation sets here are small).

    Returns
    -------
    mean, std : float
        Between 1 (every image gets the same distribution) and n_classes (confident and evenly spread).
    """
    probs, _ = _check_probs(probs)
    check_range("n_splits", n_splits, 1, len(probs))
    probs = probs / probs.sum(1, keepdims=True)
    scores = []
    for part in np.array_split(probs, n_splits):
        marginal = part.mean(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def confusion_matrix(pred, labels, n_classes: int) -> np.ndarray:
    """Counts, shape (n_classes, n_classes): row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (np.asarray(labels, int), np.asarray(pred, int)), 1)
    return cm


def per_class_accuracy(pred, labels, n_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class, shape (n_classes,) (NaN for a class without samples)."""
    cm = confusion_matrix(pred, labels, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(1)


# ----------------------------------------------------------------------------------------------
# Pixel-level metrics
def rgb_arrays(images) -> list[np.ndarray]:
    """Images as a list of (H, W, 3) arrays, dtype as given (PIL images: uint8); each may have its own size.

    Parameters
    ----------
    images : ndarray, shape (n, H, W, 3) or (H, W, 3) | list of ndarray or PIL.Image
    """
    from PIL import Image

    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    out = []
    for img in images:
        arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"Expected RGB images of shape (H, W, 3), got {arr.shape}.")
        out.append(arr)
    return out


def to_eval_images(images, size: int = EVAL_SIZE) -> np.ndarray:
    """Images as float64 (n, size, size, 3) in [0, 1]: centre-cropped to square and resized when needed.

    Parameters
    ----------
    images : ndarray, shape (n, H, W, 3) or (H, W, 3) | list of PIL.Image
        Floats in [0, 1] or uint8.
    size : int
        Side of the evaluation images (64: the stimulus set's; real ImageNet photos and Stable Diffusion
        outputs are brought to it too, so numbers stay comparable).
    """
    from PIL import Image

    out = []
    for arr in rgb_arrays(images):
        arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else np.clip(arr.astype(np.float64), 0, 1)
        h, w = arr.shape[:2]
        if (h, w) != (size, size):
            s = min(h, w)
            arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
            # Area averaging to shrink (SD's 512 px, photos), bicubic to enlarge; per channel in float, unquantised.
            method = Image.Resampling.BOX if s >= size else Image.Resampling.BICUBIC
            arr = np.clip(np.stack([np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F").resize(
                (size, size), method), dtype=np.float64) for c in range(3)], axis=-1), 0, 1)
        out.append(arr)
    return np.stack(out)


def _pairs(a, b, size: int = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_eval_images(a, size), to_eval_images(b, size)
    if a.shape != b.shape:
        raise ValueError(f"Got {len(a)} reconstructions but {len(b)} stimuli: they must pair one to one.")
    return a, b


def ssim(reconstructions, stimuli, size: int = EVAL_SIZE) -> np.ndarray:
    """SSIM of each reconstruction with its stimulus (skimage, RGB at ``size`` x ``size``, 7 x 7 window), shape (n,).

    ``skimage.metrics.structural_similarity`` with ``channel_axis=-1`` and ``data_range=1``: the mean over
    the three channels' SSIM maps. ``size``: 64 for the stimulus set; the paper's protocol on real images uses
    512 (:mod:`neuroimagen.evaluation.paper_metrics`).
    """
    from skimage.metrics import structural_similarity

    a, b = _pairs(reconstructions, stimuli, size)
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)])


def pixel_correlation(reconstructions, stimuli) -> np.ndarray:
    """Pearson correlation of each reconstruction's pixels (all channels) with its stimulus's, shape (n,).

    NaN where an image is constant (correlation undefined).
    """
    a, b = _pairs(reconstructions, stimuli)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


# ----------------------------------------------------------------------------------------------
def classify_images(classifier, images, batch_size: int = 128, size: int = EVAL_SIZE) -> np.ndarray:
    """Softmax probabilities of an image classifier (``neuroimagen.models.ImageClassifier``), shape (n, n_classes).

    Parameters
    ----------
    classifier : torch.nn.Module
        Images (batch, 3, size, size) in [-1, 1] -> logits (batch, n_classes).
    images : ndarray, shape (n, H, W, 3) | list of PIL.Image
        Floats in [0, 1] or uint8; brought to ``size`` x ``size`` by :func:`to_eval_images`.
    """
    import torch

    x = torch.from_numpy(to_eval_images(images, size)).float().permute(0, 3, 1, 2) * 2 - 1
    classifier.eval()
    param = next(classifier.parameters())
    with torch.no_grad():
        logits = torch.cat([classifier(x[i:i + batch_size].to(param.device, param.dtype)).float().cpu()
                            for i in range(0, len(x), batch_size)])
    return torch.softmax(logits, dim=1).numpy()


def mean_sem(values) -> dict:
    """``{"mean", "sem", "n"}`` of the finite values (SEM = std / sqrt(n))."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "sem": float("nan"), "n": 0}
    sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "n": int(len(v))}
