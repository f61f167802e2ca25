"""EEGEncoder f(x): EEG trial -> feature vector, trained with a triplet loss (Lan et al. 2023, eq. 1).

Two architectures, chosen by ``arch``:

- ``"lstm"``: the paper's encoder, the LSTM of Kavasidis et al. 2017 ("Brain2Image") / Spampinato et al.
  2017: the 128-channel vector at each time step into an LSTM, its last state through a linear layer.
  Time is average-pooled by ``pool`` first (1 kHz is far above the signal's band), which makes it faster.
- ``"conv"``: a compact temporal + depthwise-spatial convolution network after EEGNet (Lawhern et al.
  2018) and ShallowConvNet (Schirrmeister et al. 2017); faster on CPU.

The output is L2-normalised, so squared distances are bounded in [0, 4] and the triplet margin is
scale-free (as FaceNet).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ConvTrunk(nn.Module):
    """Temporal conv -> depthwise spatial conv -> separable conv, EEGNet-style; (B, C, T) -> (B, n_features)."""

    def __init__(self, n_chans: int, n_times: int, f1: int = 16, depth: int = 2, f2: int = 64, kernel: int = 8,
                 pool1: int = 2, pool2: int = 5, dropout: float = 0.25, input_pool: int = 4):
        super().__init__()
        # 1 kHz is far above the evoked responses' band: average 4 samples first (250 Hz), 4x less compute.
        self.input_pool = nn.AvgPool1d(input_pool)
        n_times = n_times // input_pool
        self.net = nn.Sequential(
            nn.Conv2d(1, f1, (1, kernel), padding=(0, kernel // 2), bias=False),
            nn.BatchNorm2d(f1),
            nn.Conv2d(f1, f1 * depth, (n_chans, 1), groups=f1, bias=False),
            nn.BatchNorm2d(f1 * depth),
            nn.ELU(),
            nn.AvgPool2d((1, pool1)),
            nn.Dropout(dropout),
            nn.Conv2d(f1 * depth, f1 * depth, (1, 8), padding=(0, 4), groups=f1 * depth, bias=False),
            nn.Conv2d(f1 * depth, f2, 1, bias=False),
            nn.BatchNorm2d(f2),
            nn.ELU(),
            nn.AvgPool2d((1, pool2)),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        # Computed, not measured with a dummy forward: diffusers builds models on the meta device.
        self.n_features = f2 * (((n_times + 1) // pool1 + 1) // pool2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_pool(x)[:, None])


class EEGEncoder(ModelMixin, ConfigMixin):
    """EEG trial (batch, n_chans, n_times) -> L2-normalised features (batch, embed_dim).

    Parameters
    ----------
    n_chans, n_times : int
        The input contract (128 actiCAP channels, 440 samples = 20-460 ms at 1 kHz).
    sfreq : float
        Sampling rate the model expects.
    ch_names : list of str | None
        Channel order the model expects (None: ``neuroimagen.data.montage.model_ch_names()``).
    arch : str
        ``"lstm"`` (the paper's) or ``"conv"``.
    embed_dim : int
        Feature size.
    hidden_size : int
        LSTM state size (``arch="lstm"``).
    pool : int
        Time pooling before the LSTM.
    """

    @register_to_config
    def __init__(self, n_chans: int = 128, n_times: int = 440, sfreq: float = 1000.0, ch_names: list[str] | None = None,
                 arch: str = "conv", embed_dim: int = 128, hidden_size: int = 128, pool: int = 4,
                 dropout: float = 0.25):
        super().__init__()
        from .._check import check_option

        check_option("arch", arch, ("lstm", "conv"))
        if arch == "lstm":
            self.time_pool = nn.AvgPool1d(pool)
            self.lstm = nn.LSTM(n_chans, hidden_size, batch_first=True)
            n_features = hidden_size
        else:
            self.trunk = ConvTrunk(n_chans, n_times, dropout=dropout)
            n_features = self.trunk.n_features
        self.final_layer = nn.Linear(n_features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "lstm":
            h = self.lstm(self.time_pool(x).transpose(1, 2))[0][:, -1]
        else:
            h = self.trunk(x)
        return nn.functional.normalize(self.final_layer(h), dim=-1)
