"""The EEG-ImageNet file format (Spampinato et al., CVPR 2017): reader and writer.

A data file (``eeg_5_95_std.pth`` and its siblings, or our simulator's output) is a dict::

    {"dataset": [{"eeg": FloatTensor(128, L), "image": int, "label": int, "subject": int}, ...],
     "labels": [40 synset ids], "images": [image names such as "n02951358_31190"]}

with L about 500 and not constant (the published files hold 11,964 trials; some subjects have 1,996), stored
as float16 or float32. A splits file is ``{"splits": [{"train": [...], "val": [...], "test": [...]}, ...]}``
of indices into ``dataset``. As the reference loaders (the authors' ``EEGDataset`` + ``Splitter`` in
perceivelab/eeg_visual_classification), a split's indices are kept when 450 <= L <= 600 and samples 20:460
are used (a kept segment of 450-459 samples is padded with its last value to 440). For one subject the
reference filters ``dataset`` by subject first and indexes that shorter list with the split's indices: that
is what the per-subject file ``block_splits_by_image_single.pth`` counts (669/167/164 indices below ~2,000).
A splits file over all subjects (``block_splits_by_image_all.pth``, the simulator's) counts the whole file;
there one subject is selected by filtering the same indices by the trial's ``subject``.
``load_eeg_imagenet(split_indexing="auto")`` tells the two apart. Both files are read with
``torch.load(..., weights_only=True)``: nothing in them can run code.

Data of another montage or rate (e.g. THINGS-EEG2's 17 channels at 100 Hz) use the same layout with four optional
keys, which the published files lack (their defaults describe them): ``ch_names`` (one 10-05 name per EEG row;
default the 128 actiCAP channels), ``sfreq`` (Hz; default 1000), ``tmin`` (seconds from stimulus onset to each
trial's first sample; default 0) and ``window`` (``[start, stop]``: the samples of each trial the models see;
default the reference loaders' 20:460 and their 450 <= L <= 600 filter; with a window, a trial is kept when it
holds ``stop`` samples). Models trained on such a file record its channels, rate and window
(:func:`eeg_space`), and uploads are mapped onto those channels.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._check import check_option, validate_type
from .classes import SYNSETS, class_by_synset
from .io import unpickling_reason
from .montage import CROP, SFREQ, model_ch_names
from .preprocessing import standardize

MIN_LEN, MAX_LEN = 450, 600


def _safe_load(path: str | Path, what: str):
    """``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only; nothing runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}.")

    def refused(err: BaseException) -> ValueError:
        code, reason = unpickling_reason(err)
        if code:
            return ValueError(f"Refused to load the {what} file {path.name!r}: it carries Python objects other than "
                              f"tensors, numbers, strings, lists and dicts, which could run code, so it was not "
                              f"opened. (Details: {reason})")
        return ValueError(f"Could not read the {what} file {path.name!r}: not a file of plain tensors that the safe "
                          f"loader (weights_only=True) accepts ({reason}). The file may be truncated or corrupt.")

    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as err:
        raise refused(err) from None
    except RuntimeError:  # not a zip-format file (e.g. a legacy pickle): mmap is impossible, try without
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as err:
            raise refused(err) from None
        except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
            raise ValueError(f"Could not read the {what} file {path.name!r}: {str(err).strip()[:300]}. The file may "
                             f"be truncated or corrupt.") from None


