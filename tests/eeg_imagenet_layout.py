"""Small files in the exact layout of the published EEG-ImageNet, and a folder of images named like its entries.

:func:`make_eeg_imagenet_layout` writes what a researcher downloads, at the size of one subject:

- ``eeg_5_95_std.pth``: ``{"dataset": [{"eeg": HalfTensor(128, L), "image": int, "label": int, "subject": int}],
  "labels": the 40 synsets in the published order, "images": names like "n02389026_3"}``, one subject with 1,996
  trials (4 of the 2,000 images were not shown), L varying between trials (most 450-500 samples, a few 440-449,
  which the reference loaders drop), stored as float16 as the published files; the signals are random (not
  decodable: the chain's wiring is what is tested);
- ``block_splits_by_image_all.pth``: ``{"splits": [{"train", "val", "test"}, ...]}``, indices into ``dataset``
  (short trials included, as in the published file), split by image 40/5/5 per class; split 0 is the one used;
- ``images/<synset>/<name>.JPEG``: one small photo-sized JPEG per ``images`` entry (sizes differ), in ImageNet's
  per-synset folders, with no ``metadata.json``.

Written with ``torch.save`` directly (not the library's writer), so the reader is tested against the layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neuroimagen.data.classes import SYNSETS

N_TRIALS = 1996  # one subject of the published file: 2,000 images, 4 of them without a usable trial
SUBJECT = 4


def _names(rng: np.random.Generator) -> list[str]:
    """2,000 image names, 50 per synset, numbered as ImageNet's (``n02389026_3``, ``n02389026_31190``)."""
    return [f"{s}_{n}" for s in SYNSETS for n in np.sort(rng.choice(np.arange(1, 40_000), 50, replace=False))]


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    """A small photo of varying size: a class-coloured block on a noisy background."""
    w, h = (int(v) for v in rng.integers(28, 48, 2))
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    colour = np.array([(37 * label) % 256, (91 * label) % 256, (53 * label + 80) % 256], np.uint8)
    arr[h // 4:3 * h // 4, w // 4:3 * w // 4] = colour
    return Image.fromarray(arr)


def make_eeg_imagenet_layout(root: str | Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write the data file, the splits file and the image folder into ``root``; return their paths."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = _names(rng)
    classes = np.repeat(np.arange(len(SYNSETS)), 50)
    shown = np.sort(rng.choice(len(names), N_TRIALS, replace=False))
    order = shown[np.argsort(classes[shown], kind="stable")]  # recorded in class blocks, as the published design
    lengths = rng.integers(450, 501, N_TRIALS)
    lengths[rng.choice(N_TRIALS, 20, replace=False)] = rng.integers(440, 450, 20)
    dataset = [{"eeg": torch.from_numpy(rng.standard_normal((128, int(n)), dtype=np.float32).astype(np.float16)),
                "image": int(i), "label": int(classes[i]), "subject": SUBJECT} for i, n in zip(order, lengths)]
    data = root / "eeg_5_95_std.pth"
    torch.save({"dataset": dataset, "labels": list(SYNSETS), "images": names}, data)

    splits = []
    for k in range(2):  # split 0 is the one used; the second is there because the published file has several
        part = {"train": [], "val": [], "test": []}
        srng = np.random.default_rng([seed, k])
        for c in range(len(SYNSETS)):
            imgs = srng.permutation(np.flatnonzero(classes == c))
            which = dict(zip(imgs, ["train"] * 40 + ["val"] * 5 + ["test"] * 5))
            for t, i in enumerate(order):
                if classes[i] == c:
                    part[which[i]].append(t)
        splits.append(part)
    splits_file = root / "block_splits_by_image_all.pth"
    torch.save({"splits": splits}, splits_file)

    images = root / "images"
    for name, c in zip(names, classes):
        folder = images / name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        _image(rng, int(c)).save(folder / f"{name}.JPEG", quality=85)
    return data, splits_file, images
