"""SemanticDecoder h(x): EEG trial -> the text encoder's token states of the seen image's caption.

Lan et al. 2023 map EEG to the CLIP text embedding of a caption with an MSE loss (sample-level
semantics). Here the targets are a text encoder's last hidden states of two captions per image (L x 384 of
MiniLM by default, 77 x 768 of Stable Diffusion 1.5's CLIP as the paper: training's ``semantic.text_encoder``):
the label caption ("an image of a giant panda") and the detailed caption (standing in for BLIP's). An EEG
trunk (as :class:`~neuroimagen.models.eeg_encoder.ConvTrunk`) gives a small vector per target, decoded
linearly onto a low-rank basis around the mean caption: ``states = mean + coef @ basis``. With MSE the
best prediction is the expected caption given the EEG, a mixture of the likely captions.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .._check import check_option
from .eeg_encoder import ConvTrunk, check_eeg_input, input_pool_for


class SemanticDecoder(ModelMixin, ConfigMixin):
    """EEG (batch, n_chans, n_times) -> caption states (batch, n_targets, seq_len, hidden_dim).

    Parameters
    ----------
    n_chans, n_times, sfreq, ch_names, tmin
        The EEG contract (as :class:`~neuroimagen.models.EEGEncoder`).
    seq_len, hidden_dim : int
        The text encoder's padded length and width (32 x 384 for MiniLM; 77 x 768 for SD 1.5's CLIP).
    targets : list of str
        Caption kinds, in output order.
    rank : int
        Size of the low-rank basis per target.
    hidden : int
        Width of the trunk's output layer.
    dropout : float
        Dropout of the trunk and the head.

    Notes
    -----
    Source paper: Lan et al. 2023, "Seeing through the Brain" (sample-level semantics, MSE to the text
    embedding); the trunk follows EEGNet (Lawhern et al. 2018).
    """

    @register_to_config
    def __init__(self, n_chans: int = 128, n_times: int = 440, sfreq: float = 1000.0, ch_names: list[str] | None = None,
                 seq_len: int = 32, hidden_dim: int = 384, targets: tuple[str, ...] = ("label", "detailed"),
                 rank: int = 64, hidden: int = 256, dropout: float = 0.25, tmin: float = 0.02):
        super().__init__()
        for t in targets:
            check_option("targets", t, ("label", "detailed"))
        n_t = len(targets)
        self.trunk = ConvTrunk(n_chans, n_times, dropout=dropout, input_pool=input_pool_for(sfreq))
        self.head = nn.Sequential(nn.Linear(self.trunk.n_features, hidden), nn.ELU(), nn.Dropout(dropout))
        self.final_layer = nn.Linear(hidden, n_t * rank)
        self.mean = nn.Parameter(torch.zeros(n_t, seq_len * hidden_dim))
        self.basis = nn.Parameter(torch.randn(n_t, rank, seq_len * hidden_dim) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Caption states predicted from EEG ``x`` (batch, n_chans, n_times) -> (batch, n_targets, L, D)."""
        c = self.config
        check_eeg_input(x, c.n_chans, c.n_times, "SemanticDecoder")
        coef = self.final_layer(self.head(self.trunk(x))).view(len(x), len(c.targets), c.rank)
        states = self.mean[None] + torch.einsum("btr,trd->btd", coef, self.basis)
        return states.view(len(x), len(c.targets), c.seq_len, c.hidden_dim)

    @torch.no_grad()
    def init_basis(self, target_states: list[torch.Tensor]) -> None:
        """Set each target's mean and basis from its training targets (PCA), so training starts close."""
        for k, s in enumerate(target_states):
            flat = s.reshape(len(s), -1).float()
            mean = flat.mean(0)
            # Randomised SVD: a full one of (n_trials, L * D) takes minutes on a CPU and only the top
            # `rank` directions are kept.
            r = min(self.config.rank, *flat.shape)
            _, _, v = torch.svd_lowrank(flat - mean, q=r, niter=3)
            self.mean[k] = mean
            self.basis[k].zero_()
            self.basis[k, :r] = v[:, :r].T
