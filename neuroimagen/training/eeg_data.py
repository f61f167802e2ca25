"""EEG training data: the split's arrays, loaded once and cached as .npy, class-balanced batches, and what the
EEG stages measure on their models (features of all trials, latency, nearest-centroid accuracy)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.eeg_imagenet import eeg_space, load_eeg_imagenet
from ..data.stimuli import load_stimulus_metadata
from .augment import CapAugment
from .config import Paths


def eeg_stage_inputs(paths: Paths, acc, cap_augment: float, seed: int):
    """What an EEG stage starts from: the train and val splits (:func:`load_split`), the data's channels, rate and
    window (``eeg_space``: the model records them) and the stage's :class:`~.augment.CapAugment` on those channels.
    Loaded with the main process first: it writes the caches, the others read them."""
    with acc.main_process_first():
        tr, va = load_split(paths, "train"), load_split(paths, "val")
        space = eeg_space(paths.data)
        augment = CapAugment(cap_augment, seed=seed, cache_dir=paths.out, ch_names=space["ch_names"])
    return tr, va, space, augment


def load_split(paths: Paths, split: str) -> dict[str, np.ndarray]:
    """``eeg`` (n, 128, 440) float32 (memory-mapped cache), ``labels``, ``images``, ``subjects`` of a split."""
    cache = Path(paths.out) / "eeg_cache" / f"{Path(paths.data).stem}_{split}_s{paths.subject or 'all'}"
    # The cache is valid for these exact data and splits files (size and modification time of both).
    stamp = "-".join(f"{Path(f).stat().st_size}-{int(Path(f).stat().st_mtime)}" for f in (paths.data, paths.splits))
    if (cache / "stamp.txt").is_file() and (cache / "stamp.txt").read_text() == stamp:
        out = {k: np.load(cache / f"{k}.npy", mmap_mode="r" if k == "eeg" else None)
               for k in ("eeg", "labels", "images", "subjects")}
    else:
        ds = load_eeg_imagenet(paths.data, paths.splits, split=split, subject=paths.subject)
        eeg, labels, images, subjects = ds.arrays()
        cache.mkdir(parents=True, exist_ok=True)
        out = {"eeg": eeg, "labels": labels, "images": images, "subjects": subjects}
        for k, v in out.items():
            np.save(cache / f"{k}.npy", v)
        (cache / "stamp.txt").write_text(stamp)
    out["stim_index"] = stimulus_index(paths, out["images"])
    return out


def stimulus_index(paths: Paths, images: np.ndarray) -> np.ndarray:
    """Map the data file's image indices to rows of the stimulus folder's records (by image name): its
    ``metadata.json``, or the real images the data file names (:func:`~neuroimagen.data.stimuli.load_stimulus_metadata`)."""
    names = torch.load(paths.data, weights_only=True, mmap=True)["images"]
    row = {r.image: k for k, r in enumerate(load_stimulus_metadata(paths.stimuli, paths.data))}
    missing = sorted({names[i] for i in np.unique(images)} - set(row))
    if missing:
        raise ValueError(f"{len(missing)} images of {paths.data} are not in the stimulus folder {paths.stimuli} "
                         f"(e.g. {missing[:3]}): expected the stimuli the EEG was recorded with.")
    return np.array([row[names[i]] for i in images], dtype=int)


def balanced_batches(labels: np.ndarray, n_classes: int, per_class: int, rng: np.random.Generator,
                     rank: int = 0, n_processes: int = 1):
    """Yield index batches of ``n_classes`` classes x ``per_class`` trials (P x K, for triplet mining).

    One epoch: ``len(labels) // (n_classes * per_class * n_processes)`` batches; classes are drawn without
    replacement within a batch, trials without replacement within a class (with, if a class has fewer than
    ``per_class``). With ``n_processes`` > 1 (every process drawing from an ``rng`` seeded alike), each class's
    trials are cut into ``n_processes`` disjoint shares after the epoch's shuffle and process ``rank`` draws from its
    own: in each batch all processes take the same classes, and no two processes see the same trial in an epoch
    (a global batch is P classes x ``per_class * n_processes`` trials). Each class needs ``n_processes`` trials.
    """
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    if n_processes > 1:
        by_class = {c: np.array_split(trials, n_processes)[rank] for c, trials in by_class.items()}
    n_batches = len(labels) // (n_classes * per_class * n_processes)
    classes = np.array(sorted(by_class))
    for _ in range(n_batches):
        chosen = rng.choice(classes, size=min(n_classes, len(classes)), replace=False)
        yield np.concatenate([rng.choice(by_class[c], per_class, replace=len(by_class[c]) < per_class) for c in chosen])


def to_tensor(eeg: np.ndarray, idx: np.ndarray | slice) -> torch.Tensor:
    """Trials ``idx`` of a (memory-mapped) array as a float32 tensor (a copy: the cache is read-only)."""
    return torch.from_numpy(np.array(eeg[idx], dtype=np.float32))


@torch.no_grad()
def embed_all(model, eeg: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Run an EEG model over all trials in eval mode, in batches; its outputs concatenated (a CPU tensor)."""
    model.eval()
    return torch.cat([model(to_tensor(eeg, slice(i, i + batch))).cpu() for i in range(0, len(eeg), batch)])


@torch.inference_mode()
def latency_ms(model, *inputs: torch.Tensor, repeats: int = 20) -> float:
    """Median time of ``model(*inputs)`` in ms (eval mode, inference mode, after a warm-up call)."""
    model.eval()
    model(*inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(*inputs)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 2)


def centroid_accuracy(train_f: torch.Tensor, train_y: np.ndarray, f: torch.Tensor, y: np.ndarray,
                      k: int = 5) -> tuple[float, float]:
    """Top-1 and top-k accuracy of nearest class centroid (cosine) on features."""
    classes = np.unique(train_y)
    cent = torch.stack([train_f[torch.from_numpy(train_y == c)].mean(0) for c in classes])
    sim = F.normalize(f, dim=1) @ F.normalize(cent, dim=1).T
    top = torch.from_numpy(classes)[sim.topk(k, dim=1).indices].numpy()
    return float((top[:, 0] == y).mean()), float((top == y[:, None]).any(1).mean())
