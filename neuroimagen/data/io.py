"""Read and write single EEG trials in the formats users upload.

``read_trial(path)`` -> :class:`EEGTrial` for ``.npz``, ``.npy``, ``.pth`` (a tensor, one EEG-ImageNet item
or a trial dict), ``.fif``, ``.edf``, ``.bdf``, ``.set`` and ``.vhdr`` (MNE's readers). Data keep the
file's units (volts for the MNE formats). Nothing is executed while reading: ``.pth`` files are opened
with ``torch.load(..., weights_only=True)`` and ``.npy``/``.npz`` with ``allow_pickle=False``.

Every failure is a ``ValueError`` (or ``FileNotFoundError`` for a path that does not exist) whose message
names the file, what was expected and what came; a file that a reader chokes on is reported as
"Could not read 'x.edf' as EDF: <reason>. The file may be truncated or corrupt."
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .montage import SFREQ, model_ch_names

MAX_FILE_BYTES = 100 * 2**20  # larger uploads (all companion files together) are refused before reading
READERS = {".npz": "NumPy archive", ".npy": "NumPy array", ".pth": "PyTorch", ".fif": "FIF", ".edf": "EDF",
           ".bdf": "BDF", ".set": "EEGLAB", ".vhdr": "BrainVision"}
ALLOWED = ", ".join(READERS)


@dataclass
class EEGTrial:
    """One EEG trial.

    Attributes
    ----------
    data : ndarray, shape (n_chans, n_times)
        Stimulus onset at sample 0; the file's units (volts for the MNE formats).
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
    subject : int | None
    label : int | None
        Class index (``neuroimagen.data.classes.CLASSES``) when known.
    stimulus : ndarray, shape (H, W, 3), uint8 | None
        The image that was seen, when known.
    info : dict
        Provenance (``file``, ``format``, ``assumed`` when rate or channels were not in the file) and,
        after :func:`~neuroimagen.data.preprocess`, the channel report (``info["channels"]``) and
        ``info["preprocessed"] = True``.
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
        """Length in seconds."""
        return self.n_times / self.sfreq


class TrialFileError(ValueError):
    """A file that cannot be read as one trial; the message names the file, what was expected and what came."""


# ------------------------------------------------------------------------------------------------- reading
def _as_numpy(v) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def _check_eeg_array(data, name: str) -> np.ndarray:
    data = _as_numpy(data)
    if data.dtype.kind not in "iuf":
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected numbers, got dtype {data.dtype}.")
    if data.ndim != 2:
        hint = (f" A batch of {data.shape[0]} trials? Save one trial per file."
                if data.ndim == 3 else " One channel? Expected all channels of one trial." if data.ndim == 1 else "")
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected 2 dimensions (n_chans, n_times), got shape "
                             f"{data.shape}.{hint}")
    if 0 in data.shape:
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected (n_chans, n_times), got the empty shape "
                             f"{data.shape}.")
    return data.astype(np.float64)


def _model_montage_trial(data, name: str, sfreq: float | None = None, **kw) -> EEGTrial:
    """An array without channel names: only (128, n) can be taken as the model montage (at 1 kHz unless given)."""
    data = _check_eeg_array(data, name)
    n = len(model_ch_names())
    if data.shape[0] != n:
        hint = " It looks transposed." if data.shape[1] == n else ""
        raise TrialFileError(f"{name!r} holds an array of shape {data.shape} without channel names: expected "
                             f"({n}, n_times) in the model's montage order, or a file with 'ch_names' (and "
                             f"'sfreq').{hint}")
    rate = SFREQ if sfreq is None else sfreq
    what = "channel names" if sfreq is not None else "channel names or rate"
    info = {"assumed": f"no {what} in the file: taken as the model's {n} channels at {rate:g} Hz"}
    return EEGTrial(data=data, sfreq=rate, ch_names=list(model_ch_names()), info=info, **kw)


def _opt_int(v) -> int | None:
    if v is None:
        return None
    a = _as_numpy(v)
    ok = a.ndim == 0 and a.dtype.kind in "iuf" and np.isfinite(a) and int(a) >= 0
    return int(a) if ok else None


def _sfreq(v, name: str) -> float:
    a = _as_numpy(v)
    if a.size != 1 or a.dtype.kind not in "iuf" or not np.isfinite(a).all() or float(a.ravel()[0]) <= 0:
        raise TrialFileError(f"Invalid 'sfreq' in {name!r}: expected one positive number of Hz, got {a.tolist()!r}.")
    return float(a.ravel()[0])


