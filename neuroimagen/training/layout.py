"""Stage ``layout`` (optional): fit the pipeline's LayoutPrior (class templates and an EEG -> object box regressor).

    python -m neuroimagen.train layout --config configs/tiny.json

Needs the ``encoder`` stage (its features are one input of the box regressor) and a stimulus folder whose
metadata gives each object's box (``cx``, ``cy``, ``scale``) and background colour, as
``python -m neuroimagen.data stimuli`` writes; the real EEG-ImageNet images have no such boxes, so the stage
refuses them. ``"template": "aligned"`` also needs each stimulus's rotation, mirroring and emoji (the renderer
writes them), and ``"background": "flat"`` makes the prior draw on the saliency map's mean colour (``LayoutPrior``).
No gradient descent: the templates are means, the regressor is ridge regression (seconds on CPU).
Writes ``<out>/layout/`` (the component) and ``metrics.json`` with the box regressor's R^2 on the validation and
test trials.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data.stimuli import load_stimulus_metadata
from ..models import EEGEncoder, LayoutPrior
from ..models.layout_prior import box_r2, eeg_window_means, fit_layout_prior
from .common import training_stage, write_metrics
from .config import Paths
from .eeg_data import embed_all, load_split, to_tensor
from .images import stimulus_images


@dataclass
class Config:
    template_size: int = 32  # side of the class templates
    ridge: float = 100.0  # L2 penalty of the box regressor (on standardised inputs; 100 was best of 1, 100, 1000)
    default_weight: float = 1.0  # the pipeline's layout_weight when a call gives none
    # "mean": each class's template is the mean of its training stimuli aligned on the object's box only (a blur of
    # every emoji, rotation and mirror image of the class); "aligned": aligned on box, rotation and mirroring, over
    # the class's most common emoji only (a sharp drawing of that emoji; needs the renderer's rotation and flip)
    template: str = "mean"
    # what the template is drawn on: "saliency" (the generator's map) or "flat" (its mean colour outside the template)
    background: str = "saliency"
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)


def stimulus_boxes(stimuli_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Each stimulus's object box (n, 3: centre x, centre y, side) and background colour (n, 3) in [-1, 1]."""
    records = load_stimulus_metadata(stimuli_dir)  # a folder without metadata.json (real images) is refused there
    boxes = torch.tensor([[r.cx, r.cy, r.scale] for r in records], dtype=torch.float32)
    backgrounds = torch.tensor([r.background_rgb for r in records], dtype=torch.float32) / 127.5 - 1
    return boxes, backgrounds


def stimulus_orientations(stimuli_dir) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each stimulus's rotation in degrees (n,), mirroring (n,) and emoji as an integer code (n,), for the
    ``aligned`` templates; a metadata file without rotations is refused."""
    records = load_stimulus_metadata(stimuli_dir)
    missing = [r.file for r in records if not isinstance(r.rotation, (int, float)) or not np.isfinite(r.rotation)
               or not r.emoji][:3]
    if missing:
        raise ValueError(f"layout: template 'aligned' needs each stimulus's rotation and emoji in {stimuli_dir}/"
                         f"metadata.json (as `python -m neuroimagen.data stimuli` writes); {missing} have none. "
                         "Use template 'mean'.")
    codes = {e: i for i, e in enumerate(sorted({r.emoji for r in records}))}
    rotation = torch.tensor([r.rotation for r in records], dtype=torch.float32)
    return (rotation, torch.tensor([bool(r.flipped) for r in records]),
            torch.tensor([codes[r.emoji] for r in records]))


def window_means(eeg: np.ndarray, batch: int = 512) -> torch.Tensor:
    return torch.cat([eeg_window_means(to_tensor(eeg, slice(i, i + batch))) for i in range(0, len(eeg), batch)])


@training_stage
def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    out = paths.stage_dir("layout")
    if cfg.template not in ("mean", "aligned"):
        raise ValueError(f"layout: template must be 'mean' or 'aligned', got {cfg.template!r}.")
    boxes, backgrounds = stimulus_boxes(paths.stimuli)
    orient = stimulus_orientations(paths.stimuli) if cfg.template == "aligned" else (None, None, None)
    images = stimulus_images(paths.stimuli)
    encoder = EEGEncoder.from_pretrained(paths.stage_dir("encoder")).eval().requires_grad_(False)
    tr = load_split(paths, "train")
    n_classes = int(max(tr["labels"])) + 1
    prior = LayoutPrior(num_classes=n_classes, template_size=cfg.template_size,
                        feature_dim=encoder.config.embed_dim,
                        n_channels=int(tr["eeg"].shape[1]), default_weight=cfg.default_weight,
                        background=cfg.background)
    s = torch.from_numpy(tr["stim_index"])
    rotation, flipped, groups = (None if t is None else t[s] for t in orient)
    fit_layout_prior(prior, images[s], backgrounds[s], boxes[s], torch.from_numpy(np.asarray(tr["labels"])),
                     embed_all(encoder, tr["eeg"]), window_means(tr["eeg"]), ridge=cfg.ridge,
                     rotation=rotation, flipped=flipped, groups=groups)
    prior.save_pretrained(out)
    metrics = {"stage": "layout", "config": asdict(cfg), "n_train_trials": len(s)}
    for split in ("val", "test"):
        d = load_split(paths, split)
        with torch.no_grad():
            pred = prior.boxes(embed_all(encoder, d["eeg"]), torch.from_numpy(np.array(d["eeg"], dtype=np.float32)))
        r2 = box_r2(pred.numpy(), boxes[torch.from_numpy(d["stim_index"])].numpy())
        metrics.update({f"{split}_r2_cx": r2[0], f"{split}_r2_cy": r2[1], f"{split}_r2_size": r2[2]})
    write_metrics(out, metrics)
    return {k: v for k, v in metrics.items() if k.startswith("test_r2")}
