"""Read and write single EEG trials in the formats users upload.

``read_trial(path)`` -> :class:`EEGTrial` for ``.npz``, ``.npy``, ``.pth`` (a tensor, one EEG-ImageNet item
or a trial dict), ``.fif``, ``.edf``, ``.bdf``, ``.set`` and ``.vhdr`` (MNE's readers). Data keep the
file's units (volts for the MNE formats). Nothing is executed while reading: ``.pth`` files are opened
with ``torch.load(..., weights_only=True)`` and ``.npy``/``.npz`` with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .montage import SFREQ, model_ch_names

MAX_FILE_BYTES = 100 * 2**20  # larger uploads are refused before reading
READERS = {".npz": "NumPy archive", ".npy": "NumPy array", ".pth": "PyTorch", ".fif": "FIF", ".edf": "EDF",
           ".bdf": "BDF", ".set": "EEGLAB", ".vhdr": "BrainVision"}
ALLOWED = ", ".join(READERS)


class TrialFileError(ValueError):
    """A file was read but does not hold what a trial needs (the message says what was expected)."""


@dataclass
class EEGTrial:
    """One EEG trial.

    Attributes
    ----------
    data : ndarray, shape (n_chans, n_times)
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
    subject : int | None
    label : int | None
        Class index (``neuroimagen.data.classes.CLASSES``) when known.
    stimulus : ndarray, shape (H, W, 3), uint8 | None
        The image that was seen, when known.
    info : dict
        Provenance (file, format, assumptions) and, after :func:`~neuroimagen.data.preprocess`, the
        channel report (``info["channels"]``) and ``info["preprocessed"] = True``.
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    subject: int | None = None
    label: int | None = None
    stimulus: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_chans(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_times(self) -> int:
        return int(self.data.shape[-1])

    @property
    def duration(self) -> float:
        return self.n_times / self.sfreq


def _model_montage_trial(data: np.ndarray, path: Path, **kw) -> EEGTrial:
    """A bare array: only a (128, n) array can be taken as the model montage at 1 kHz."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise TrialFileError(f"Invalid EEG array in {path.name!r}: expected 2 dimensions (n_chans, n_times), "
                         f"got shape {data.shape}.")
    n = len(model_ch_names())
    if data.shape[0] != n:
        hint = " It looks transposed." if data.shape[1] == n else ""
        raise TrialFileError(f"{path.name!r} holds an array of shape {data.shape} without channel names: expected "
                         f"({n}, n_times) in the model's montage order, or a file with 'ch_names' and 'sfreq'.{hint}")
    info = {"assumed": f"no channel names or rate in the file: taken as the model's {n} channels at {SFREQ:g} Hz"}
    return EEGTrial(data=data.astype(np.float64), sfreq=SFREQ, ch_names=list(model_ch_names()), info=info, **kw)


def _opt_int(v) -> int | None:
    if v is None:
        return None
    a = np.asarray(v)
    return int(a) if a.ndim == 0 and a.dtype.kind in "iuf" and np.isfinite(a) and int(a) >= 0 else None


def _from_mapping(d: dict, path: Path) -> EEGTrial:
    """A dict-like trial: keys data|eeg, optional sfreq, ch_names, subject, label, stimulus."""
    key = "data" if "data" in d else ("eeg" if "eeg" in d else None)
    if key is None:
        raise TrialFileError(f"{path.name!r} has no EEG: expected a key 'data' or 'eeg', found {sorted(d)}.")
    data = np.asarray(d[key].numpy() if hasattr(d[key], "numpy") else d[key])
    stim = d.get("stimulus")
    stim = None if stim is None else np.asarray(stim.numpy() if hasattr(stim, "numpy") else stim)
    if stim is not None and not (stim.ndim == 3 and stim.shape[-1] == 3):
        stim = None
    kw = dict(subject=_opt_int(d.get("subject")), label=_opt_int(d.get("label")),
              stimulus=None if stim is None else stim.astype(np.uint8))
    if "ch_names" in d and "sfreq" in d:
        names = [str(c) for c in np.asarray(d["ch_names"]).tolist()]
        if data.ndim != 2:
            raise TrialFileError(f"Invalid EEG array in {path.name!r}: expected 2 dimensions (n_chans, n_times), "
                             f"got shape {data.shape}.")
        if len(names) != data.shape[0]:
            raise TrialFileError(f"{path.name!r}: {len(names)} channel names for {data.shape[0]} channels of data.")
        return EEGTrial(data=data.astype(np.float64), sfreq=float(np.asarray(d["sfreq"])), ch_names=names, **kw)
    return _model_montage_trial(data, path, **kw)


def _read_npz(path: Path) -> EEGTrial:
    with np.load(path, allow_pickle=False) as z:
        return _from_mapping({k: z[k] for k in z.files}, path)


def _read_pth(path: Path) -> EEGTrial:
    import pickle

    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise TrialFileError(f"Refused to load {path.name!r}: it carries Python objects other than tensors, numbers, "
                         f"strings, lists and dicts, which could run code. Save the trial as plain tensors "
                         f"(e.g. torch.save({{'data': tensor, 'sfreq': 1000.0, 'ch_names': [...]}}, path)). "
                         f"Details: {str(err).splitlines()[0]}") from None
    if isinstance(obj, torch.Tensor):
        return _model_montage_trial(obj.numpy(), path)
    if isinstance(obj, dict) and "dataset" in obj:
        raise TrialFileError(f"{path.name!r} is a whole EEG-ImageNet data set ({len(obj['dataset'])} trials), not one "
                         f"trial: use neuroimagen.data.load_eeg_imagenet, or save one item of its 'dataset'.")
    if isinstance(obj, dict):
        return _from_mapping(obj, path)
    raise TrialFileError(f"{path.name!r} holds a {type(obj).__name__}: expected a tensor (n_chans, n_times), an "
                     f"EEG-ImageNet item {{'eeg', 'label', 'image', 'subject'}} or a trial dict {{'data', 'sfreq', "
                     f"'ch_names'}}.")


def _read_mne(path: Path) -> EEGTrial:
    import mne

    ext = path.suffix.lower()
    if ext == ".fif" and path.name.endswith(("-epo.fif", "_epo.fif")):
        epochs = mne.read_epochs(path, preload=True, verbose="error").pick("eeg")
        return EEGTrial(data=epochs.get_data()[0], sfreq=float(epochs.info["sfreq"]), ch_names=epochs.ch_names,
                        info={"note": f"first of {len(epochs)} epochs"})
    reader = {".fif": mne.io.read_raw_fif, ".edf": mne.io.read_raw_edf, ".bdf": mne.io.read_raw_bdf,
              ".set": mne.io.read_raw_eeglab, ".vhdr": mne.io.read_raw_brainvision}[ext]
    raw = reader(path, preload=True, verbose="error")
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    if len(picks) == 0:  # EDF/BDF often do not type their channels: take all non-stim channels
        picks = mne.pick_types(raw.info, eeg=True, misc=True, eog=False, stim=False, exclude=[])
    return EEGTrial(data=raw.get_data(picks=picks), sfreq=float(raw.info["sfreq"]),
                    ch_names=[raw.ch_names[i] for i in picks])


def read_trial(path: str | Path) -> EEGTrial:
    """Read one EEG trial from a file.

    Parameters
    ----------
    path : str | Path
        ``.npz``, ``.npy``, ``.pth``, ``.fif``, ``.edf``, ``.bdf``, ``.set`` or ``.vhdr``.

    Returns
    -------
    trial : EEGTrial
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READERS:
        raise ValueError(f"Unsupported file type {ext or '(none)'!r} for {path.name!r}. Allowed: {ALLOWED}.")
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}.")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path.name!r} is empty (0 bytes): expected a {READERS[ext]} file with one EEG trial.")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name!r} is {size / 2**20:.0f} MB: the limit is {MAX_FILE_BYTES / 2**20:.0f} MB "
                         f"for one trial.")
    try:
        if ext == ".npz":
            trial = _read_npz(path)
        elif ext == ".npy":
            trial = _model_montage_trial(np.load(path, allow_pickle=False), path)
        elif ext == ".pth":
            trial = _read_pth(path)
        else:
            trial = _read_mne(path)
    except TrialFileError:
        raise
    except (ValueError, OSError, EOFError, RuntimeError, KeyError, IndexError, TypeError, zipfile.BadZipFile,
            UnicodeDecodeError, AssertionError) as err:
        raise ValueError(f"Could not read {path.name!r} as {READERS[ext]}: {_first_line(err)}. The file may be "
                         f"truncated or corrupt.") from None
    trial.info.update(file=path.name, format=READERS[ext])
    return trial


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def write_trial(trial: EEGTrial, path: str | Path) -> Path:
    """Write a trial in the format given by the extension (the ones :func:`read_trial` reads).

    ``.npz``/``.pth`` keep every field; ``.npy`` keeps only the data (so it must be the model montage at
    1 kHz to read back as such); the MNE formats keep data, rate and channel names (BrainVision also
    writes the ``.eeg``/``.vmrk`` beside the ``.vhdr``; EEGLAB may write a ``.fdt``).
    """
    import mne

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READERS:
        raise ValueError(f"Unsupported file type {ext or '(none)'!r} for {path.name!r}. Allowed: {ALLOWED}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"data": np.asarray(trial.data, dtype=np.float32), "sfreq": float(trial.sfreq),
              "ch_names": np.array(trial.ch_names)}
    if trial.subject is not None:
        fields["subject"] = int(trial.subject)
    if trial.label is not None:
        fields["label"] = int(trial.label)
    if trial.stimulus is not None:
        fields["stimulus"] = np.asarray(trial.stimulus, dtype=np.uint8)
    if ext == ".npz":
        np.savez_compressed(path, **fields)
    elif ext == ".npy":
        np.save(path, fields["data"])
    elif ext == ".pth":
        import torch

        torch.save({k: (v.tolist() if isinstance(v, np.ndarray) and v.dtype.kind == "U" else
                        torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in fields.items()}, path)
    else:
        raw = mne.io.RawArray(np.asarray(trial.data, dtype=np.float64),
                              mne.create_info(list(trial.ch_names), trial.sfreq, "eeg"), verbose="error")
        if ext == ".fif":
            raw.save(path, overwrite=True, verbose="error")
        elif ext in (".edf", ".bdf"):
            _write_edf(trial, path)
        else:
            fmt = {".edf": "edf", ".bdf": "bdf", ".set": "eeglab", ".vhdr": "brainvision"}[ext]
            mne.export.export_raw(path, raw, fmt=fmt, overwrite=True, verbose="error")
    return path


def _write_edf(trial: EEGTrial, path: Path) -> None:
    """EDF (16 bit) / BDF (24 bit) with one data record spanning the trial, so nothing is padded."""
    import edfio

    bdf = path.suffix.lower() == ".bdf"
    bits, signal_cls, file_cls = (2**23, edfio.BdfSignal, edfio.Bdf) if bdf else (2**15, edfio.EdfSignal, edfio.Edf)
    data_uv = np.asarray(trial.data, dtype=np.float64) * 1e6  # EDF convention: physical unit uV
    signals = []
    for name, x in zip(trial.ch_names, data_uv):
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 1.0, hi + 1.0
        signals.append(signal_cls(x, trial.sfreq, label=f"EEG {name}"[:16], physical_dimension="uV",
                                       physical_range=(lo, hi), digital_range=(-bits, bits - 1)))
    file_cls(signals, data_record_duration=trial.n_times / trial.sfreq).write(path)