def _from_mapping(d: dict, name: str) -> EEGTrial:
    """A dict-like trial: keys data|eeg, optional sfreq, ch_names, subject, label, stimulus (and image)."""
    key = "data" if "data" in d else ("eeg" if "eeg" in d else None)
    if key is None:
        raise TrialFileError(f"{name!r} has no EEG: expected a key 'data' or 'eeg', found {sorted(map(str, d))}.")
    stim = d.get("stimulus")
    stim = None if stim is None else _as_numpy(stim)
    if stim is not None and not (stim.ndim == 3 and stim.shape[-1] == 3 and stim.dtype.kind in "iuf"):
        stim = None  # an extra we cannot show is ignored, not refused
    kw = {"subject": _opt_int(d.get("subject")), "label": _opt_int(d.get("label")),
          "stimulus": None if stim is None else np.clip(stim, 0, 255).astype(np.uint8)}
    sfreq = _sfreq(d["sfreq"], name) if "sfreq" in d else None
    if "ch_names" not in d:
        trial = _model_montage_trial(d[key], name, sfreq, **kw)
    else:
        data = _check_eeg_array(d[key], name)
        names = d["ch_names"]
        names = [str(c) for c in (names if isinstance(names, list | tuple) else np.asarray(names).ravel().tolist())]
        if len(names) != data.shape[0]:
            raise TrialFileError(f"{name!r} has {len(names)} channel names for {data.shape[0]} channels of data: "
                                 f"expected one name per row of {key!r} (shape (n_chans, n_times)).")
        trial = EEGTrial(data=data, sfreq=SFREQ if sfreq is None else sfreq, ch_names=names, **kw)
        if sfreq is None:
            trial.info["assumed"] = f"no 'sfreq' in the file: taken as {SFREQ:g} Hz"
    if _opt_int(d.get("image")) is not None:
        trial.info["image"] = _opt_int(d.get("image"))
    return trial


def _read_npz(path: Path) -> EEGTrial:
    with np.load(path, allow_pickle=False) as z:
        return _from_mapping({k: z[k] for k in z.files}, path.name)


def _read_npy(path: Path) -> EEGTrial:
    return _model_montage_trial(np.load(path, allow_pickle=False), path.name)


def _pickle_refusal(name: str, reason: str, advice: str) -> TrialFileError:
    return TrialFileError(f"Refused to load {name!r}: the file carries Python objects other than tensors, arrays, "
                          f"numbers, strings, lists and dicts, which could run code, so it was not opened. {advice} "
                          f"(Details: {reason})")


def unpickling_reason(err: BaseException) -> tuple[bool, str]:
    """What ``torch.load(weights_only=True)`` refused: (carries code or objects?, the short reason).

    A pickle naming a global (a class or function) is refused as possibly running code; any other
    unpickling failure (an instruction the safe loader does not know, random bytes) is a corrupt file.
    """
    text = str(err)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, flags=re.DOTALL)
    reason = " ".join((m.group(1) if m else _first_line(err)).split())[:200]
    return "Unsupported global" in text or "GLOBAL" in reason, reason


def _read_pth(path: Path) -> EEGTrial:
    import pickle

    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        code, reason = unpickling_reason(err)
        if not code:
            raise TrialFileError(_corrupt(path, f"not a file of plain tensors that the safe loader "
                                 f"(weights_only=True) accepts ({reason})")) from None
        raise _pickle_refusal(path.name, reason, "Save the trial as plain tensors, e.g. torch.save({'data': tensor, "
                                                 "'sfreq': 1000.0, 'ch_names': [...]}, path).") from None
    if isinstance(obj, torch.Tensor):
        return _model_montage_trial(obj, path.name)
    if isinstance(obj, dict) and "dataset" in obj:
        n = len(obj["dataset"]) if hasattr(obj["dataset"], "__len__") else "many"
        raise TrialFileError(f"{path.name!r} is a whole EEG-ImageNet data set ({n} trials), not one trial: use "
                             f"neuroimagen.data.load_eeg_imagenet, or save one item of its 'dataset'.")
    if isinstance(obj, dict):
        return _from_mapping(obj, path.name)
    raise TrialFileError(f"{path.name!r} holds a {type(obj).__name__}: expected a tensor (n_chans, n_times), an "
                         f"EEG-ImageNet item {{'eeg', 'label', 'image', 'subject'}} or a trial dict {{'data', "
                         f"'sfreq', 'ch_names'}}.")


