"""ImageClassifier: the evaluation's image classifier (stands in for the paper's ImageNet classifier).

Used only to score reconstructions (ACC, IS), never by the pipeline. A small CNN on 64 x 64 images.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ImageClassifier(ModelMixin, ConfigMixin):
    """Images (batch, 3, H, W) in [-1, 1] -> class logits (batch, n_outputs); no softmax inside.

    Four VGG-style blocks (two 3 x 3 convolutions with batch norm, then max pooling; Simonyan & Zisserman
    2015), global average pooling, dropout and ``final_layer``. It plays the part of the ImageNet
    classifier (ACC) and of Inception-v3 (IS) in Lan et al. 2023's evaluation.

    Parameters
    ----------
    n_outputs : int
        Number of classes.
    base_channels : int
        Width of the first block, doubled in each of the next three.
    dropout : float
        Dropout before ``final_layer``.
    """

    @register_to_config
    def __init__(self, n_outputs: int = 40, base_channels: int = 32, dropout: float = 0.3):
        super().__init__()
        layers, c = [], 3
        for k in range(4):
            cout = base_channels * 2**k
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                       nn.MaxPool2d(2)]
            c = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.final_layer = nn.Linear(c, n_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, n_outputs) of images (batch, 3, H, W) in [-1, 1]."""
        return self.final_layer(self.body(images))
