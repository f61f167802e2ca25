"""The paper's evaluation on real images: ACC by an ImageNet classifier (50-way top-1), IS by Inception v3,
SSIM at 512 x 512.

Lan et al. 2023 (Sec. 4.1) score reconstructions of the real EEG-ImageNet with an ImageNet classifier in
the "50-way top-1" protocol, the Inception score (Inception v3) and SSIM against the seen image. The
protocol is the one DreamDiffusion and BrainVis ship (DreamDiffusion ``code/eval_metrics.py``,
``n_way_top_k_acc`` / ``get_n_way_top_k_acc``; BrainVis ``evaluate_GA.py``):

1. the ground truth of a reconstruction is the classifier's top class of the **seen image** (not the
   EEG-ImageNet label: the classifier's 1,000 classes are ImageNet's, and its view of the stimulus is the
   reference);
2. for each reconstruction, draw 49 other classes of the classifier's 1,000 without replacement; it is
   correct when the ground-truth class has the highest probability of the 50 (top-1);
3. repeat the draw (BrainVis: 50 times, DreamDiffusion's default 40) and average, then average over
   reconstructions (BrainVis: 4 per seen image).

:func:`~neuroimagen.evaluation.metrics.n_way_accuracy` computes step 3's expectation over the draws exactly
(hypergeometric; ``n_trials=None``, the default here) or samples the draws as they do (``n_trials=50``).

IS is exp(E KL(p(y|x) || p(y))) over Inception v3's 1,000 ImageNet classes, the images resized to
299 x 299, in ``is_splits`` splits (10, as torch-fidelity which BrainVis's ``evaluate_IS.py`` calls). SSIM
is skimage's on RGB at 512 x 512 (the Stable Diffusion v1.5 output size the unofficial reimplementation used;
the paper names no size; DreamDiffusion's ``ssim_metric`` is the same call on uint8 RGB).

The simulated benchmark keeps its own 40-class classifier (:mod:`neuroimagen.evaluation.ablation`): these
metrics are for real images, with classifiers loaded by hub id or path (no download happens here without
network; tests use tiny random ones saved to a folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._check import check_range
from .metrics import inception_score, mean_sem, n_way_accuracy, rgb_arrays, ssim

PAPER_N_WAY = 50  # Lan et al. 2023: 50-way top-1
PAPER_TOP_K = 1
BRAINVIS_N_TRIALS = 50  # BrainVis evaluate_GA.py: num_trials = 50 draws of the 49 other classes per image
PAPER_SSIM_SIZE = 512  # Stable Diffusion v1.5's output size (the unofficial reimplementation's; the paper names none)
INCEPTION_SIZE = 299  # Inception v3's input side
IS_SPLITS = 10  # torch-fidelity's default number of splits for IS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOURCES = {
    "n_way_protocol": "DreamDiffusion code/eval_metrics.py (n_way_top_k_acc, get_n_way_top_k_acc); "
                      "BrainVis evaluate_GA.py (n_way = 50, num_trials = 50, top_k = 1, ground truth = the "
                      "classifier's class of the seen image)",
    "inception_score": "BrainVis evaluate_IS.py (torch-fidelity calculate_metrics, isc=True)",
    "paper": "Lan et al. 2023, arXiv 2308.02510, Sec. 4.1 and Table 2",
}


def _as_uint8_list(images) -> list[np.ndarray]:
    """Images (n, H, W, 3) float in [0, 1] or uint8, a list of such arrays or PIL images -> list of uint8 RGB."""
    return [arr if arr.dtype == np.uint8 else np.round(np.clip(arr.astype(np.float64), 0, 1) * 255).astype(np.uint8)
            for arr in rgb_arrays(images)]


class ImageNetClassifier:
    """An image classifier from transformers, by hub id or folder: images -> softmax probabilities.

    Loaded with ``AutoModelForImageClassification`` and ``AutoImageProcessor`` (e.g. ``google/vit-base-patch16-224``,
    ``microsoft/resnet-50``; with timm installed also timm's hub models such as ``timm/inception_v3.tv_in1k``).

    Parameters
    ----------
    id_or_path : str | Path
        Hub id or local folder with the model's ``config.json`` and its image processor.
    device : str
        torch device.
    min_classes : int
        Refuse a classifier with fewer outputs (the 50-way protocol needs at least 50).
    """

    def __init__(self, id_or_path: str | Path, device: str = "cpu", min_classes: int = PAPER_N_WAY):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            self.processor = AutoImageProcessor.from_pretrained(str(id_or_path))
            self.model = AutoModelForImageClassification.from_pretrained(str(id_or_path)).to(device).eval()
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"Could not load an image classifier from {id_or_path!s}: expected a hub id or a folder "
                             f"loadable with AutoModelForImageClassification and AutoImageProcessor ({err}).") from err
        self.n_classes = int(self.model.config.num_labels)
        if self.n_classes < min_classes:
            raise ValueError(f"The classifier {id_or_path!s} has {self.n_classes} classes: expected an ImageNet "
                             f"classifier (1,000 classes), at least {min_classes} for the {min_classes}-way protocol.")
        self.name, self.device = str(id_or_path), device

    def __call__(self, images, batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities, shape (n, n_classes), of images (n, H, W, 3) float in [0, 1] / uint8 or PIL."""
        import torch

        images = _as_uint8_list(images)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                inputs = self.processor(images=images[i:i + batch_size], return_tensors="pt").to(self.device)
                out.append(torch.softmax(self.model(**inputs).logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)


class TorchvisionInceptionV3:
    """torchvision's ``inception_v3`` with weights from a state-dict file: images -> softmax over 1,000 classes.

    The file is a ``.safetensors`` or ``.pth``/``.pt`` state dict of ``torchvision.models.inception_v3`` (e.g.
    ``Inception_V3_Weights.IMAGENET1K_V1`` saved with ``torch.save(model.state_dict(), path)``), read with
    ``weights_only=True``. Images are resized to 299 x 299 (bilinear, antialiased) and normalised with
    ImageNet's mean and std, as torchvision's weights expect (``transform_input=True``).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        try:
            from torchvision.models import inception_v3
        except ImportError as err:
            raise ImportError("An Inception v3 state dict needs torchvision (pip install torchvision, the release "
                              "that matches your torch), or pass --inception a transformers classifier id or "
                              "folder instead.") from err
        from .recon_metrics import load_state_dict_file

        path = Path(path)
        state = load_state_dict_file(path)
        model = inception_v3(weights=None, aux_logits=any(k.startswith("AuxLogits.") for k in state),
                             transform_input=True, init_weights=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a state dict of torchvision's inception_v3 (1,000 classes): "
                             f"{str(err).splitlines()[0]} ...") from err
        self.model = model.to(device).eval()
        self.n_classes, self.name, self.device = 1000, str(path), device

    def __call__(self, images, batch_size: int = 32) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        images = _as_uint8_list(images)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.cat([F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255,
                                             size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                             antialias=True, align_corners=False)
                               for a in images[i:i + batch_size]])
                logits = self.model(((x - mean) / std).to(self.device))
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)


def load_inception(path_or_id: str | Path, device: str = "cpu"):
    """Inception v3 for IS: a state-dict file of torchvision's ``inception_v3``, or a transformers image
    classifier (hub id or folder, :class:`ImageNetClassifier`)."""
    if Path(path_or_id).is_file():
        return TorchvisionInceptionV3(path_or_id, device)
    return ImageNetClassifier(path_or_id, device)


class PaperMetrics:
    """Accumulate the paper's metrics for reconstructions of seen images, row by row (ablation rows).

    ::

        pm = PaperMetrics(ImageNetClassifier("google/vit-base-patch16-224"), load_inception("inception_v3.pth"))
        pm.set_stimuli(seen_images)             # n images of any size: the ground-truth classes
        pm.new_row("L + I", samples_per_trial=4)
        pm.add("L + I", trials, k, images)      # reconstructions of trials (slice or indices), sample k
        pm.result("L + I")                      # {"acc", "is", "ssim", ...}

    Parameters
    ----------
    classifier : callable
        Images -> probabilities (n, n_classes) over ImageNet's classes (:class:`ImageNetClassifier`).
    inception : callable | None
        Images -> Inception v3 probabilities (n, 1000) (:func:`load_inception`); None: no IS.
    n_way : int
        N of the N-way top-1 (the paper: 50).
    n_trials : int | None
        None: the exact expectation over the draws of the N - 1 other classes; an int: that many draws per
        image, as BrainVis (50) and DreamDiffusion (40) sample them, from ``seed``.
    ssim_size : int
        Side at which SSIM compares reconstruction and seen image (512).
    is_splits : int
        Splits for IS (10; fewer when there are fewer images).
    seed : int
        Seeds the sampled draws (``n_trials``).
    """

    def __init__(self, classifier, inception=None, n_way: int = PAPER_N_WAY, n_trials: int | None = None,
                 ssim_size: int = PAPER_SSIM_SIZE, is_splits: int = IS_SPLITS, seed: int = 0):
        check_range("n_way", n_way, 2)
        if n_trials is not None:
            check_range("n_trials", n_trials, 1)
        check_range("ssim_size", ssim_size, 7)  # skimage's 7 x 7 window
        check_range("is_splits", is_splits, 1)
        self.classifier, self.inception = classifier, inception
        self.n_way, self.n_trials, self.ssim_size, self.is_splits, self.seed = n_way, n_trials, ssim_size, is_splits, seed
        self.gt: np.ndarray | None = None
        self._stimuli: list[np.ndarray] = []
        self._rows: dict[str, dict[str, np.ndarray]] = {}

    def set_stimuli(self, stimuli) -> np.ndarray:
        """Classify the seen images (the ground truth of each trial); return the classes, shape (n,)."""
        probs = self.classifier(stimuli)
        if probs.shape[1] < self.n_way:
            raise ValueError(f"The classifier has {probs.shape[1]} classes: the {self.n_way}-way protocol needs at "
                             f"least {self.n_way} (an ImageNet classifier has 1,000).")
        self.gt = probs.argmax(1)
        self._stim_probs = probs
        self._stimuli = _as_uint8_list(stimuli)  # as seen (uint8, own size): brought to ssim_size pair by pair
        return self.gt

    def new_row(self, row: str, samples_per_trial: int) -> None:
        """Start a row: ``samples_per_trial`` reconstructions of every seen image."""
        if self.gt is None:
            raise RuntimeError("Call set_stimuli() before new_row(): the ground truth comes from the seen images.")
        n, k = len(self.gt), int(samples_per_trial)
        self._rows[row] = {"probs": np.full((n, k, self._stim_probs.shape[1]), np.nan, np.float32),
                           "ssim": np.full((n, k), np.nan)}

    def add(self, row: str, trials, sample: int, images) -> None:
        """Score reconstructions of ``trials`` (slice or indices into the seen images), sample number ``sample``."""
        if row not in self._rows:
            raise KeyError(f"Unknown row {row!r}: call new_row({row!r}, samples_per_trial) first.")
        idx = np.arange(len(self.gt))[trials]
        images = _as_uint8_list(images)
        if len(images) != len(idx):
            raise ValueError(f"Got {len(images)} images for {len(idx)} trials: one reconstruction per trial.")
        r = self._rows[row]
        r["probs"][idx, sample] = self.classifier(images)
        r["ssim"][idx, sample] = ssim(images, [self._stimuli[i] for i in idx], self.ssim_size)
        if self.inception is not None:
            p = self.inception(images)
            if "inception" not in r:
                r["inception"] = np.full((*r["ssim"].shape, p.shape[1]), np.nan, np.float32)
            r["inception"][idx, sample] = p

    def result(self, row: str, mask=None) -> dict:
        """The row's metrics over all trials (or those of the boolean ``mask``, e.g. one subject).

        Returns ``acc`` (N-way top-1 against the seen image's class, pooled over every reconstruction),
        ``is`` / ``is_std`` / ``is_splits`` (with an Inception network), ``ssim`` {"mean", "sem", "n"} (mean over
        a trial's reconstructions, then over trials), ``n_trials``, ``n_images``.
        """
        r = self._rows[row]
        sel = np.ones(len(self.gt), bool) if mask is None else np.asarray(mask, bool)
        probs = r["probs"][sel]
        n, k, c = probs.shape
        if np.isnan(probs).any():
            raise ValueError(f"Row {row!r} is missing reconstructions: add() every trial and sample first.")
        rng = np.random.default_rng([self.seed, 50])
        out = {"acc": n_way_accuracy(probs.reshape(n * k, c), np.repeat(self.gt[sel], k), self.n_way, PAPER_TOP_K,
                                     n_repeats=self.n_trials, rng=rng),
               "ssim": mean_sem(r["ssim"][sel].mean(1)), "n_trials": int(n), "n_images": int(n * k)}
        if "inception" in r:
            splits = min(self.is_splits, n * k)
            out["is"], out["is_std"] = inception_score(r["inception"][sel].reshape(n * k, -1), splits)
            out["is_splits"] = splits
        return out

    def stimuli_reference(self) -> dict:
        """IS of the seen images themselves (the ceiling a reconstruction's IS is read against)."""
        if self.inception is None or self.gt is None:
            return {}
        p = self.inception(self._stimuli)
        splits = min(self.is_splits, len(p))
        m, s = inception_score(p, splits)
        return {"is": m, "is_std": s, "is_splits": splits, "n_images": len(p)}

    def protocol(self) -> dict:
        """What produced the numbers: classifiers, N, draws, sizes, sources (for metrics.json and the report)."""
        return {"imagenet_classifier": getattr(self.classifier, "name", repr(self.classifier)),
                "inception": None if self.inception is None else getattr(self.inception, "name", repr(self.inception)),
                "n_way": self.n_way, "top_k": PAPER_TOP_K,
                "n_trials": self.n_trials if self.n_trials is not None else "exact expectation",
                "ground_truth": "the classifier's top class of the seen image",
                "ssim_size": self.ssim_size, "inception_size": INCEPTION_SIZE, "is_splits": self.is_splits,
                "sources": SOURCES}


def paper_markdown(rec: dict) -> str:
    """The report's section for the paper's protocol on real images (rows scored by :class:`PaperMetrics`)."""
    from .ablation import FULL, PAPER_PER_SUBJECT_ACC, PAPER_TABLE3

    p = rec["paper_protocol"]
    draws = ("the exact expectation over the random draws" if p["n_trials"] == "exact expectation"
             else f"{p['n_trials']} random draws per reconstruction")
    lines = ["## Reconstructions: the paper's protocol (ImageNet classifier, Inception v3)", "",
             f"**Protocol.** ACC: {p['n_way']}-way top-1 with the ImageNet classifier `{p['imagenet_classifier']}`; "
             f"the ground truth of a reconstruction is {p['ground_truth']}, and it counts when that class has the "
             f"highest probability among itself and {p['n_way'] - 1} other classes drawn at random ({draws}), as "
             f"DreamDiffusion and BrainVis evaluate. IS: Inception v3 `{p['inception']}` at {p['inception_size']} x "
             f"{p['inception_size']}, {p['is_splits']} splits (fewer when there are fewer images). SSIM: skimage on "
             f"RGB at {p['ssim_size']} x {p['ssim_size']} against the seen image, mean ± SEM over trials. "
             "These numbers compare with the paper's; the tables above use the data set's own classifier.", "",
             "| | trials | ACC % | IS | SSIM | paper (ACC / IS / SSIM) |", "|---|---|---|---|---|---|"]

    def line(name, m, paper=""):
        is_ = f"{m['is']:.2f}" if "is" in m else "-"
        ms = m["ssim"]
        ssim_txt = f"{ms['mean']:.3f} ± {ms['sem']:.3f}" if np.isfinite(ms.get("sem", np.nan)) else f"{ms['mean']:.3f}"
        return f"| {name} | {m['n_trials']} | {100 * m['acc']:.1f} | {is_} | {ssim_txt} | {paper} |"

    for row, m in rec["rows"].items():
        if "paper" in m:
            ref = PAPER_TABLE3.get(row)
            lines.append(line(f"**{row}**" if row == FULL else row, m["paper"],
                              "" if ref is None else f"{ref[0]} / {ref[1]} / {ref[2]}"))
    for subj, m in rec.get("per_subject", {}).items():
        if "paper" in m:
            acc = PAPER_PER_SUBJECT_ACC[int(subj) - 1] if 1 <= int(subj) <= 6 else "-"
            lines.append(line(f"{FULL}, subject {subj}", m["paper"], f"{acc} / - / -"))
    ref = rec.get("references", {}).get("stimuli_paper")
    if ref:
        lines += ["", f"IS of the seen images themselves: {ref['is']:.2f} ({ref['n_images']} images)."]
    return "\n".join(lines + [""])
