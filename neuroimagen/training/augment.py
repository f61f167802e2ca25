"""Channel-subset augmentation: training trials as other caps would give them, interpolated back to the model's
channels (the 128 actiCAP channels, or a model's own montage: ``ch_names``).

A user's recording rarely has the model's 128 actiCAP channels: ``preprocess`` places its channels and
interpolates the missing ones with spherical splines (:mod:`neuroimagen.data.channels`). Models trained only
on full caps lose most of their accuracy on such input (``scripts/cap_accuracy.py``). This module makes the
same transformation during training. Both steps are linear, so each cap is one (128, 128) matrix ``M``:

- **standard caps** (``neuroimagen.data.caps``: 10-10 64, BioSemi 64, 10-20 32, 10-20 19, occipito-parietal 8):
  the 128 channels are interpolated to the cap's own electrode positions (a stand-in for recording there),
  then read back the way ``preprocess`` reads that cap (same-named channels kept, the others interpolated);
- **random subsets** of the model's channels (16 to 100 of them): kept as they are, the others interpolated.

A trial is augmented with probability ``p``: ``x <- standardize(M @ x)`` for a matrix drawn from the pool.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..data.caps import standard_caps
from ..data.channels import channel_positions, interpolation_weights, place_channels, spline_weights
from ..data.montage import model_ch_names
from ..data.preprocessing import standardize

RANDOM_SIZES = (16, 100)  # channels kept in a random subset


def _read_back(names: list[str], positions: np.ndarray, model: list[str]) -> np.ndarray:
    """(n_model, n_cap): how ``preprocess`` makes the model's channels from a cap's (same-named ones kept)."""
    placement = place_channels(names, positions, model)
    back = np.zeros((len(model), len(names)))
    others = [m for m in model if m not in placement.same_as_model]
    for m, row in placement.same_as_model.items():
        back[model.index(m), row] = 1.0
    if others:
        back[[model.index(m) for m in others]] = interpolation_weights(positions, tuple(others))
    return back


def random_sizes(n_model: int) -> tuple[int, int]:
    """Channels kept in a random subset of a model's ``n_model``: :data:`RANDOM_SIZES` for the 128, scaled down
    (at least half, at most all but one) for a smaller montage."""
    return min(RANDOM_SIZES[0], max(1, n_model // 2)), min(RANDOM_SIZES[1], n_model - 1)


def cap_matrices(n_random: int = 32, seed: int = 0, ch_names=None) -> np.ndarray:
    """The pool: one (n, n) matrix per standard cap smaller than the model's montage and per random subset.

    ``ch_names``: the model's channels (default: the 128 actiCAP channels).
    """
    model = list(model_ch_names() if ch_names is None else ch_names)
    model_pos = channel_positions(model)
    mats = []
    for _, info in standard_caps():
        if len(info.ch_names) >= len(model):
            continue
        pos = np.array([ch["loc"][:3] for ch in info["chs"]])
        mats.append(_read_back(list(info.ch_names), pos, model) @ spline_weights(model_pos, pos))
    rng = np.random.default_rng([seed, 4242])
    for _ in range(n_random):
        keep = np.sort(rng.choice(len(model), rng.integers(*random_sizes(len(model)), endpoint=True), replace=False))
        mats.append(_read_back([model[k] for k in keep], model_pos[keep], model) @ np.eye(len(model))[keep])
    return np.stack(mats).astype(np.float32)


class CapAugment:
    """Draws, per trial, whether to augment (probability ``p``) and with which matrix of the pool.

    Parameters
    ----------
    p : float
        Probability that a trial is replaced by its version on another cap.
    n_random : int
        Random subsets in the pool (besides the standard caps).
    seed : int
    cache_dir : str | Path | None
        Folder where the pool is saved once and read again (e.g. the run's output folder).
    ch_names : list of str | None
        The model's channels (default: the 128 actiCAP channels).
    """

    def __init__(self, p: float, n_random: int = 32, seed: int = 0, cache_dir=None, ch_names=None):
        self.p = float(p)
        self.mats = None
        if self.p > 0:  # the pool costs about a minute of splines: kept beside the run, shared by its stages
            montage = "" if ch_names is None or list(ch_names) == list(model_ch_names()) else (
                "_" + hashlib.sha256(",".join(ch_names).encode()).hexdigest()[:8])
            cache = Path(cache_dir) / f"cap_augment_{n_random}_{seed}{montage}.npy" if cache_dir is not None else None
            if cache is not None and cache.is_file():
                mats = np.load(cache)
            else:
                mats = cap_matrices(n_random, seed, ch_names)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    np.save(cache, mats)
            self.mats = torch.from_numpy(mats)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: (batch, n_chans, n_times), standardized trials -> the same, some as another cap would give them."""
        if not self.p:
            return x
        pick = torch.rand(len(x), generator=generator) < self.p
        if not pick.any():
            return x
        which = torch.randint(len(self.mats), (int(pick.sum()),), generator=generator)
        mixed = torch.einsum("bij,bjt->bit", self.mats[which].to(x.dtype), x[pick])
        out = x.clone()
        out[pick] = torch.from_numpy(standardize(mixed.numpy())).to(x.dtype)
        return out
