"""ClassDecoder: the decoded class from the best decoder we have, fitted for the class.

The pipeline's other EEG models are trained for what the picture needs: the encoder f(x) with a triplet
loss and a layout read-out (the saliency map is drawn from it), the semantic decoder h(x) with MSE to
caption states (the paper's sample-level semantics). Neither is trained to name the class, and on the
``realistic`` simulated preset an EEGNet-style CNN trained with cross-entropy names it more often
(``reports/realistic``: 55.6 % top-1 against the caption readout's 48.1 %). This component is that CNN,
trained for the class (stage ``class_decoder``, with the same channel-subset augmentation as the other EEG
stages), and optionally combined with the semantic decoder's caption readout:

    log p(c | x) = (1 - w) * log softmax(cnn(x))_c + w * log p_readout(c | x) + const,

with ``w = readout_weight`` chosen on validation trials (0: the CNN alone, 1: the readout alone). The
pipeline takes its decoded class (the label caption, the layout prior's template, ``class_probs``) from
here when the checkpoint has one; the encoder keeps feeding the saliency map.

Source: EEGNet (Lawhern et al. 2018, J. Neural Eng.); the combination is a product of experts
(Hinton 2002) with one weight.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .eeg_encoder import ConvTrunk, check_eeg_input, input_pool_for


class ClassDecoder(ModelMixin, ConfigMixin):
    """EEG (batch, n_chans, n_times) -> class logits (batch, n_classes), combined with the readout by :meth:`class_probs`.

    Parameters
    ----------
    n_chans, n_times, sfreq, ch_names, tmin
        The EEG contract (as :class:`~neuroimagen.models.EEGEncoder`).
    labels : list of str
        The classes (synsets), in the caption bank's order: output column ``c`` is ``labels[c]``.
    readout_weight : float
        ``w`` in [0, 1]: the weight of the caption readout's log probabilities against the CNN's.
    dropout : float
        Dropout of the trunk.
    """

    @register_to_config
    def __init__(self, n_chans: int = 128, n_times: int = 440, sfreq: float = 1000.0, ch_names: list[str] | None = None,
                 labels: list[str] = (), readout_weight: float = 0.0, dropout: float = 0.25, tmin: float = 0.02):
        super().__init__()
        from .._check import check_range

        check_range("readout_weight", readout_weight, 0.0, 1.0)
        if not labels:
            raise ValueError("ClassDecoder needs its class labels (synsets, in the caption bank's order), got none.")
        if ch_names is not None and len(ch_names) != n_chans:
            raise ValueError(f"ch_names has {len(ch_names)} names but n_chans is {n_chans}.")
        self.trunk = ConvTrunk(n_chans, n_times, dropout=dropout, input_pool=input_pool_for(sfreq))
        self.final_layer = nn.Linear(self.trunk.n_features, len(labels))

    @property
    def n_classes(self) -> int:
        return len(self.config.labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN's class logits (batch, n_classes) of EEG ``x`` (batch, n_chans, n_times)."""
        check_eeg_input(x, self.config.n_chans, self.config.n_times, "ClassDecoder")
        return self.final_layer(self.trunk(x))

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor, readout_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities (batch, n_classes): the CNN's, combined with ``readout_probs`` by ``readout_weight``.

        ``readout_probs`` (the caption bank's ``class_probs``, same class order) is required when the weight
        is above 0.
        """
        logp = torch.log_softmax(self(x).float(), dim=-1)
        return combine(logp, readout_probs, float(self.config.readout_weight))


def combine(logp: torch.Tensor, readout_probs: torch.Tensor | None, weight: float) -> torch.Tensor:
    """``softmax((1 - weight) * logp + weight * log readout_probs)`` (``logp``: the CNN's log probabilities)."""
    if weight == 0:
        return logp.softmax(-1)
    if readout_probs is None:
        raise ValueError(f"This ClassDecoder combines its CNN with the caption readout (readout_weight {weight:g}): "
                         f"pass the readout's class probabilities, got None.")
    if readout_probs.shape != logp.shape:
        raise ValueError(f"readout_probs must have the CNN's shape {tuple(logp.shape)} (batch, n_classes), "
                         f"got {tuple(readout_probs.shape)}: the caption bank and the class decoder disagree on the "
                         f"classes.")
    mixed = (1 - weight) * logp + weight * readout_probs.float().clamp_min(1e-30).log()
    return mixed.softmax(-1)
