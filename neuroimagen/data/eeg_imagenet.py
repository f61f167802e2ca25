"""The EEG-ImageNet file format (Spampinato et al., CVPR 2017): reader and writer.

A data file (``eeg_5_95_std.pth`` and its siblings, or our simulator's output) is a dict::

    {"dataset": [{"eeg": FloatTensor(128, L), "image": int, "label": int, "subject": int}, ...],
     "labels": [40 synset ids], "images": [image names such as "n02951358_31190"]}

with L about 500 and not constant. A splits file is ``{"splits": [{"train": [...], "val": [...],
"test": [...]}, ...]}`` of indices into ``dataset``. As the reference loaders (the authors'
``EEGDataset`` + ``Splitter``), segments with 450 <= L <= 600 are kept, a split's indices are filtered
by that and by subject, and samples 20:460 are used. Both files are read with
``torch.load(..., weights_only=True)``: nothing in them can run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import SYNSETS, class_by_synset
from .montage import CROP
from .preprocessing import standardize

MIN_LEN, MAX_LEN = 450, 600


def _safe_load(path: str | Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}.")
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"Refused to load the {what} file {path.name!r}: it carries Python objects other than "
                         f"tensors, numbers, strings, lists and dicts. Details: {str(err).splitlines()[0]}") from None
    except RuntimeError:  # not a zip-format file (e.g. an old pickle): mmap is impossible, try without
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as err:
            raise ValueError(f"Refused to load the {what} file {path.name!r}: it carries Python objects other "
                             f"than plain tensors and containers. Details: {str(err).splitlines()[0]}") from None


class EEGImageNetDataset(Dataset):
    """Trials of an EEG-ImageNet-format file, cropped to samples 20:460 and standardized.

    Items are dicts: ``eeg`` float32 tensor (n_chans, 440), ``label``, ``image``, ``subject`` (ints) and,
    with a stimulus folder, ``stimulus`` float tensor (3, H, W) in [-1, 1].
    """

    def __init__(self, trials: list[dict], indices: np.ndarray, labels: list[str], images: list[str],
                 stimuli_dir: str | Path | None = None):
        self._trials = trials
        self.indices = np.asarray(indices, dtype=int)
        self.labels = list(labels)
        self.images = list(images)
        self.stimuli_dir = None if stimuli_dir is None else Path(stimuli_dir)
        self._stim_cache: dict[int, torch.Tensor] = {}

    @property
    def class_names(self) -> list[str]:
        names = []
        for s in self.labels:
            try:
                names.append(class_by_synset(s).name)
            except ValueError:
                names.append(s)
        return names

    def __len__(self) -> int:
        return len(self.indices)

    def _eeg(self, trial: dict) -> np.ndarray:
        return standardize(_crop(trial["eeg"])).astype(np.float32)

    def stimulus(self, image: int) -> torch.Tensor:
        """The stimulus image ``images[image]`` as a float tensor (3, H, W) in [-1, 1]."""
        if image not in self._stim_cache:
            from PIL import Image

            name = self.images[image]
            for ext in (".png", ".jpg", ".JPEG", ".jpeg"):
                f = self.stimuli_dir / f"{name}{ext}"
                if f.is_file():
                    break
            else:
                raise FileNotFoundError(f"No stimulus image {name}.png (or .jpg/.JPEG) in {self.stimuli_dir}.")
            arr = np.asarray(Image.open(f).convert("RGB"))
            self._stim_cache[image] = torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return self._stim_cache[image]

    def __getitem__(self, i: int) -> dict:
        t = self._trials[int(self.indices[i])]
        item = {"eeg": torch.from_numpy(self._eeg(t)), "label": int(t["label"]), "image": int(t["image"]),
                "subject": int(t["subject"])}
        if self.stimuli_dir is not None:
            item["stimulus"] = self.stimulus(item["image"])
        return item

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Everything at once: eeg (n, n_chans, 440) float32, labels, images, subjects (int arrays)."""
        trials = [self._trials[int(k)] for k in self.indices]
        if not trials:
            return np.zeros((0, 0, CROP[1] - CROP[0]), np.float32), *(np.zeros(0, int),) * 3
        eeg = np.stack([_crop(t["eeg"]) for t in trials])
        eeg = standardize(eeg).astype(np.float32)
        meta = np.array([(int(t["label"]), int(t["image"]), int(t["subject"])) for t in trials], dtype=int)
        return eeg, meta[:, 0], meta[:, 1], meta[:, 2]