def _companions(path: Path) -> list[Path]:
    """The files a BrainVision header names (data and markers); they must be beside it."""
    if path.suffix.lower() != ".vhdr":
        return []
    text = path.read_bytes()[:65536].decode("latin-1")
    out = []
    for key in ("DataFile", "MarkerFile"):
        m = re.search(rf"^\s*{key}\s*=\s*(.+?)\s*$", text, flags=re.MULTILINE)
        if m is None:
            raise TrialFileError(f"Could not read {path.name!r} as BrainVision: the header has no {key}= line. "
                                 f"The file may be truncated or corrupt.")
        out.append(path.parent / Path(m.group(1).replace("\\", "/")).name)  # names only: never leave the folder
    missing = [p.name for p in out if not p.is_file()]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise TrialFileError(f"{path.name!r} is a BrainVision header whose {' and '.join(map(repr, missing))} {verb} "
                             f"not beside it: a BrainVision recording is three files (.vhdr, .vmrk, .eeg); give all "
                             f"three.")
    return out


def _drop_export_padding(raw) -> None:
    """MNE's EDF/BDF export pads the last data record with edge values and marks it BAD_ACQ_SKIP: cut it off."""
    ann = raw.annotations
    end = raw.times[-1] + 1.0 / raw.info["sfreq"]
    for onset, dur, desc in zip(ann.onset - raw.first_time, ann.duration, ann.description):
        if desc == "BAD_ACQ_SKIP" and onset > 0 and abs(onset + dur - end) < 1.5 / raw.info["sfreq"]:
            raw.crop(tmax=onset - 1.0 / raw.info["sfreq"])
            return


def _read_mne(path: Path) -> EEGTrial:
    import mne

    ext = path.suffix.lower()
    info: dict = {}
    if ext == ".fif" and path.name.lower().endswith(("-epo.fif", "_epo.fif")):
        inst = mne.read_epochs(path, preload=True, verbose="error")
        info["note"] = f"first of {len(inst)} epochs"
        if inst.tmin < 0:  # a trial starts at stimulus onset
            inst.crop(tmin=0.0)
            info["note"] += ", from stimulus onset (t = 0)"
    else:
        reader = {".fif": mne.io.read_raw_fif, ".edf": mne.io.read_raw_edf, ".bdf": mne.io.read_raw_bdf,
                  ".set": mne.io.read_raw_eeglab, ".vhdr": mne.io.read_raw_brainvision}[ext]
        inst = reader(path, preload=True, verbose="error")
        if ext in (".edf", ".bdf"):
            _drop_export_padding(inst)
    picks = mne.pick_types(inst.info, eeg=True, exclude=[])
    if len(picks) == 0:  # files from other tools may not type their channels: take the untyped ones
        picks = mne.pick_types(inst.info, eeg=False, misc=True, exclude=[])
    if len(picks) == 0:
        types = sorted(set(inst.get_channel_types()))
        raise TrialFileError(f"{path.name!r} has no EEG channels: expected channels of type 'eeg', found {types}.")
    data = inst.get_data(picks=picks)
    data = data[0] if data.ndim == 3 else data
    return EEGTrial(data=data, sfreq=float(inst.info["sfreq"]), ch_names=[inst.ch_names[i] for i in picks],
                    info=info)


def _check_size(path: Path) -> None:
    """Refuse, before reading, files (with their companions) over MAX_FILE_BYTES, and archives that unpack to more."""
    files = [path, *_companions(path)]
    if path.suffix.lower() == ".set" and path.with_suffix(".fdt").is_file():
        files.append(path.with_suffix(".fdt"))
    size = sum(f.stat().st_size for f in files)
    what = "is"
    if size <= MAX_FILE_BYTES and path.suffix.lower() in (".npz", ".pth") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:  # a small archive can unpack to gigabytes
            size, what = sum(i.file_size for i in z.infolist()), "unpacks to"
    if size > MAX_FILE_BYTES:
        raise TrialFileError(f"{path.name!r} {what} {size / 2**20:.1f} MB: the limit is "
                             f"{MAX_FILE_BYTES / 2**20:.0f} MB for one trial. Crop the recording to the trial first.")


