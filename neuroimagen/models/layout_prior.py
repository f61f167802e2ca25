"""LayoutPrior: the decoded class's object template, drawn into the saliency map where the EEG says it was.

The saliency generator is trained towards the stimulus (SSIM, thumbnails), so it learns what it can predict
from the EEG: the background's colour and a faint blob where the object was. The object's shape, which
varies with the emoji, the size and the rotation, averages away, and the diffusion model, started from a
faint blob, draws a small, malformed object. This module adds what the EEG does decode, as an image:

- a **template per class**: the mean of the class's training stimuli aligned on their object's box
  (centre and size, from the stimulus set's metadata), as a colour image and a coverage (how often each
  template pixel is object rather than background); with the renderer's rotation, mirroring and emoji
  (``fit_layout_prior``'s ``rotation``, ``flipped``, ``groups``), aligned on those too over the class's most
  common emoji, a sharp drawing of that emoji;
- a **box regressor**: ridge regression from the EEG encoder's features and the EEG's mean amplitude in
  11 windows of 20 samples (the early visual responses, 40-260 samples after onset) to the object's centre
  and size;
- :meth:`composite`: the template of the decoded class, placed in the decoded box, blended with ``weight`` x
  coverage as opacity into the saliency map (``background="saliency"``) or into the map's mean colour outside
  the template (``background="flat"``: any weight > 0 replaces the map's texture by that colour).

Stimulus sets without object boxes (the real EEG-ImageNet images) cannot fit it: :func:`fit_layout_prior`
says so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

WINDOWS = tuple(range(40, 260, 20))  # window starts (samples after onset), 20 samples each
WINDOW_LEN = 20


def eeg_window_means(eeg: torch.Tensor) -> torch.Tensor:
    """(batch, channels, times) -> (batch, channels x len(WINDOWS)): mean amplitude in each early window."""
    if eeg.shape[-1] < WINDOWS[-1] + WINDOW_LEN:
        raise ValueError(f"LayoutPrior needs at least {WINDOWS[-1] + WINDOW_LEN} samples per trial, got {eeg.shape[-1]}.")
    return torch.cat([eeg[..., a:a + WINDOW_LEN].mean(-1) for a in WINDOWS], dim=1)


def box_grid(boxes: torch.Tensor, size: int, place: bool, rotation: torch.Tensor | None = None,
             flipped: torch.Tensor | None = None) -> torch.Tensor:
    """Sampling grid for ``F.grid_sample``. boxes (n, 3): centre x, centre y in [0, 1], side as a fraction of the
    image. ``place=False``: crop the box out of an image into a size x size template; ``place=True``: draw a
    template into a size x size image at the box. ``rotation`` (n,) in degrees and ``flipped`` (n,) bool, crops
    only: undo the stimulus renderer's mirroring and rotation (PIL's ``rotate``, counter-clockwise on screen,
    after ``FLIP_LEFT_RIGHT``), so that every crop shows its emoji upright and unmirrored."""
    cx, cy, s = boxes[:, 0] * 2 - 1, boxes[:, 1] * 2 - 1, boxes[:, 2].clamp(min=0.05)
    theta = torch.zeros(len(boxes), 2, 3, dtype=boxes.dtype, device=boxes.device)
    if place:
        if rotation is not None or flipped is not None:
            raise ValueError("box_grid: rotation and flipped undo a stimulus's drawing; they apply to crops only.")
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
        theta[:, 0, 2], theta[:, 1, 2] = -cx / s, -cy / s
    else:
        a = torch.deg2rad(rotation.to(boxes.dtype)) if rotation is not None else torch.zeros_like(s)
        f = 1 - 2 * flipped.to(boxes.dtype) if flipped is not None else torch.ones_like(s)
        # template point p -> image point: centre + side * R(-a) @ diag(f, 1) @ p (y points down on screen)
        theta[:, 0, 0], theta[:, 0, 1] = s * torch.cos(a) * f, s * torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = -s * torch.sin(a) * f, s * torch.cos(a)
        theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    return F.affine_grid(theta, [len(boxes), 1, size, size], align_corners=False)


class LayoutPrior(ModelMixin, ConfigMixin):
    """Class templates and an EEG -> object box regressor; fit with :func:`fit_layout_prior`.

    Parameters
    ----------
    num_classes : int
    template_size : int
        Side of the templates (the box is resampled to it).
    feature_dim : int
        Size of the EEG encoder's features.
    n_channels : int
        EEG channels (the window means add ``n_channels * len(WINDOWS)`` inputs).
    default_weight : float
        The pipeline's ``layout_weight`` when the call does not give one.
    background : str
        What the template is drawn on: ``"saliency"``, the generator's map as it is; ``"flat"``, the map's mean
        colour outside the template (the generator's maps hold the background colour and a noisy texture that
        no stimulus has, which the autoencoder and the UNet turn into shapes of their own).
    """

    @register_to_config
    def __init__(self, num_classes: int = 40, template_size: int = 32, feature_dim: int = 128, n_channels: int = 128,
                 default_weight: float = 1.0, background: str = "saliency"):
        super().__init__()
        if background not in ("saliency", "flat"):
            raise ValueError(f"LayoutPrior: background must be 'saliency' or 'flat', got {background!r}.")
        n_in = feature_dim + n_channels * len(WINDOWS)
        self.register_buffer("templates", torch.zeros(num_classes, 3, template_size, template_size))
        self.register_buffer("coverage", torch.zeros(num_classes, 1, template_size, template_size))
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_std", torch.ones(n_in))
        self.box_head = nn.Linear(n_in, 3)
        self.box_head.weight.data.zero_()
        self.box_head.bias.data.copy_(torch.tensor([0.5, 0.5, 0.7]))

    def box_inputs(self, features: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features.float(), eeg_window_means(eeg.float())], dim=1)
        return (x - self.input_mean) / self.input_std

    def boxes(self, features: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        """Decoded object boxes (batch, 3): centre x, centre y (0 = left / top, 1 = right / bottom) and side."""
        b = self.box_head(self.box_inputs(features, eeg))
        return torch.stack([b[:, 0].clamp(0, 1), b[:, 1].clamp(0, 1), b[:, 2].clamp(0.1, 1.5)], dim=1)

    def render(self, classes: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The templates of ``classes`` placed at ``boxes``: images (n, 3, size, size) in [-1, 1], coverage (n, 1, ...)."""
        grid = box_grid(boxes.float(), size, place=True)
        img = F.grid_sample(self.templates[classes], grid, align_corners=False)
        cov = F.grid_sample(self.coverage[classes], grid, align_corners=False)
        return img, cov

    def composite(self, saliency: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor, weight: float) -> torch.Tensor:
        """Blend the placed templates into ``saliency`` (n, 3, H, W) in [-1, 1], opacity ``weight`` x coverage; with
        ``background="flat"`` into the map's mean colour outside the template (its mean over the whole map when the
        template covers nearly all of it) instead of the map itself."""
        if weight <= 0:
            return saliency
        img, cov = self.render(classes, boxes, saliency.shape[-1])
        if self.config.background == "flat":  # the map's mean colour where the template does not cover it
            outside = (1 - cov).clamp(min=0).to(saliency.dtype)
            area = outside.sum((2, 3), keepdim=True)
            colour = torch.where(area > 1, (saliency * outside).sum((2, 3), keepdim=True) / area.clamp(min=1),
                                 saliency.mean((2, 3), keepdim=True))
            saliency = colour.expand_as(saliency)
        alpha = (weight * cov).clamp(max=1).to(saliency.dtype)
        return saliency * (1 - alpha) + img.to(saliency.dtype) * alpha