def _crop(eeg: torch.Tensor) -> np.ndarray:
    """Samples 20:460 as float32; a segment of 450-459 samples (kept by the reference filter) is padded
    at the end with its last value, so every trial has the models' 440 samples."""
    x = eeg[:, CROP[0]:CROP[1]].float().numpy()
    n = CROP[1] - CROP[0]
    return x if x.shape[1] == n else np.pad(x, ((0, 0), (0, n - x.shape[1])), mode="edge")


def load_eeg_imagenet(data_path: str | Path, splits_path: str | Path | None = None, split: str | None = "train",
                      subject: int | None = None, stimuli_dir: str | Path | None = None,
                      split_index: int = 0) -> EEGImageNetDataset:
    """Load an EEG-ImageNet-format file (the published one or the simulator's).

    Parameters
    ----------
    data_path : str | Path
        The ``.pth`` data file.
    splits_path : str | Path | None
        The splits file; without it ``split`` must be None (all trials).
    split : str | None
        ``"train"``, ``"val"``, ``"test"`` or None for all trials.
    subject : int | None
        Keep one subject (1..6), or all (None, as the paper).
    stimuli_dir : str | Path | None
        Folder of the stimulus images (named like the file's ``images`` entries); items then carry them.
    split_index : int
        Which split of the splits file (0, as the references).
    """
    from .._check import check_option

    check_option("split", split, ("train", "val", "test", None))
    obj = _safe_load(data_path, "EEG-ImageNet data")
    if not isinstance(obj, dict) or not {"dataset", "labels", "images"} <= set(obj):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{Path(data_path).name!r} is not in the EEG-ImageNet format: expected a dict with "
                         f"'dataset', 'labels' and 'images', got {found}.")
    trials = obj["dataset"]
    lengths = np.array([t["eeg"].shape[-1] for t in trials])
    subjects = np.array([int(t["subject"]) for t in trials])
    if split is None:
        idx = np.arange(len(trials))
    else:
        if splits_path is None:
            raise ValueError(f"split={split!r} needs a splits file (splits_path); pass split=None for all trials.")
        splits = _safe_load(splits_path, "splits")
        try:
            idx = np.asarray(splits["splits"][split_index][split], dtype=int)
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{Path(splits_path).name!r} has no split {split_index} with a {split!r} part: expected "
                             f"{{'splits': [{{'train': [...], 'val': [...], 'test': [...]}}, ...]}}.") from None
        if len(idx) and (idx.min() < 0 or idx.max() >= len(trials)):
            raise ValueError(f"The splits file indexes trial {idx.max()}, but the data file has {len(trials)} trials.")
    keep = (lengths[idx] >= MIN_LEN) & (lengths[idx] <= MAX_LEN)
    if subject is not None:
        if subject not in set(subjects.tolist()):
            raise ValueError(f"No subject {subject} in {Path(data_path).name!r}: it has subjects "
                             f"{sorted(set(subjects.tolist()))}.")
        keep &= subjects[idx] == subject
    return EEGImageNetDataset(trials, idx[keep], obj["labels"], obj["images"], stimuli_dir)


def save_eeg_imagenet(path: str | Path, eeg_list, images_idx, labels_idx, subjects, labels=SYNSETS,
                      images=None) -> Path:
    """Write trials in the EEG-ImageNet format (one dict per trial; ``eeg`` tensors (n_chans, L))."""
    dataset = [{"eeg": torch.as_tensor(np.asarray(e)), "image": int(i), "label": int(lb), "subject": int(s)}
               for e, i, lb, s in zip(eeg_list, images_idx, labels_idx, subjects)]
    images = list(images) if images is not None else [f"image_{k}" for k in range(max(images_idx) + 1)]
    torch.save({"dataset": dataset, "labels": list(labels), "images": images}, path)
    return Path(path)


def save_splits(path: str | Path, splits: list[dict] | dict) -> Path:
    """Write a splits file; ``splits`` is one ``{"train", "val", "test"}`` dict or a list of them."""
    splits = [splits] if isinstance(splits, dict) else splits
    torch.save({"splits": [{k: [int(i) for i in v] for k, v in s.items()} for s in splits]}, path)
    return Path(path)
