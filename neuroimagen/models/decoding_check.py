"""DecodingCheck: a calibrated class confidence and an in-distribution test for every decoded trial.

The readout's class probabilities say how sure the model is *among its 40 classes*; they say nothing
about whether the input is EEG like the training trials at all (white noise used to come back as a crisp
airliner at 43 %). This component adds both answers, fitted on the training and validation trials of the
checkpoint's own EEG stages (``scripts/fit_confidence.py``; its report, ``reports/confidence/``, has the
measurements behind every choice here):

- **confidence**: the top class's probability after temperature scaling (Guo et al. 2017, "On calibration
  of modern neural networks"), the temperature fitted on validation trials by NLL;
- **ood_score**: how far the trial is from the training trials, the larger of two Mahalanobis distances,
  each in units of its own spread on validation trials (robust z-score):

  * ``features``: the EEG encoder's features to the nearest class-conditional Gaussian with a shared
    covariance (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples
    and adversarial attacks");
  * ``signal``: statistics of the model-space EEG itself (:func:`signal_statistics`: spectral shape,
    variance in the training trials' spatial subspace, global field power over time) to one Gaussian.
    Noise at realistic amplitude becomes unit-variance after the preprocessing's z-scoring; its spectrum,
    its lack of spatial structure and its flat time course still give it away.

- **in_distribution**: ``ood_score <= threshold``, the threshold chosen so that a fixed share of the
  validation trials (``accept_rate``) is accepted.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Spectral bands (Hz) of the model's 5-95 Hz input, log-spaced: the shape of the power spectrum.
BAND_EDGES = (5.0, 7.0, 9.5, 13.0, 17.5, 24.0, 32.0, 44.0, 60.0, 80.0, 95.0)
SUBSPACE_RANKS = (4, 8, 16, 32)  # variance explained by the training trials' top spatial components
GFP_WINDOW = 20  # samples per window of the global field power time course
SIGNAL_RIDGE = 1e-3  # covariance shrinkage (times the mean variance) of both Gaussians
SCORES = ("features", "signal")


def _bands(n_times: int, sfreq: float) -> list[np.ndarray]:
    freqs = np.fft.rfftfreq(n_times, 1 / sfreq)
    return [np.flatnonzero((freqs >= lo) & (freqs < hi)) for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]


def signal_statistics(eeg: torch.Tensor, spatial_basis: torch.Tensor, sfreq: float) -> torch.Tensor:
    """Statistics of model-space EEG that tell EEG from noise, scrambled channels or reversed time.

    Parameters
    ----------
    eeg : Tensor, shape (batch, n_chans, n_times)
        Preprocessed trials (``neuroimagen.data.preprocess``).
    spatial_basis : Tensor, shape (n_chans, max(SUBSPACE_RANKS))
        The training trials' top spatial principal components (orthonormal columns).
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    stats : Tensor, shape (batch, n_bands + len(SUBSPACE_RANKS) + n_times // GFP_WINDOW)
        Log band powers minus their mean (the spectrum's shape, channels averaged); the logit of the share of
        variance in the first 4, 8, 16, 32 spatial components; the log global field power (standard deviation
        across channels) in windows of ``GFP_WINDOW`` samples minus its mean (the time course's shape).
    """
    if len(eeg) > 256:  # in float64 a trial takes 0.5 MB: bound the memory
        return torch.cat([signal_statistics(eeg[k:k + 256], spatial_basis, sfreq) for k in range(0, len(eeg), 256)])
    x = eeg.double()
    x = x - x.mean(-1, keepdim=True)
    n_times = x.shape[-1]
    window = torch.hann_window(n_times, periodic=False, dtype=x.dtype, device=x.device)
    power = torch.fft.rfft(x * window, dim=-1).abs().square().mean(1)  # (batch, n_freqs)
    bands = torch.stack([power[:, torch.as_tensor(b, device=x.device)].mean(-1) for b in _bands(n_times, sfreq)], 1)
    spectrum = bands.clamp_min(1e-30).log()
    spectrum = spectrum - spectrum.mean(-1, keepdim=True)
    total = x.square().sum((1, 2))
    proj = torch.einsum("ck,bct->bkt", spatial_basis.to(x), x).square().sum(-1).cumsum(-1)  # (batch, k)
    share = torch.stack([proj[:, k - 1] for k in SUBSPACE_RANKS], 1) / total[:, None].clamp_min(1e-30)
    share = share.clamp(1e-6, 1 - 1e-6)
    subspace = (share / (1 - share)).log()
    n_win = n_times // GFP_WINDOW
    gfp = x[..., :n_win * GFP_WINDOW].std(1).reshape(len(x), n_win, GFP_WINDOW).mean(-1).clamp_min(1e-30).log()
    gfp = gfp - gfp.mean(-1, keepdim=True)
    return torch.cat([spectrum, subspace, gfp], 1).float()


def n_signal_statistics(n_times: int, sfreq: float) -> int:
    return len(BAND_EDGES) - 1 + len(SUBSPACE_RANKS) + n_times // GFP_WINDOW


class DecodingCheck(ModelMixin, ConfigMixin):
    """Calibrated confidence and an in-distribution score for decoded EEG trials; fit with :func:`fit_decoding_check`.

    Parameters
    ----------
    n_classes : int
    feature_dim : int
        Size of the EEG encoder's features.
    n_chans, n_times : int
        The EEG contract of the encoder (model space).
    sfreq : float
        Sampling rate of the model space in Hz.
    temperature : float
        Divides the log class probabilities before the softmax (1: as the readout gives them).
    threshold : float
        Largest ``ood_score`` still in distribution.
    accept_rate : float
        Share of the validation trials the threshold accepts (how it was chosen).
    scores : list of str
        Which distances make up ``ood_score`` (``"features"``, ``"signal"``).

    Notes
    -----
    Mahalanobis distances to class-conditional Gaussians with a shared covariance follow Lee et al. 2018
    (NeurIPS); temperature scaling follows Guo et al. 2017 (ICML).
    """

    @register_to_config
    def __init__(self, n_classes: int = 40, feature_dim: int = 128, n_chans: int = 128, n_times: int = 440,
                 sfreq: float = 1000.0, temperature: float = 1.0, threshold: float = 3.0, accept_rate: float = 0.95,
                 scores: tuple[str, ...] = SCORES):
        super().__init__()
        n_stats = n_signal_statistics(n_times, sfreq)
        self.register_buffer("class_means", torch.zeros(n_classes, feature_dim))
        self.register_buffer("feature_precision", torch.eye(feature_dim))
        self.register_buffer("spatial_basis", torch.eye(n_chans, max(SUBSPACE_RANKS)))
        self.register_buffer("signal_mean", torch.zeros(n_stats))
        self.register_buffer("signal_precision", torch.eye(n_stats))
        # Location and spread (median, 1.4826 x MAD) of each distance on validation trials: robust z-scores.
        self.register_buffer("score_center", torch.zeros(len(SCORES)))
        self.register_buffer("score_scale", torch.ones(len(SCORES)))
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a dtype and device

    # ----------------------------------------------------------------------------------------------
    def feature_distance(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of encoder features (batch, feature_dim) to the nearest class mean."""
        f, mu, p = features.double(), self.class_means.double(), self.feature_precision.double()
        fp = f @ p  # (f - mu)' P (f - mu), expanded: no (batch, n_classes, dim) tensor
        d = (fp * f).sum(1, keepdim=True) - 2 * fp @ mu.T + ((mu @ p) * mu).sum(1)[None]
        return d.min(1).values.float()

    def signal_distance(self, eeg: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of :func:`signal_statistics` (batch,) to the training trials'."""
        d = signal_statistics(eeg, self.spatial_basis, self.config.sfreq) - self.signal_mean
        return torch.einsum("bd,de,be->b", d, self.signal_precision, d)

    def distances(self, features: torch.Tensor, eeg: torch.Tensor,
                  scores: tuple[str, ...] = SCORES) -> dict[str, torch.Tensor]:
        """Each distance of ``scores`` (batch,) as a robust z-score against the validation trials (0: typical)."""
        raw = {"features": lambda: self.feature_distance(features), "signal": lambda: self.signal_distance(eeg)}
        return {k: (raw[k]().clamp_min(1e-12).log() - self.score_center[i]) / self.score_scale[i]
                for i, k in enumerate(SCORES) if k in scores}

    def ood_score(self, features: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        """The larger of the configured distances' z-scores, (batch,): higher is farther from the training trials."""
        z = self.distances(features, eeg, tuple(self.config.scores))
        return torch.stack([z[k] for k in self.config.scores], 0).max(0).values

    def calibrate(self, class_probs: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled class probabilities (batch, n_classes) from the readout's."""
        return torch.softmax(class_probs.float().clamp_min(1e-30).log() / self.config.temperature, dim=-1)

    @torch.no_grad()
    def forward(self, features: torch.Tensor, eeg: torch.Tensor, class_probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """``confidence`` (batch,) in [0, 1], ``ood_score`` (batch,) and ``in_distribution`` (batch,) bool."""
        score = self.ood_score(features, eeg)
        return {"confidence": self.calibrate(class_probs).max(-1).values, "ood_score": score,
                "in_distribution": score <= self.config.threshold}


# --------------------------------------------------------------------------------------------------
def _precision(centered: torch.Tensor, ridge: float) -> torch.Tensor:
    cov = centered.T @ centered / max(len(centered) - 1, 1)
    cov = cov + ridge * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return torch.linalg.inv(cov)


@torch.no_grad()
def fit_decoding_check(check: DecodingCheck, features: torch.Tensor, eeg: torch.Tensor, labels: torch.Tensor,
                       ridge: float = SIGNAL_RIDGE) -> DecodingCheck:
    """Fit the Gaussians of ``check`` in place on training trials and return it.

    features (n, feature_dim), the encoder's; eeg (n, n_chans, n_times), model-space trials; labels (n,).
    The validation steps (:func:`calibrate_decoding_check`, :func:`fit_temperature`) come after.
    """
    n = len(features)
    if len(eeg) != n or len(labels) != n:
        raise ValueError(f"fit_decoding_check: {n} features, {len(eeg)} trials and {len(labels)} labels; expected "
                         f"one of each per training trial.")
    f = features.double()
    means = torch.stack([f[labels == c].mean(0) for c in range(check.config.n_classes)])
    if not torch.isfinite(means).all():
        raise ValueError("fit_decoding_check: some class has no training trial.")
    check.class_means.copy_(means.float())
    check.feature_precision.copy_(_precision(f - means[labels], ridge).float())
    cov = sum(torch.einsum("bct,bdt->cd", x, x) for x in
              (c.double() - c.double().mean(-1, keepdim=True) for c in eeg.split(256)))
    check.spatial_basis.copy_(torch.linalg.eigh(cov).eigenvectors.flip(-1)[:, :check.spatial_basis.shape[1]].float())
    stats = signal_statistics(eeg, check.spatial_basis, check.config.sfreq).double()
    check.signal_mean.copy_(stats.mean(0).float())
    check.signal_precision.copy_(_precision(stats - stats.mean(0), ridge).float())
    return check


@torch.no_grad()
def calibrate_decoding_check(check: DecodingCheck, features: torch.Tensor, eeg: torch.Tensor, accept_rate: float = 0.95,
                             scores: tuple[str, ...] = SCORES) -> DecodingCheck:
    """On validation trials: the distances' robust location and scale, and the threshold that accepts
    ``accept_rate`` of them, in place. (The temperature: :func:`fit_temperature`.)"""
    for k in scores:
        if k not in SCORES:
            raise ValueError(f"Invalid value for the 'scores' parameter: allowed are {SCORES}, got {k!r}.")
    check.score_center.zero_()
    check.score_scale.fill_(1.0)
    z = check.distances(features, eeg)
    for i, k in enumerate(SCORES):
        med = z[k].median()
        check.score_center[i] = med
        check.score_scale[i] = 1.4826 * (z[k] - med).abs().median().clamp_min(1e-6)
    check.register_to_config(scores=list(scores), accept_rate=float(accept_rate))
    score = check.ood_score(features, eeg)
    check.register_to_config(threshold=round(float(torch.quantile(score, accept_rate)), 4))
    return check


def fit_temperature(class_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature on log class probabilities (validation trials) that minimises the NLL of ``labels``.

    A 1-D search on a log grid from 0.05 to 20, then refined around the best point.
    """
    logp = class_probs.double().clamp_min(1e-30).log()

    def nll(t: float) -> float:
        return float(-torch.log_softmax(logp / t, -1)[torch.arange(len(labels)), labels].mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.06, 0.06, 61))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the share-weighted mean |accuracy - confidence| over ``n_bins`` equal-width confidence bins."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return float(sum(np.abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
                     for b in range(n_bins) if (bins == b).any()))