@torch.no_grad()
def fit_layout_prior(prior: LayoutPrior, images: torch.Tensor, backgrounds: torch.Tensor, boxes: torch.Tensor,
                     labels: torch.Tensor, features: torch.Tensor, eeg_inputs: torch.Tensor, ridge: float = 100.0,
                     threshold: float = 24 / 127.5, rotation: torch.Tensor | None = None,
                     flipped: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> LayoutPrior:
    """Fit ``prior`` in place from training trials and return it.

    images (n, 3, H, W) in [-1, 1], the stimuli the trials saw; backgrounds (n, 3) their background colour in
    [-1, 1]; boxes (n, 3) their object box (centre x, centre y, side as a fraction of the image); labels (n,);
    features (n, feature_dim), the EEG encoder's; eeg_inputs (n, n_channels * len(WINDOWS)), ``eeg_window_means``.
    A pixel is object where it differs from the background by more than ``threshold`` (summed over RGB).

    ``rotation`` and ``flipped`` (n,), the stimulus renderer's, align the crops on the emoji's own orientation
    (:func:`box_grid`), and ``groups`` (n,) non-negative int, which emoji each stimulus shows, restricts each class's
    template to its most common emoji (of equally common ones, the lowest code): with both, the template is a sharp drawing of that emoji instead of a blur of
    every emoji, orientation and mirror image the class was shown in.
    """
    n = len(images)
    for name, t in (("backgrounds", backgrounds), ("boxes", boxes), ("labels", labels), ("features", features),
                    ("eeg_inputs", eeg_inputs), ("rotation", rotation), ("flipped", flipped), ("groups", groups)):
        if t is not None and len(t) != n:
            raise ValueError(f"fit_layout_prior: {name} has {len(t)} rows, the images {n}.")
    size = prior.config.template_size
    mask = ((images - backgrounds[:, :, None, None]).abs().sum(1, keepdim=True) > threshold).float()
    for c in range(prior.config.num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) == 0:
            raise ValueError(f"fit_layout_prior: no training trial of class {c}.")
        if groups is not None:  # the most common emoji; of equally common ones, the lowest code
            idx = idx[groups[idx] == torch.bincount(groups[idx]).argmax()]
        grid = box_grid(boxes[idx].float(), size, place=False,
                        rotation=None if rotation is None else rotation[idx].float(),
                        flipped=None if flipped is None else flipped[idx])
        colour = F.grid_sample(images[idx] * mask[idx], grid, align_corners=False).sum(0)
        cover = F.grid_sample(mask[idx], grid, align_corners=False)
        prior.templates[c] = colour / cover.sum(0).clamp(min=1e-3)
        prior.coverage[c] = cover.mean(0)
    x = torch.cat([features.float(), eeg_inputs.float()], dim=1).double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.cat([(x - mean) / std, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    w = torch.linalg.solve(z.T @ z + ridge * torch.eye(z.shape[1], dtype=x.dtype), z.T @ boxes.double())
    prior.input_mean.copy_(mean.float())
    prior.input_std.copy_(std.float())
    prior.box_head.weight.copy_(w[:-1].T.float())
    prior.box_head.bias.copy_(w[-1].float())
    return prior


def box_r2(pred: np.ndarray, true: np.ndarray) -> list[float]:
    """R^2 of each box coordinate."""
    return [round(float(1 - ((pred[:, j] - true[:, j]) ** 2).mean() / true[:, j].var()), 4) for j in range(true.shape[1])]
