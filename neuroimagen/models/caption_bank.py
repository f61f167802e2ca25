"""CaptionBank: the captions the readout can name, and the states the diffusion model is conditioned on.

Holds the label captions' full token states (for ``caption_source="label"``), the empty caption's (for
classifier-free guidance) and the pooled states of the detailed captions (for the top-k readout), so
inference needs no text encoder. Saved like a model (config.json with the texts + safetensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .._check import check_range
from ..data.captions import pool


class CaptionBank(ModelMixin, ConfigMixin):
    """Caption texts and states; :meth:`readout` turns predicted states into captions and class probabilities.

    Build it with :meth:`build`; save and load it like a model (``save_pretrained(dir)`` /
    ``CaptionBank.from_pretrained(dir)``: the texts go into ``config.json``, the states into safetensors).

    Parameters
    ----------
    label_texts : list of str
        One label caption per class, in class order.
    detailed_texts : list of str
        The detailed captions of the stimulus set.
    detailed_classes : list of int
        Class of each detailed caption.
    seq_len, hidden_dim : int
        Token states' shape.
    text_encoder_type : str
        ``model_type`` of the text encoder the states came from ("bert" for MiniLM, "clip_text_model" for SD's CLIP).
    text_encoder : str
        The text encoder's name as training named it: "minilm", or an SD / CLIP model's folder or hub id ("": not
        recorded, as in banks built before it was). Informative only: whether a diffusion model's text encoder
        matches is decided by what it computes (``NeuroImagenPipeline.uses_text_encoder``).
    temperature : float
        Softmax temperature on cosine similarities for class probabilities (fit on validation data).
    """

    @register_to_config
    def __init__(self, label_texts: list[str] = (), detailed_texts: list[str] = (), detailed_classes: list[int] = (),
                 seq_len: int = 32, hidden_dim: int = 384, text_encoder_type: str = "bert", text_encoder: str = "",
                 temperature: float = 0.05):
        super().__init__()
        self.register_buffer("label_bank", torch.zeros(len(label_texts), seq_len, hidden_dim))
        self.register_buffer("empty_state", torch.zeros(1, seq_len, hidden_dim))
        self.register_buffer("detailed_pooled", torch.zeros(len(detailed_texts), hidden_dim))
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a dtype and device

    @classmethod
    def build(cls, label_texts: list[str], label_states: torch.Tensor, empty_state: torch.Tensor,
              detailed_texts: list[str], detailed_states: torch.Tensor, detailed_classes: list[int],
              text_encoder_type: str = "bert", text_encoder: str = "", temperature: float = 0.05) -> CaptionBank:
        """A bank from caption states: label (n_classes, L, D), empty (1, L, D), detailed (n, L, D)."""
        bank = cls(label_texts=list(label_texts), detailed_texts=list(detailed_texts),
                   detailed_classes=[int(c) for c in detailed_classes], seq_len=label_states.shape[1],
                   hidden_dim=label_states.shape[2], text_encoder_type=text_encoder_type, text_encoder=text_encoder,
                   temperature=temperature)
        bank.label_bank.copy_(label_states)
        bank.empty_state.copy_(empty_state.reshape(1, *label_states.shape[1:]))
        bank.detailed_pooled.copy_(pool(detailed_states))
        return bank

    @property
    def hidden_dim(self) -> int:
        """Width D of the states (384 for MiniLM)."""
        return int(self.config.hidden_dim)

    @property
    def seq_len(self) -> int:
        """Length L of the states (32 for MiniLM, 77 for SD's CLIP)."""
        return int(self.config.seq_len)

    @property
    def n_classes(self) -> int:
        return len(self.config.label_texts)

    def label_states(self, class_idx: torch.Tensor | int | Sequence[int]) -> torch.Tensor:
        """Token states of the label captions of classes ``class_idx`` (batch,) -> (batch, L, D)."""
        return self.label_bank[torch.as_tensor(class_idx, device=self.label_bank.device).long()]

    def empty_states(self, batch: int) -> torch.Tensor:
        """The empty caption's states repeated, (batch, L, D): the unconditional input of guidance."""
        return self.empty_state.expand(batch, -1, -1)

    def class_logits(self, label_pred: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of predicted label-caption states (batch, L, D) to each class's, (batch, n_classes)."""
        return pool(label_pred) @ pool(self.label_bank).T

    @torch.no_grad()
    def readout(self, states: torch.Tensor, k: int = 5, targets: Sequence[str] | None = None) -> dict:
        """Top-k captions and class probabilities from predicted states.

        Parameters
        ----------
        states : Tensor, shape (batch, n_targets, L, D)
            The semantic decoder's output.
        k : int
            Captions to return per trial.
        targets : sequence of str | None
            The caption kind of each target (None: ``("label", "detailed")[:n_targets]``, the decoder's default).

        Returns
        -------
        readout : dict
            ``class_probs`` Tensor (batch, n_classes): softmax over the cosine similarities of the pooled
            label-caption prediction to each class's label caption, divided by ``temperature``;
            ``captions``: per trial a list of the top-k ``(label caption, probability)``;
            ``detailed_captions``: per trial a list of the top-k ``(detailed caption, cosine similarity)``
            (empty lists when there is no detailed target).
        """
        check_range("k", k, 1)
        if states.ndim != 4 or tuple(states.shape[2:]) != tuple(self.label_bank.shape[1:]):
            raise ValueError(f"states must have shape (batch, n_targets, {self.label_bank.shape[1]}, "
                             f"{self.label_bank.shape[2]}), got {tuple(states.shape)}.")
        targets = tuple(targets) if targets is not None else ("label", "detailed")[:states.shape[1]]
        states = states.float()
        probs = torch.softmax(self.class_logits(states[:, targets.index("label")]) / self.config.temperature, dim=-1)
        p, i = probs.topk(min(k, probs.shape[1]), dim=-1)
        captions = [[(self.config.label_texts[j], round(float(q), 4)) for q, j in zip(pr, ir)] for pr, ir in zip(p, i)]
        detailed = [[] for _ in range(len(states))]
        if "detailed" in targets and len(self.config.detailed_texts):
            sim = pool(states[:, targets.index("detailed")]) @ self.detailed_pooled.float().T
            s, j = sim.topk(min(k, sim.shape[1]), dim=-1)
            detailed = [[(self.config.detailed_texts[b], round(float(a), 4)) for a, b in zip(sr, jr)]
                        for sr, jr in zip(s, j)]
        return {"class_probs": probs, "captions": captions, "detailed_captions": detailed}