def read_trial(path: str | Path) -> EEGTrial:
    """Read one EEG trial from a file.

    Parameters
    ----------
    path : str | Path
        ``.npz`` (keys ``data`` or ``eeg``; optional ``sfreq``, ``ch_names``, ``subject``, ``label``,
        ``stimulus``), ``.npy`` (a (128, n_times) array), ``.pth`` (a tensor, an EEG-ImageNet item or a
        trial dict), ``.fif`` (raw; ``-epo.fif``: the first epoch), ``.edf``, ``.bdf``, ``.set`` or ``.vhdr``
        (with its ``.eeg`` and ``.vmrk`` beside it). Without channel names, a 128-row array is taken as the
        model's montage and, without a rate, at 1000 Hz; ``info["assumed"]`` says so.

    Returns
    -------
    trial : EEGTrial
        ``data`` shape (n_chans, n_times), float64, in the file's units; EEG channels only.

    Raises
    ------
    TrialFileError (a ValueError)
        Unsupported extension, empty, oversized, truncated or corrupt file, a pickle with code, no EEG.
    FileNotFoundError
        No file at ``path``.
    """
    from .._check import validate_type

    validate_type("path", path, (str, os.PathLike), "str or Path")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READERS:
        raise TrialFileError(f"Unsupported file type {ext or '(none)'!r} for {path.name!r}. Allowed: {ALLOWED}.")
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}.")
    if path.stat().st_size == 0:
        raise TrialFileError(f"{path.name!r} is empty (0 bytes): expected one EEG trial in {READERS[ext]} format.")
    try:
        _check_size(path)
        if ext == ".npz":
            trial = _read_npz(path)
        elif ext == ".npy":
            trial = _read_npy(path)
        elif ext == ".pth":
            trial = _read_pth(path)
        else:
            trial = _read_mne(path)
    except TrialFileError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):  # numpy refusing an object array
            raise _pickle_refusal(path.name, _first_line(err), "Save a numeric array.") from None
        raise TrialFileError(_corrupt(path, err)) from None
    except Exception as err:  # noqa: BLE001 - untrusted bytes: any reader failure becomes one clear message
        raise TrialFileError(_corrupt(path, err)) from None
    trial.info.update(file=path.name, format=READERS[ext])
    return trial


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line.replace(str(Path.cwd()), ".")[:300]  # never echo where the server keeps its files


def _corrupt(path: Path, err: BaseException | str) -> str:
    reason = err if isinstance(err, str) else _first_line(err)
    reason = reason.replace(str(path.parent) + "/", "").replace(str(path.parent), "").rstrip(". ")
    if isinstance(err, FileNotFoundError):
        reason = f"a file it refers to is missing ({Path(str(err.filename or reason)).name}); give it too"
    fmt = READERS[path.suffix.lower()]
    return f"Could not read {path.name!r} as {fmt}: {reason}. The file may be truncated or corrupt."


# ------------------------------------------------------------------------------------------------- writing
def write_trial(trial: EEGTrial, path: str | Path) -> Path:
    """Write a trial in the format given by the extension (the ones :func:`read_trial` reads).

    ``.npz``/``.pth`` keep every field; ``.npy`` keeps only the data (so it reads back as the model montage
    at 1 kHz); the MNE formats keep data (volts), rate and channel names: ``.fif`` through ``Raw.save``,
    ``.edf``/``.bdf``/``.set``/``.vhdr`` through ``mne.export.export_raw`` (BrainVision also writes the
    ``.eeg``/``.vmrk`` beside the ``.vhdr``). EDF/BDF store whole data records: MNE pads the last one and
    marks the padding, which :func:`read_trial` cuts off again.

    Parameters
    ----------
    trial : EEGTrial
    path : str | Path

    Returns
    -------
    path : Path
    """
    from .._check import validate_type

    validate_type("trial", trial, EEGTrial)
    validate_type("path", path, (str, Path), "str or Path")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READERS:
        raise ValueError(f"Unsupported file type {ext or '(none)'!r} for {path.name!r}. Allowed: {ALLOWED}.")
    data = np.asarray(trial.data)
    if data.ndim != 2 or data.shape[0] != len(trial.ch_names):
        raise ValueError(f"Invalid trial: expected data (n_chans, n_times) with one name per channel, got shape "
                         f"{data.shape} and {len(trial.ch_names)} names.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"data": data.astype(np.float32), "sfreq": float(trial.sfreq), "ch_names": np.array(trial.ch_names)}
    for key in ("subject", "label"):
        if getattr(trial, key) is not None:
            fields[key] = int(getattr(trial, key))
    if trial.stimulus is not None:
        fields["stimulus"] = np.asarray(trial.stimulus, dtype=np.uint8)
    if ext == ".npz":
        np.savez_compressed(path, **fields)
    elif ext == ".npy":
        np.save(path, fields["data"])
    elif ext == ".pth":
        import torch

        fields["ch_names"] = list(trial.ch_names)
        torch.save({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}, path)
    else:
        import mne

        raw = mne.io.RawArray(data.astype(np.float64), mne.create_info(list(trial.ch_names), float(trial.sfreq), "eeg"),
                              verbose="error")
        if ext == ".fif":
            raw.save(path, overwrite=True, verbose="error")
        elif ext in (".edf", ".bdf"):
            # channelwise: each channel uses the full digital range (16-bit EDF keeps small channels precise)
            mne.export.export_raw(path, raw, fmt=ext[1:], physical_range="channelwise", overwrite=True, verbose="error")
        else:
            mne.export.export_raw(path, raw, fmt={".set": "eeglab", ".vhdr": "brainvision"}[ext], overwrite=True,
                                  verbose="error")
    return path
