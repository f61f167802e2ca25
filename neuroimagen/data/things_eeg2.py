"""THINGS-EEG2 (Gifford et al., NeuroImage 2022): reader for the preprocessed EEG and the image metadata.

The layout, as the data set's own preprocessing code writes it (``02_eeg_preprocessing/preprocessing.py`` and
``preprocessing_utils.py`` in github.com/gifale95/eeg_encoding; the files are on OSF, project ``anp5v``)::

    DIR/sub-01/preprocessed_eeg_training.npy   # np.save of a dict:
    DIR/sub-01/preprocessed_eeg_test.npy       #   'preprocessed_eeg_data', 'ch_names', 'times'
    ...
    DIR/sub-10/...
    image_metadata.npy                         # np.save of a dict: 'train_img_concepts', 'train_img_files',
                                               #   'test_img_concepts', 'test_img_files' (and *_THINGS)

- ``preprocessed_eeg_data``: float64, (image conditions, repetitions, channels, times): training
  (16540, 4, 17, 100) = 1654 concepts x 10 images x 4 repetitions; test (200, 80, 17, 100) = 200 concepts
  x 1 image x 80 repetitions. Row ``i`` is image condition ``i + 1``, i.e. entry ``i`` of the metadata's
  lists (``save_prepr`` sorts by condition; ``epoching`` takes ``np.unique`` of the event codes). The
  repetitions of the 4 sessions are shuffled together (seed 20200220), so their order carries no session.
- ``ch_names``: the 17 occipital and parietal channels (``'^O *|^P *'``: P7, P5, P3, P1, Pz, P2, P4, P6, P8,
  PO7, PO3, POz, PO4, PO8, O1, Oz, O2); ``times``: MNE's ``epochs.times``, -0.2 to 0.79 s at 100 Hz.
  Epochs are baseline-corrected and whitened per session (MVNN, with covariances that average the training
  and test partitions).
- ``image_metadata.npy``: per image, its concept folder (``'00011_album'``) and file (``'album_02s.jpg'``);
  the image is ``training_images/00011_album/album_02s.jpg`` (``test_images/...`` for the test split) in
  the image set.

The re-preprocessed variant most decoders use (NICE, github.com/eeyhsong/NICE-EEG ``preprocessing/``; ATM,
github.com/dongyangli-del/EEG_Image_decode, reads it from ``Preprocessed_data_250Hz/sub-XX/``) has the same
file names, keys and layout, with all 63 channels, 250 Hz, and epochs cut to 0-1 s: training
(16540, 4, 63, 250), test (200, 80, 63, 250). Two differences are documented by that code: the dict is
written with ``pickle.dump(..., protocol=4)`` into the ``.npy`` name (not ``np.save``), and the data lose
their first 50 samples (``[..., 50:]``, the 0.2 s before onset) while ``times`` keeps them (300 values from
-0.2 s; ATM reads ``times[50:]``). Both are read here: a file is told apart by its first bytes, and when
``times`` is longer than the data by exactly the samples before 0 s, the data are taken to start at 0 s
(``info["times"]`` says so). Other layouts are refused with what was expected.

Everything is unpickled by :func:`~neuroimagen.data.safe_pickle.load_pickled`, which admits numpy arrays and
Python containers only: a file that names anything else is refused before it is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataFileError
from .safe_pickle import file_kind, load_pickled

SPLITS = {"training": "train", "test": "test"}  # file name part -> metadata key prefix
EEG_KEYS = ("preprocessed_eeg_data", "ch_names", "times")
IMAGE_FOLDERS = {"training": "training_images", "test": "test_images"}


@dataclass(eq=False)
class ThingsEEG2Dataset:
    """One subject's THINGS-EEG2 split: trials, channels, times and the image of each trial.

    Trials are ordered image by image (all repetitions of image 0, then image 1, ...), as the file's
    rows; with ``average_repetitions=True`` there is one trial per image, the mean of its repetitions.

    Attributes
    ----------
    data : ndarray, shape (n_images, n_repetitions, n_chans, n_times)
        As stored (float64 in the published files); ``n_repetitions`` is 1 after averaging.
    ch_names : list of str
    sfreq : float
        Sampling rate in Hz, from the spacing of ``times``.
    times : ndarray, shape (n_times,)
        Seconds from stimulus onset (-0.2 to 0.79 in the official files).
    subject : int
    split : str
        ``"training"`` or ``"test"``.
    image_concepts : list of str | None
        Per image (row of ``data``), its concept folder, e.g. ``'00011_album'``; None without metadata.
    image_files : list of str | None
        Per image, the file relative to the split's image folder, e.g. ``'00011_album/album_02s.jpg'``.
    n_averaged : int
        Repetitions averaged into each trial (1 when they are kept apart).
    info : dict
        Provenance: ``file``, ``format`` (``"np.save"`` or ``"pickle"``), ``metadata`` (its file or None),
        ``times`` (a note when ``times`` was aligned to the data).
    """

    data: np.ndarray
    ch_names: list[str]
    sfreq: float
    times: np.ndarray
    subject: int
    split: str
    image_concepts: list[str] | None = None
    image_files: list[str] | None = None
    n_averaged: int = 1
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ shape
    @property
    def n_images(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_repetitions(self) -> int:
        """Trials per image: the file's repetitions, or 1 after averaging."""
        return int(self.data.shape[1])

    @property
    def n_chans(self) -> int:
        return int(self.data.shape[2])

    @property
    def n_times(self) -> int:
        return int(self.data.shape[3])

    @property
    def tmin(self) -> float:
        """Time of the first sample relative to stimulus onset, in seconds."""
        return float(self.times[0])

    def __len__(self) -> int:
        return self.n_images * self.n_repetitions

    # ------------------------------------------------------------------ per trial
    @property
    def eeg(self) -> np.ndarray:
        """All trials, ndarray (n_trials, n_chans, n_times): a view of ``data``, image by image."""
        return self.data.reshape(-1, self.n_chans, self.n_times)

    @property
    def image_index(self) -> np.ndarray:
        """Per trial, its image: the row of ``data`` and the entry of the metadata lists, ndarray (n_trials,)."""
        return np.repeat(np.arange(self.n_images), self.n_repetitions)

    @property
    def repetition(self) -> np.ndarray:
        """Per trial, which repetition of its image it is (0 for every trial after averaging)."""
        return np.tile(np.arange(self.n_repetitions), self.n_images)

    @property
    def concepts(self) -> list[str] | None:
        """Per trial, its concept folder (``'00011_album'``); None without metadata."""
        if self.image_concepts is None:
            return None
        return [self.image_concepts[i] for i in self.image_index]

    @property
    def trial_image_files(self) -> list[str] | None:
        """Per trial, its image file relative to the split's image folder; None without metadata."""
        if self.image_files is None:
            return None
        return [self.image_files[i] for i in self.image_index]

    @property
    def concept_names(self) -> list[str] | None:
        """Per image, the concept's words: ``'00011_album'`` -> ``'album'``, ``'00018_air_conditioner'`` ->
        ``'air conditioner'`` (the folder name without its number, underscores as spaces)."""
        if self.image_concepts is None:
            return None
        return [c.split("_", 1)[-1].replace("_", " ") for c in self.image_concepts]

    def image_path(self, index: int, image_set_dir: str | Path) -> Path:
        """The image file of image ``index`` (a row of ``data``) in the THINGS-EEG2 image set folder, which
        holds ``training_images/`` and ``test_images/``."""
        if self.image_files is None:
            raise ValueError("This dataset was loaded without image_metadata.npy: pass image_metadata= to "
                             "load_things_eeg2 to know each trial's image.")
        return Path(image_set_dir) / IMAGE_FOLDERS[self.split] / self.image_files[index]

    def __getitem__(self, i: int) -> dict:
        """Trial ``i``: ``eeg`` (n_chans, n_times), ``image`` (row in the metadata), ``repetition`` and, with
        metadata, ``concept`` and ``image_file``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"Trial {i} out of range: this dataset has {n} trials.")
        img, rep = divmod(int(i) % n, self.n_repetitions)
        item = {"eeg": self.data[img, rep], "image": img, "repetition": rep}
        if self.image_files is not None:
            item.update(concept=self.image_concepts[img], image_file=self.image_files[img])
        return item


def load_things_eeg2(directory: str | Path, subject: int, split: str = "training", *,
                     average_repetitions: bool = False,
                     image_metadata: str | Path | None = None) -> ThingsEEG2Dataset:
    """Load one subject's preprocessed THINGS-EEG2 split (the official files or the 250 Hz re-preprocessing).

    Parameters
    ----------
    directory : str | Path
        The folder holding ``sub-01`` ... ``sub-10`` (the OSF "Preprocessed EEG data", or
        ``Preprocessed_data_250Hz`` of NICE/ATM).
    subject : int
        1 to 10: reads ``directory/sub-XX/preprocessed_eeg_{split}.npy``.
    split : str
        ``"training"`` (1654 concepts x 10 images x 4 repetitions) or ``"test"`` (200 concepts x 1 image x
        80 repetitions), as the file names say.
    average_repetitions : bool
        Average each image's repetitions into one trial (as the field's protocol does for the test split),
        or keep every repetition as a trial (False).
    image_metadata : str | Path | None
        The data set's ``image_metadata.npy`` (the image set's folder on OSF). None: ``directory /
        "image_metadata.npy"`` when it exists, else the dataset carries no concepts or image files.

    Returns
    -------
    dataset : ThingsEEG2Dataset

    Raises
    ------
    FileNotFoundError
        No subject folder or file (the message lists what the folder holds).
    DataFileError
        A file that is not the THINGS-EEG2 layout (missing key, wrong shape, ``ch_names`` or ``times`` that
        do not match the data, metadata of another length) or whose pickle names anything but numpy arrays
        and Python containers.

    Notes
    -----
    The layout and where it is stated are in this module's docstring (the data set's preprocessing code,
    and NICE's and ATM's for the 250 Hz variant). The whole array is read into memory, as ``np.load`` does
    (a pickled array cannot be memory-mapped): about 0.9 GB for an official training file, 8.3 GB for a
    250 Hz 63-channel one, in float64 as stored. Averaging makes a new array of 1/4 (training) or 1/80
    (test) of that.

    Examples
    --------
    >>> train = load_things_eeg2("things-eeg2/preprocessed_data", 1, "training",
    ...                          image_metadata="things-eeg2/image_set/image_metadata.npy")  # doctest: +SKIP
    >>> train.eeg.shape, train.sfreq, train.repetition[:5]  # doctest: +SKIP
    ((66160, 17, 100), 100.0, array([0, 1, 2, 3, 0]))
    >>> test = load_things_eeg2("things-eeg2/preprocessed_data", 1, "test", average_repetitions=True)  # doctest: +SKIP
    >>> test.eeg.shape  # doctest: +SKIP
    (200, 17, 100)
    """
    from .._check import check_option, check_range, validate_type

    check_option("split", split, tuple(SPLITS))
    validate_type("subject", subject, (int, np.integer), "int")
    if isinstance(subject, bool):
        raise TypeError("subject must be an instance of int, got bool instead.")
    check_range("subject", int(subject), 1)
    validate_type("average_repetitions", average_repetitions, (bool, np.bool_), "bool")
    validate_type("image_metadata", image_metadata, (str, os.PathLike, type(None)), "path-like or None")

    # 1. The EEG file
    directory = Path(directory)
    path = _subject_file(directory, int(subject), split)
    fmt = {"npy": "np.save", "pickle": "pickle"}.get(file_kind(path))
    d = _check_dict(load_pickled(path), path.name, EEG_KEYS, "THINGS-EEG2 preprocessed EEG")
    data = d["preprocessed_eeg_data"]
    if not isinstance(data, np.ndarray) or data.ndim != 4 or data.dtype.kind != "f" or 0 in data.shape:
        got = f"shape {data.shape}, dtype {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DataFileError(f"Invalid 'preprocessed_eeg_data' in {path.name!r}: expected a float array (image "
                            f"conditions, repetitions, channels, times), e.g. {_official_shape(split)}, got {got}.")
    n_images, _, n_chans, n_times = data.shape
    ch_names = _check_names(d["ch_names"], n_chans, path.name)
    times, times_note = _check_times(d["times"], n_times, path.name)
    sfreq = _sfreq(times, path.name)

    # 2. The image metadata
    meta_path = Path(image_metadata) if image_metadata is not None else directory / "image_metadata.npy"
    concepts = files = None
    if image_metadata is not None or meta_path.is_file():
        concepts, files = _read_metadata(meta_path, split, n_images, path.name)

    # 3. Repetitions
    n_averaged = 1
    if average_repetitions:
        n_averaged = int(data.shape[1])
        data = data.mean(axis=1, keepdims=True, dtype=np.float64).astype(data.dtype, copy=False)
    info = {"file": str(path), "format": fmt, "metadata": str(meta_path) if concepts is not None else None}
    if times_note:
        info["times"] = times_note
    return ThingsEEG2Dataset(data=data, ch_names=ch_names, sfreq=sfreq, times=times, subject=int(subject),
                             split=split, image_concepts=concepts, image_files=files, n_averaged=n_averaged,
                             info=info)


def _official_shape(split: str) -> str:
    return "(16540, 4, 17, 100) for training" if split == "training" else "(200, 80, 17, 100) for test"


def _subject_file(directory: Path, subject: int, split: str) -> Path:
    folder = directory / f"sub-{subject:02d}"
    name = f"preprocessed_eeg_{split}.npy"
    if not directory.is_dir():
        raise FileNotFoundError(f"No THINGS-EEG2 folder at {directory}: expected the folder holding sub-01 ... "
                                f"sub-10.")
    if not folder.is_dir():
        subs = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name.startswith("sub-"))
        found = f"it holds {', '.join(subs)}" if subs else "it holds no sub-XX folders"
        raise FileNotFoundError(f"No subject folder {folder.name!r} in {directory}: {found}. Expected the folder "
                                f"of the preprocessed data, holding sub-01 ... sub-10.")
    path = folder / name
    if not path.is_file():
        have = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(f"No {name!r} in {folder}: expected preprocessed_eeg_training.npy and "
                                f"preprocessed_eeg_test.npy, found {have[:10] or 'nothing'}.")
    return path


def _check_dict(obj, name: str, keys: tuple[str, ...], what: str) -> dict:
    if not isinstance(obj, dict):
        got = f"an array of shape {obj.shape}" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise DataFileError(f"{name!r} is not {what}: expected a dict with keys {_keys(keys)}, got {got}.")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFileError(f"{name!r} has no {_keys(missing)}: expected {what} with keys {_keys(keys)}, found "
                            f"{_keys(sorted(map(str, obj)))}.")
    return obj


def _keys(keys) -> str:
    return ", ".join(repr(k) for k in keys) or "none"


def _str_list(value, key: str, n: int | None, name: str, expected: str) -> list[str]:
    items = list(value) if isinstance(value, list | tuple | np.ndarray) and np.ndim(value) == 1 else None
    if items is None or not all(isinstance(s, str | np.str_) for s in items):
        got = (f"an array of shape {value.shape}, dtype {value.dtype}" if isinstance(value, np.ndarray)
               else f"a {type(value).__name__}")
        if items is not None:
            bad = next(s for s in items if not isinstance(s, str | np.str_))
            got = f"a {type(value).__name__} holding {type(bad).__name__} {bad!r}"
        raise DataFileError(f"Invalid {key!r} in {name!r}: expected {expected}, got {got}.")
    if n is not None and len(items) != n:
        raise DataFileError(f"Invalid {key!r} in {name!r}: expected {expected} ({n}), got {len(items)}.")
    return [str(s) for s in items]


def _check_names(value, n_chans: int, name: str) -> list[str]:
    return _str_list(value, "ch_names", n_chans, name, "one name per channel of 'preprocessed_eeg_data'")


def _check_times(value, n_times: int, name: str) -> tuple[np.ndarray, str | None]:
    times = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
    if times is None or times.ndim != 1 or times.dtype.kind not in "fiu" or not np.isfinite(times).all() \
            or len(times) < 2:
        got = f"shape {times.shape}, dtype {times.dtype}" if times is not None else f"a {type(value).__name__}"
        raise DataFileError(f"Invalid 'times' in {name!r}: expected seconds from stimulus onset, one per sample "
                            f"({n_times}), got {got}.")
    times = times.astype(np.float64)
    if len(times) == n_times:
        return times, None
    extra = len(times) - n_times
    if extra > 0:
        step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        if step > 0 and abs(times[extra]) < step / 2:  # NICE: data[..., 50:] with times kept from -0.2 s
            return times[extra:], (f"'times' has {len(times)} values from {times[0]:.3f} s and the data "
                                   f"{n_times} samples: the data start at 0 s (the first {extra} times, before "
                                   f"onset, were cut from the data only, as NICE's preprocessing does)")
    raise DataFileError(f"Invalid 'times' in {name!r}: expected one time per sample of 'preprocessed_eeg_data' "
                        f"({n_times}), or the data's times after the pre-onset samples that NICE's preprocessing "
                        f"cuts from the data only, got {len(times)} values from {times[0]:.3f} to "
                        f"{times[-1]:.3f} s.")


def _sfreq(times: np.ndarray, name: str) -> float:
    steps = np.diff(times)
    if len(steps) == 0 or steps[0] <= 0 or not np.allclose(steps, steps[0], rtol=1e-4, atol=0):
        raise DataFileError(f"Invalid 'times' in {name!r}: expected evenly spaced increasing times (at least 2) "
                            f"to give the sampling rate, got {np.array2string(times[:6], precision=4)}"
                            f"{' ...' if len(times) > 6 else ''}.")
    return float(np.round(1.0 / np.mean(steps), 6))


def _read_metadata(path: Path, split: str, n_images: int, eeg_name: str) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"No image metadata file at {path}: expected the data set's image_metadata.npy.")
    prefix = SPLITS[split]
    keys = (f"{prefix}_img_concepts", f"{prefix}_img_files")
    d = _check_dict(load_pickled(path), path.name, keys, "THINGS-EEG2 image metadata")
    what = f"one entry per {split} image condition (the rows of {eeg_name!r})"
    concepts = _str_list(d[keys[0]], keys[0], None, path.name, what)
    files = _str_list(d[keys[1]], keys[1], len(concepts), path.name, f"one file per entry of {keys[0]!r}")
    if len(concepts) != n_images:
        raise DataFileError(f"{path.name!r} lists {len(concepts)} {split} images, but {eeg_name!r} holds "
                            f"{n_images} image conditions: expected one metadata entry per row of "
                            f"'preprocessed_eeg_data', in the same order (a file of another split or data set?).")
    # the published lists hold bare file names ('album_02s.jpg'); a path that already names its folder is kept
    return concepts, [f if f.startswith(f"{c}/") else f"{c}/{f}" for c, f in zip(concepts, files, strict=True)]