class EEGImageNetDataset(Dataset):
    """Trials of an EEG-ImageNet-format file, cropped to their window (samples 20:460) and standardized.

    Items are dicts: ``eeg`` float32 tensor (n_chans, 440: the window's length), ``label``, ``image``, ``subject``
    (ints) and, with a stimulus folder, ``stimulus`` float tensor (3, H, W) in [-1, 1]. ``space``: the file's
    channels, rate and window (:func:`eeg_space`).
    """

    def __init__(self, trials: list[dict], indices: np.ndarray, labels: list[str], images: list[str],
                 stimuli_dir: str | Path | None = None, split_indexing: str = "file", space: dict | None = None):
        self._trials = trials
        self.space = dict(DEFAULT_SPACE if space is None else space)  # ch_names, sfreq, tmin, window (eeg_space)
        self.window = tuple(self.space["window"])
        self.indices = np.asarray(indices, dtype=int)  # into the file's ``dataset``
        self.split_indexing = split_indexing  # what the splits file's indices counted (load_eeg_imagenet)
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
        return standardize(_crop(trial["eeg"], window=self.window)).astype(np.float32)

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
            with Image.open(f) as img:
                arr = np.array(img.convert("RGB"))
            self._stim_cache[image] = torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return self._stim_cache[image].clone()  # callers may change it in place; the cache stays intact

    def __getitem__(self, i: int) -> dict:
        t = self._trials[int(self.indices[i])]
        item = {"eeg": torch.from_numpy(self._eeg(t)), "label": int(t["label"]), "image": int(t["image"]),
                "subject": int(t["subject"])}
        if self.stimuli_dir is not None:
            item["stimulus"] = self.stimulus(item["image"])
        return item

    @property
    def image_ids(self) -> np.ndarray:
        """Image (index into ``images``) of each item, read without the EEG."""
        return np.array([int(self._trials[int(k)]["image"]) for k in self.indices], dtype=int)

    @property
    def subjects(self) -> np.ndarray:
        """Subject (1..6) of each item."""
        return np.array([int(self._trials[int(k)]["subject"]) for k in self.indices], dtype=int)

    def arrays(self, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Everything at once, without building items (12,000 trials in seconds).

        Returns
        -------
        eeg : ndarray, shape (n, n_chans, 440), float32
            Cropped and standardized as the items (in place, ``chunk`` trials at a time, so 12,000 trials
            take their 2.7 GB once, not again in float64).
        labels, images, subjects : ndarray, shape (n,), int
        """
        trials = [self._trials[int(k)] for k in self.indices]
        n_times = self.window[1] - self.window[0]
        if not trials:
            return np.zeros((0, 0, n_times), np.float32), *(np.zeros(0, int),) * 3
        eeg = np.empty((len(trials), int(trials[0]["eeg"].shape[0]), n_times), np.float32)
        for k, t in enumerate(trials):
            _crop(t["eeg"], out=eeg[k], window=self.window)
        for k in range(0, len(eeg), chunk):
            _standardize_inplace(eeg[k:k + chunk])
        meta = np.array([(int(t["label"]), int(t["image"]), int(t["subject"])) for t in trials], dtype=int)
        return eeg, meta[:, 0], meta[:, 1], meta[:, 2]


def _crop(eeg: torch.Tensor, out: np.ndarray | None = None, window: tuple[int, int] = CROP) -> np.ndarray:
    """Samples ``window`` (20:460) as float32 (n_chans, 440); a segment of 450-459 samples (kept by the reference
    filter) is padded at the end with its last value, so every trial has the models' 440 samples."""
    n = window[1] - window[0]
    src = eeg[:, window[0]:window[1]]
    src = src.float() if src.dtype == torch.bfloat16 else src  # numpy has no bfloat16
    if out is None:
        out = np.empty((src.shape[0], n), np.float32)
    m = src.shape[1]
    out[:, :m] = src.numpy()  # numpy casts float16/float64 -> float32 faster than torch does
    out[:, m:] = out[:, m - 1:m]
    return out


def _standardize_inplace(x: np.ndarray, eps: float = 1e-12) -> None:
    """:func:`standardize` for a float32 batch (n, n_chans, n_times), in place, with float64 sums."""
    x -= x.mean(axis=-1, keepdims=True, dtype=np.float64).astype(x.dtype)
    std = np.sqrt(np.square(x).mean(axis=(-2, -1), keepdims=True, dtype=np.float64))
    x /= np.maximum(std, eps).astype(x.dtype)


def load_eeg_imagenet(data_path: str | Path, splits_path: str | Path | None = None, split: str | None = "train",
                      subject: int | None = None, stimuli_dir: str | Path | None = None,
                      split_index: int = 0, *, split_indexing: str = "auto") -> EEGImageNetDataset:
    """Load an EEG-ImageNet-format file (the published one or the simulator's).

    As the reference ``Splitter``, a split's indices are kept when 450 <= L <= 600; with ``subject``, only
    that subject's trials are kept (see ``split_indexing`` for what the indices count). Items are cropped
    to samples 20:460 and standardized.

    Parameters
    ----------
    data_path : str | Path
        The ``.pth`` data file (``eeg_5_95_std.pth`` or a simulated one).
    splits_path : str | Path | None
        The splits file; without it ``split`` must be None (all trials).
    split : str | None
        ``"train"``, ``"val"``, ``"test"`` or None for all trials.
    subject : int | None
        Keep one subject (1..6), or all (None, as the paper).
    stimuli_dir : str | Path | None
        Folder of the stimulus images (``images[image] + ".png"``); items then carry ``stimulus``.
    split_index : int
        Which split of the splits file (0, as the references).
    split_indexing : str
        What the split's indices count. ``"file"``: trials of the whole ``dataset``
        (``block_splits_by_image_all.pth``, the simulator's splits); with ``subject`` they are then filtered
        by the trial's subject. ``"subject"``: the chosen subject's own trials in file order, as the
        reference ``EEGDataset(subject=k)`` + ``Splitter`` read ``block_splits_by_image_single.pth``;
        indices past the subject's last trial are dropped (some subjects have 1,996 trials, as
        DreamDiffusion's ``Splitter`` does). ``"auto"``: ``"subject"`` when a subject is chosen from a file of
        several subjects and every index of the split is below the largest subject's trial count (the
        per-subject layout), else ``"file"``. The choice is kept in ``dataset.split_indexing``.

    Returns
    -------
    dataset : EEGImageNetDataset
    """
    check_option("split", split, ("train", "val", "test", None))
    check_option("split_indexing", split_indexing, ("auto", "file", "subject"))
    if subject is not None:
        validate_type("subject", subject, (int, np.integer), "int or None")
    elif split_indexing == "subject":
        raise ValueError("split_indexing='subject' needs a subject: the split's indices then count that subject's "
                         "trials. Pass subject=1..6, or split_indexing='file'.")
    validate_type("split_index", split_index, (int, np.integer), "int")
    name = Path(data_path).name
    obj = _safe_load(data_path, "EEG-ImageNet data")
    if not isinstance(obj, dict) or not {"dataset", "labels", "images"} <= set(obj):
        found = sorted(map(str, obj)) if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ValueError(f"{name!r} is not in the EEG-ImageNet format: expected a dict with 'dataset', 'labels' "
                         f"and 'images', got {found}.")
    trials = obj["dataset"]
    lengths, subjects, n_chans = _check_trials(trials, name)
    space = _space_of(obj, n_chans, name)
    present, counts = np.unique(subjects, return_counts=True)
    if subject is not None and int(subject) not in present:
        raise ValueError(f"No subject {subject} in {name!r}: it has subjects {present.tolist()}.")

    # 1. The split's indices (all trials without a split)
    if split is None:
        idx, indexing = np.arange(len(trials)), "file"
    else:
        if splits_path is None:
            raise ValueError(f"split={split!r} needs a splits file (splits_path); pass split=None for all trials.")
        part = _load_split_part(splits_path, split, split_index)
        idx, indexing = _split_indices(part, split, split_indexing, subject, counts, len(trials),
                                       Path(splits_path).name, name)

    # 2. Subject: the split's indices count the subject's own trials, or are filtered by subject
    if indexing == "subject":
        own = np.flatnonzero(subjects == int(subject))
        idx = own[idx[idx < len(own)]]  # a subject with 1,996 trials has no trial 1,996..1,999
    elif subject is not None:
        idx = idx[subjects[idx] == int(subject)]

    # 3. The reference filter on L (a file with its own window: trials that hold the window)
    if "window" in obj:
        idx = idx[lengths[idx] >= space["window"][1]]
    else:
        idx = idx[(lengths[idx] >= MIN_LEN) & (lengths[idx] <= MAX_LEN)]
    return EEGImageNetDataset(trials, idx, obj["labels"], obj["images"], stimuli_dir, split_indexing=indexing,
                              space=space)


DEFAULT_SPACE = {"ch_names": None, "sfreq": SFREQ, "tmin": 0.0, "window": CROP}  # the published files' (None: unnamed)


def _space_of(obj: dict, n_chans: int, name: str) -> dict:
    """The file's ``ch_names``, ``sfreq``, ``tmin`` and ``window`` (defaults: the published files'), checked."""
    names = obj.get("ch_names")
    if names is None:  # the published layout; unnamed rows of another count stay unnamed (ch_names None)
        names = list(model_ch_names())
        if n_chans and n_chans != len(names):
            names = None
    names = None if names is None else [str(n) for n in names]
    if names is not None and n_chans and len(names) != n_chans:
        raise ValueError(f"{name!r}: 'ch_names' has {len(names)} names for {n_chans} EEG channels.")
    sfreq, tmin = float(obj.get("sfreq", SFREQ)), float(obj.get("tmin", 0.0))
    window = tuple(int(v) for v in obj.get("window", CROP))
    if not (sfreq > 0 and np.isfinite(sfreq) and np.isfinite(tmin)):
        raise ValueError(f"{name!r}: expected a positive 'sfreq' (Hz) and a finite 'tmin' (s), got {sfreq!r} and "
                         f"{tmin!r}.")
    if len(window) != 2 or not 0 <= window[0] < window[1]:
        raise ValueError(f"{name!r}: 'window' must be [start, stop] samples with 0 <= start < stop, got "
                         f"{obj.get('window')!r}.")
    return {"ch_names": names, "sfreq": sfreq, "tmin": tmin, "window": window}


def eeg_space(data_path: str | Path) -> dict:
    """What a model trained on the data file ``data_path`` records of its input: ``ch_names``, ``sfreq`` and
    ``tmin`` (seconds from stimulus onset to the first sample the model sees), as model config keyword arguments.

    The published files (no ``ch_names``/``sfreq``/``tmin``/``window`` keys) give the 128 actiCAP channels at
    1000 Hz from 20 ms, the models' defaults.
    """
    name = Path(data_path).name
    obj = _safe_load(data_path, "EEG-ImageNet data")
    trials = obj.get("dataset") if isinstance(obj, dict) else None
    n_chans = int(trials[0]["eeg"].shape[0]) if trials else 0
    space = _space_of(obj, n_chans, name)
    return {"ch_names": space["ch_names"], "sfreq": space["sfreq"],
            "tmin": round(space["tmin"] + space["window"][0] / space["sfreq"], 9)}


def _load_split_part(splits_path: str | Path, split: str, split_index: int) -> dict:
    """Split ``split_index`` of a splits file (``{'splits': [{'train': [...], 'val': [...], 'test': [...]}, ...]}``),
    checked to have the part ``split``."""
    splits = _safe_load(splits_path, "splits")
    sname = Path(splits_path).name
    parts = splits.get("splits") if isinstance(splits, dict) else None
    if not isinstance(parts, list | tuple) or not parts:
        found = sorted(map(str, splits)) if isinstance(splits, dict) else f"a {type(splits).__name__}"
        raise ValueError(f"{sname!r} is not an EEG-ImageNet splits file: expected {{'splits': [{{'train': [...], "
                         f"'val': [...], 'test': [...]}}, ...]}}, got {found}.")
    if not 0 <= split_index < len(parts):
        raise ValueError(f"Invalid value for the 'split_index' parameter: {sname!r} has {len(parts)} splits "
                         f"(0..{len(parts) - 1}), but got {split_index}.")
    part = parts[split_index]
    if not isinstance(part, dict) or split not in part:
        found = sorted(map(str, part)) if isinstance(part, dict) else f"a {type(part).__name__}"
        raise ValueError(f"Split {split_index} of {sname!r} has no {split!r} part: expected 'train', 'val' and "
                         f"'test', got {found}.")
    return part


def _split_indices(part: dict, split: str, split_indexing: str, subject: int | None, counts: np.ndarray,
                   n_trials: int, sname: str, name: str) -> tuple[np.ndarray, str]:
    """The indices of ``part[split]`` and what they count (``"file"`` or ``"subject"``, ``"auto"`` decided:
    see :func:`load_eeg_imagenet`), checked against the data file's ``n_trials`` (or the largest of the
    subjects' trial ``counts``)."""
    indexing = "file" if split_indexing == "auto" else split_indexing
    idx = np.asarray(part[split], dtype=int).ravel()
    whole = np.concatenate([np.asarray(v, dtype=int).ravel() for v in part.values()])
    if split_indexing == "auto" and subject is not None and len(counts) > 1 and len(whole) \
            and whole.max() < counts.max():
        indexing = "subject"  # the per-subject layout (block_splits_by_image_single.pth)
    limit = n_trials if indexing == "file" else int(counts.max())
    if len(idx) and (idx.min() < 0 or idx.max() >= limit):
        bad = idx.max() if idx.max() >= limit else idx.min()
        if indexing == "file":
            raise ValueError(f"{sname!r} indexes trial {bad}, but {name!r} has {n_trials} trials (0.."
                             f"{n_trials - 1}): the splits file belongs to another data file.")
        raise ValueError(f"{sname!r} indexes trial {bad}, but with split_indexing='subject' the indices count "
                         f"one subject's trials (at most {limit} in {name!r}): for a splits file over all "
                         f"subjects, pass split_indexing='file'.")
    return idx, indexing


def _check_trials(trials, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Lengths L, subjects and n_chans of the trials; refuse items other than ``{eeg, label, image, subject}``."""
    if not isinstance(trials, list | tuple):
        raise ValueError(f"{name!r}: 'dataset' must be a list of trial dicts, got a {type(trials).__name__}.")
    lengths = np.empty(len(trials), dtype=int)
    subjects = np.empty(len(trials), dtype=int)
    n_chans = None
    for k, t in enumerate(trials):
        if not isinstance(t, dict) or not {"eeg", "label", "image", "subject"} <= set(t):
            found = sorted(map(str, t)) if isinstance(t, dict) else f"a {type(t).__name__}"
            raise ValueError(f"{name!r}: trial {k} must be a dict with 'eeg', 'label', 'image' and 'subject', got "
                             f"{found}.")
        eeg = t["eeg"]
        if not isinstance(eeg, torch.Tensor) or eeg.ndim != 2 or (n_chans is not None and eeg.shape[0] != n_chans):
            shape = tuple(eeg.shape) if isinstance(eeg, torch.Tensor) else type(eeg).__name__
            raise ValueError(f"{name!r}: trial {k} 'eeg' must be a tensor (n_chans, L) with the same n_chans as "
                             f"trial 0 ({n_chans}), got {shape}.")
        n_chans = int(eeg.shape[0])
        lengths[k] = eeg.shape[1]
        subjects[k] = int(t["subject"])
    return lengths, subjects, n_chans or 0


def save_eeg_imagenet(path: str | Path, eeg_list, images_idx, labels_idx, subjects, labels=SYNSETS,
                      images=None, *, ch_names=None, sfreq: float | None = None, tmin: float | None = None,
                      window: tuple[int, int] | None = None) -> Path:
    """Write trials in the EEG-ImageNet format (readable by the reference loaders and :func:`load_eeg_imagenet`).

    Parameters
    ----------
    path : str | Path
    eeg_list : list of ndarray | Tensor, each shape (n_chans, L)
        L may differ between trials; the dtype is kept (float16/32/64).
    images_idx, labels_idx, subjects : list of int
        Per trial: index into ``images``, index into ``labels`` (0..39), subject (1..6).
    labels : list of str
        Synset ids (default: the 40 EEG-ImageNet classes, in order).
    images : list of str | None
        Image names (``synset_number``); default ``image_{k}``.
    ch_names, sfreq, tmin, window
        Another montage or rate than the published files' (see the module docstring): the channels' 10-05 names,
        Hz, seconds from stimulus onset to each trial's first sample, and the samples the models see. Written
        only when given.

    Returns
    -------
    path : Path
    """
    n = len(eeg_list)
    if not len(images_idx) == len(labels_idx) == len(subjects) == n:
        raise ValueError(f"One entry per trial is needed: got {n} EEG arrays, {len(images_idx)} image indices, "
                         f"{len(labels_idx)} labels and {len(subjects)} subjects.")
    images = list(images) if images is not None else [f"image_{k}" for k in range(max(images_idx, default=-1) + 1)]
    labels = list(labels)
    dataset = []
    for k, (e, i, lb, s) in enumerate(zip(eeg_list, images_idx, labels_idx, subjects)):
        eeg = e if isinstance(e, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(e))
        if eeg.untyped_storage().nbytes() != eeg.numel() * eeg.element_size():
            eeg = eeg.clone()  # a view into a larger buffer: save this trial only, not the whole buffer
        if eeg.ndim != 2:
            raise ValueError(f"Invalid EEG for trial {k}: expected shape (n_chans, L), got {tuple(eeg.shape)}.")
        if not (0 <= int(i) < len(images) and 0 <= int(lb) < len(labels)):
            raise ValueError(f"Trial {k} points to image {int(i)} and label {int(lb)}, but there are "
                             f"{len(images)} images and {len(labels)} labels.")
        dataset.append({"eeg": eeg, "image": int(i), "label": int(lb), "subject": int(s)})
    extra = {k: v for k, v in (("ch_names", None if ch_names is None else [str(n) for n in ch_names]),
                               ("sfreq", None if sfreq is None else float(sfreq)),
                               ("tmin", None if tmin is None else float(tmin)),
                               ("window", None if window is None else [int(v) for v in window])) if v is not None}
    obj = {"dataset": dataset, "labels": labels, "images": images, **extra}
    _space_of(obj, int(dataset[0]["eeg"].shape[0]) if dataset else 0, Path(path).name)  # refuse before writing
    torch.save(obj, path)
    return Path(path)


def save_splits(path: str | Path, splits: list[dict] | dict) -> Path:
    """Write a splits file ``{"splits": [{"train": [...], "val": [...], "test": [...]}, ...]}``.

    Parameters
    ----------
    path : str | Path
    splits : dict | list of dict
        One ``{"train", "val", "test"}`` dict of trial indices, or a list of them (split 0 is the one used).
    """
    splits = [splits] if isinstance(splits, dict) else list(splits)
    for k, s in enumerate(splits):
        if not isinstance(s, dict) or not set(s) <= {"train", "val", "test"}:
            found = sorted(s) if isinstance(s, dict) else type(s).__name__
            raise ValueError(f"Split {k}: expected a dict with 'train', 'val' and 'test' index lists, got {found}.")
    torch.save({"splits": [{k: [int(i) for i in v] for k, v in s.items()} for s in splits]}, path)
    return Path(path)
