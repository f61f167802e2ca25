"""Read and write single EEG trials in the formats users upload.

``read_trial(path)`` -> :class:`EEGTrial` for ``.npz``, ``.npy``, ``.pth`` (a tensor, one EEG-ImageNet item
or a trial dict), ``.fif``, ``.edf``, ``.bdf``, ``.set`` and ``.vhdr`` (MNE's readers). Data keep the
file's units (volts for the MNE formats). Nothing is executed while reading: ``.pth`` files are opened
with ``torch.load(..., weights_only=True)`` and ``.npy``/``.npz`` with ``allow_pickle=False``.

Only the files the caller hands over are opened: a header's references (BrainVision, EEGLAB, split FIF) must
be bare names of the given companions, and MNE reads copies in a private folder under a guard that refuses
any other file (:mod:`neuroimagen.data.companions`). Memory is bounded by what is used: sizes are checked in
float32, the dtype trials are computed in, before any array is converted.

Every problem with a file, read or written, is a :class:`~neuroimagen.data.errors.TrialFileError` (a
``ValueError``; ``FileNotFoundError`` for a path that does not exist) whose message names the file, what was
expected and what came; invalid arguments are ``ValueError``/``TypeError``. A file that a reader chokes on is
reported as
"Could not read 'x.edf' as EDF: <reason>. The file may be truncated or corrupt."
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._check import check_range, validate_type
from .classes import CLASSES
from .companions import OutsideFileRefused, only_these_files, stage
from .errors import TrialFileError
from .montage import SFREQ, model_ch_names

MAX_FILE_BYTES = 100 * 2**20  # larger uploads (all companion files together) are refused before reading
MAX_TRIAL_BYTES = 128 * 2**20  # one trial's EEG as float32 (e.g. 128 channels x 10 s at 25 kHz): more is refused
MAX_STIMULUS_SIDE = 4096  # pixels; a seen image carried in a trial file
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
        Provenance (``file``, ``format``, ``assumed`` when rate, channels or onset were not in the file,
        ``note`` for the epoch or event occurrence taken) and, after :func:`~neuroimagen.data.preprocess`,
        the channel report (``info["channels"]``) and ``info["preprocessed"] = True``.
    tmin : float
        Time of the first sample relative to stimulus onset, in seconds: 0 for a trial that starts at
        onset, -0.2 for an epoch with 200 ms before it.
    positions : ndarray, shape (n_chans, 3) | None
        Electrode positions from the file (head frame, metres; NaN rows where unknown), used before the
        channel names to place the channels (:mod:`neuroimagen.data.channels`).
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    subject: int | None = None
    label: int | None = None
    stimulus: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    tmin: float = 0.0
    positions: np.ndarray | None = None

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


# ------------------------------------------------------------------------------------------------- reading
def _as_numpy(v) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def check_trial_bytes(shape: tuple[int, ...], name: str) -> None:
    """Refuse, before reading or converting, an EEG array over ``MAX_TRIAL_BYTES`` as float32."""
    n = int(np.prod(shape, dtype=np.int64))
    if 4 * n > MAX_TRIAL_BYTES:
        dims = " x ".join(f"{d:,}" for d in shape)
        raise TrialFileError(f"{name!r} holds {n:,} EEG samples ({dims}): {4 * n / 2**20:,.0f} MB as float32, over "
                             f"the {MAX_TRIAL_BYTES / 2**20:.0f} MB limit for one trial (e.g. 128 channels x 10 s at "
                             f"25 kHz). Crop the recording to the trial first.")


def _check_eeg_shape(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    if dtype.kind not in "iuf":
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected numbers, got dtype {dtype}.")
    if len(shape) != 2:
        hint = (f" A batch of {shape[0]} trials? Save one trial per file."
                if len(shape) == 3 else " One channel? Expected all channels of one trial." if len(shape) == 1 else "")
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected 2 dimensions (n_chans, n_times), got shape "
                             f"{tuple(shape)}.{hint}")
    if 0 in shape:
        raise TrialFileError(f"Invalid EEG array in {name!r}: expected (n_chans, n_times), got the empty shape "
                             f"{tuple(shape)}.")
    check_trial_bytes(tuple(shape), name)


def _check_eeg_array(data, name: str) -> np.ndarray:
    """The EEG as float32 (the dtype trials are computed in), checked before it is converted."""
    if hasattr(data, "numpy"):  # a tensor: check its shape before numpy copies a half or bfloat16 one
        _check_eeg_shape(tuple(data.shape), np.dtype("float32" if data.is_floating_point() else "int64"), name)
    data = _as_numpy(data)
    _check_eeg_shape(data.shape, data.dtype, name)
    return data.astype(np.float32, copy=False)


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


def _opt_int(v, key: str, name: str, low: int = 0, high: int | None = None, what: str = "") -> int | None:
    """An optional integer field, refused (not dropped) when it is not one in [low, high]."""
    if v is None:
        return None
    a = _as_numpy(v)
    ok = a.ndim == 0 and a.dtype.kind in "iuf" and bool(np.isfinite(a)) and float(a) == int(a)
    if not ok or not (low <= int(a) and (high is None or int(a) <= high)):
        rng = f"from {low} to {high}" if high is not None else f">= {low}"
        got = a.tolist() if a.size <= 8 else f"an array of shape {a.shape}"
        raise TrialFileError(f"Invalid {key!r} in {name!r}: expected {what or 'an integer'} {rng}, got {got!r}.")
    return int(a)


def _check_stimulus_shape(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    if len(shape) != 3 or shape[-1] != 3 or dtype.kind not in "iuf" or not (
            1 <= shape[0] <= MAX_STIMULUS_SIDE and 1 <= shape[1] <= MAX_STIMULUS_SIDE):
        raise TrialFileError(f"Invalid 'stimulus' in {name!r}: expected an RGB image (height, width, 3) of 1 to "
                             f"{MAX_STIMULUS_SIDE} pixels a side with values 0-255, got shape {tuple(shape)} of "
                             f"dtype {dtype}.")


def _stimulus(v, name: str) -> np.ndarray | None:
    """The seen image: (height, width, 3) of 0-255 values, or refused with what came."""
    if v is None:
        return None
    a = _as_numpy(v)
    _check_stimulus_shape(a.shape, a.dtype, name)
    if a.dtype != np.uint8:
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
            raise TrialFileError(f"Invalid 'stimulus' in {name!r}: expected values 0-255, got values from "
                                 f"{a.min()} to {a.max()}.")
        a = np.rint(a).astype(np.uint8)
    return a


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
    kw = {"subject": _opt_int(d.get("subject"), "subject", name, what="a subject number"),
          "label": _opt_int(d.get("label"), "label", name, 0, len(CLASSES) - 1,
                            "a class index (neuroimagen.data.classes.CLASSES)"),
          "stimulus": _stimulus(d.get("stimulus"), name)}
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
    image = _opt_int(d.get("image"), "image", name, what="an image index")
    if image is not None:
        trial.info["image"] = image
    if "tmin" in d:
        trial.tmin = _seconds(d["tmin"], "tmin", name)
    if "positions" in d:
        pos = _as_numpy(d["positions"])
        if pos.shape != (trial.n_chans, 3) or pos.dtype.kind not in "iuf":
            raise TrialFileError(f"Invalid 'positions' in {name!r}: expected one (x, y, z) in metres per channel, "
                                 f"shape ({trial.n_chans}, 3), got shape {pos.shape} of dtype {pos.dtype}.")
        trial.positions = pos.astype(np.float64)
    return trial


def _seconds(v, key: str, name: str) -> float:
    a = _as_numpy(v)
    if a.size != 1 or a.dtype.kind not in "iuf" or not np.isfinite(a).all() or abs(float(a.ravel()[0])) > 60:
        raise TrialFileError(f"Invalid {key!r} in {name!r}: expected one number of seconds (from -60 to 60), got "
                             f"{a.tolist()!r}.")
    return float(a.ravel()[0])


TRIAL_KEYS = ("data", "eeg", "sfreq", "ch_names", "positions", "tmin", "subject", "label", "stimulus", "image")  # what a trial file holds
MAX_NAMES_BYTES = 2**20  # channel names, or any small field of a trial file


def _npy_header(f, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a ``.npy`` header, without reading the array."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
    if read is None:
        raise TrialFileError(_corrupt_msg(name, "NumPy array", f"unsupported .npy version {version}"))
    shape, _, dtype = read(f)
    return tuple(shape), np.dtype(dtype)


def _check_member(key: str, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Before loading an archive's member: object arrays are refused, the EEG is checked in float32, and
    every other field must be small (a stimulus image, names, numbers)."""
    if dtype.hasobject:
        raise _pickle_refusal(name, f"{key!r} is an array of Python objects", "Save numeric arrays.")
    if key in ("data", "eeg"):
        check_trial_bytes(shape, name)
    elif key == "stimulus":
        _check_stimulus_shape(shape, dtype, name)
    elif int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_NAMES_BYTES:
        raise TrialFileError(f"Invalid {key!r} in {name!r}: expected a small field (names or a number), got an "
                             f"array of shape {shape} ({dtype}).")


def _read_npz(path: Path) -> EEGTrial:
    with zipfile.ZipFile(path) as zf:  # check every member we will load from its header, before loading it
        members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        if "data" not in members and "eeg" not in members:
            raise TrialFileError(f"{path.name!r} has no EEG: expected a key 'data' or 'eeg', found "
                                 f"{sorted(members)[:20]}.")
        for key in TRIAL_KEYS:
            if key in members:
                with zf.open(members[key]) as f:
                    _check_member(key, *_npy_header(f, path.name), path.name)
    with np.load(path, allow_pickle=False) as z:
        return _from_mapping({k: z[k] for k in TRIAL_KEYS if k in z.files}, path.name)


def _read_npy(path: Path) -> EEGTrial:
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f, path.name)
    if dtype.hasobject:
        raise _pickle_refusal(path.name, "an array of Python objects", "Save a numeric array.")
    _check_eeg_shape(shape, dtype, path.name)
    return _model_montage_trial(np.load(path, allow_pickle=False), path.name)


def _pickle_refusal(name: str, reason: str, advice: str) -> TrialFileError:
    return TrialFileError(f"Refused to load {name!r}: the file carries Python objects other than tensors, arrays, "
                          f"numbers, strings, lists and dicts ({reason}); loading them could run code, so it was "
                          f"not opened. {advice}")


# How torch's safe loader (weights_only=True) names a refused global, across its versions:
#   "Unsupported global: GLOBAL builtins.eval was not an allowed global by default"   (2.4 - 2.12)
#   "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"   (2.13)
#   "... add_safe_globals([subprocess.Popen]) ..."                                     (the advice it appends)
_GLOBAL_PATTERNS = (r"GLOBAL\s+([\w.]+)", r"safe_globals\(\[([\w.]+)\]\)", r"[Uu]nsupported global:?\s*([\w.]+)")
_CODE_WORDS = ("GLOBAL", "global", "blocked")


def unpickling_reason(err: BaseException) -> tuple[bool, str]:
    """What ``torch.load(weights_only=True)`` refused: (carries code or objects?, a short reason of ours).

    A pickle naming a global (a class or function) is refused as possibly running code: the reason names the
    global (``"it names posix.system"``). Any other failure (an instruction the safe loader does not know,
    random bytes) is a corrupt file. The reason never repeats torch's advice (to load with
    ``weights_only=False``): an upload must never be loaded that way.
    """
    text = str(err)
    for pattern in _GLOBAL_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return True, f"it names {m.group(1)}"
    if any(w in text for w in _CODE_WORDS):
        return True, "it names a Python class or function"
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, flags=re.DOTALL)
    detail = " ".join(m.group(1).split())[:200] if m else type(err).__name__
    return False, detail


def _read_pth(path: Path) -> EEGTrial:
    import pickle

    import torch

    try:  # zip files are mapped, not read: tensor sizes are checked before anything is copied
        obj = torch.load(path, weights_only=True, map_location="cpu", mmap=zipfile.is_zipfile(path))
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
        return _from_mapping({k: obj[k] for k in TRIAL_KEYS if k in obj} if set(obj) & {"data", "eeg"} else obj,
                             path.name)
    raise TrialFileError(f"{path.name!r} holds a {type(obj).__name__}: expected a tensor (n_chans, n_times), an "
                         f"EEG-ImageNet item {{'eeg', 'label', 'image', 'subject'}} or a trial dict {{'data', "
                         f"'sfreq', 'ch_names'}}.")


def _drop_export_padding(raw) -> None:
    """MNE's EDF/BDF export pads the last data record with edge values and marks it BAD_ACQ_SKIP: cut it off."""
    ann = raw.annotations
    end = raw.times[-1] + 1.0 / raw.info["sfreq"]
    for onset, dur, desc in zip(ann.onset - raw.first_time, ann.duration, ann.description):
        if desc == "BAD_ACQ_SKIP" and onset > 0 and abs(onset + dur - end) < 1.5 / raw.info["sfreq"]:
            raw.crop(tmax=onset - 1.0 / raw.info["sfreq"])
            return


CHUNK_SAMPLES = 2**16  # MNE returns float64: read in pieces into the float32 trial


def _positions(inst, picks: list[int]) -> np.ndarray | None:
    """The file's electrode positions (head frame) for ``picks``; None when it has none."""
    pos = np.array([inst.info["chs"][i]["loc"][:3] for i in picks], dtype=np.float64)
    known = np.isfinite(pos).all(axis=1) & (np.abs(pos).sum(axis=1) > 0)
    if not known.any():
        return None
    pos[~known] = np.nan
    return pos


def _eeg_picks(inst, name: str) -> list[int]:
    import mne

    picks = mne.pick_types(inst.info, eeg=True, exclude=[])
    if len(picks) == 0:  # files from other tools may not type their channels: take the untyped ones
        picks = mne.pick_types(inst.info, eeg=False, misc=True, exclude=[])
    if len(picks) == 0:
        types = sorted(set(inst.get_channel_types()))
        raise TrialFileError(f"{name!r} has no EEG channels: expected channels of type 'eeg', found {types}.")
    return list(picks)


ONE_TRIAL_SECONDS = 1.0  # a recording without events is taken as one trial (onset at its first sample) up to this
IGNORED_ANNOTATIONS = ("bad", "edge", "new segment", "boundary")  # annotations that are not stimulus events


@dataclass
class Window:
    """Which part of a recording becomes the trial: ``event`` occurrence ``index`` (or all, ``average``),
    from ``tmin`` to ``tmax`` seconds around its onset."""

    event: str | None = None
    index: int = 0
    average: bool = False
    tmin: float = -0.2
    tmax: float = 0.5


def _raw_events(raw) -> dict[str, np.ndarray]:
    """Event description -> onset samples (from the recording's first sample): annotations (EDF+, BrainVision
    markers, EEGLAB events, FIF annotations), else the stim channel's codes."""
    import mne

    sfreq = raw.info["sfreq"]
    out: dict[str, list[int]] = {}
    for onset, desc in zip(raw.annotations.onset - raw.first_time, raw.annotations.description):
        if desc.lower().startswith(IGNORED_ANNOTATIONS) or desc.lower() in ("stimulus/", ""):
            continue
        out.setdefault(str(desc), []).append(int(round(onset * sfreq)))
    stim = mne.pick_types(raw.info, meg=False, stim=True, exclude=[])
    if not out and len(stim):
        events = mne.find_events(raw, stim_channel=[raw.ch_names[stim[0]]], shortest_event=1, initial_event=True,
                                 verbose="error")
        for sample, _, code in events:
            out.setdefault(str(int(code)), []).append(int(sample - raw.first_samp))
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in sorted(out.items())}


def _event_list(events: dict[str, np.ndarray], k: int = 8) -> str:
    items = [f"{name!r} ({len(on)}x)" for name, on in events.items()]
    return ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "")


def _cut(raw, picks: list[int], onsets: np.ndarray, window: Window, name: str) -> tuple[np.ndarray, int]:
    """The window around each onset, baseline-corrected (before onset), in float32; averaged when several.

    Returns (data, number of occurrences used); occurrences whose window leaves the recording are skipped
    (the caller says how many)."""
    sfreq = raw.info["sfreq"]
    start_off, n = int(round(window.tmin * sfreq)), int(round((window.tmax - window.tmin) * sfreq))
    if n <= 0:
        raise ValueError(f"Invalid window: tmin={window.tmin:g} s must be before tmax={window.tmax:g} s.")
    check_trial_bytes((len(picks), n), name)
    total, used = np.zeros((len(picks), n), np.float64), 0
    for onset in onsets:
        start = int(onset) + start_off
        if start < 0 or start + n > raw.n_times:
            continue
        seg = raw.get_data(picks=picks, start=start, stop=start + n)
        if window.tmin < 0:  # baseline: the mean before onset
            seg = seg - seg[:, : -start_off].mean(axis=1, keepdims=True)
        total += seg
        used += 1
    return (total / max(used, 1)).astype(np.float32), used


def _read_raw_window(raw, name: str, window: Window) -> EEGTrial:
    """A continuous recording: one occurrence of an event (or their average), or the whole recording when it
    has no events and is at most one trial long."""
    if raw.info["sfreq"] <= 0:
        raise TrialFileError(f"{name!r} has no sampling rate.")
    picks = _eeg_picks(raw, name)
    sfreq, seconds = float(raw.info["sfreq"]), raw.n_times / raw.info["sfreq"]
    events = _raw_events(raw)
    names = [raw.ch_names[i] for i in picks]
    if window.event is None:
        if events:
            raise TrialFileError(f"{name!r} is a continuous recording of {seconds:.1f} s with events: "
                                 f"{_event_list(events)}. Choose the event to cut the trial at (event=..., then "
                                 f"index=... or average=True).")
        if seconds > ONE_TRIAL_SECONDS:
            raise TrialFileError(f"{name!r} is a continuous recording of {seconds:.1f} s without events: expected "
                                 f"one trial (at most {ONE_TRIAL_SECONDS:g} s, starting at stimulus onset) or events "
                                 f"marking the stimuli. Cut one trial out of the recording, or add its events.")
        check_trial_bytes((len(picks), raw.n_times), name)
        data = np.empty((len(picks), raw.n_times), np.float32)
        for start in range(0, raw.n_times, CHUNK_SAMPLES):
            stop = min(start + CHUNK_SAMPLES, raw.n_times)
            data[:, start:stop] = raw.get_data(picks=picks, start=start, stop=stop)
        info = {"assumed": "no events in the file: stimulus onset taken at its first sample"}
        return EEGTrial(data=data, sfreq=sfreq, ch_names=names, info=info, positions=_positions(raw, picks))
    if window.event not in events:
        found = _event_list(events) if events else "none"
        raise TrialFileError(f"{name!r} has no event {window.event!r}: its events are {found}.")
    onsets = events[window.event]
    if not window.average:
        if not 0 <= window.index < len(onsets):
            raise TrialFileError(f"{name!r} has {len(onsets)} occurrences of {window.event!r}: expected index from 0 "
                                 f"to {len(onsets) - 1}, got {window.index}.")
        onsets = onsets[[window.index]]
    data, used = _cut(raw, picks, onsets, window, name)
    if used == 0:
        raise TrialFileError(f"{name!r}: the window {window.tmin:g} to {window.tmax:g} s around "
                             f"{'every occurrence' if window.average else 'occurrence ' + str(window.index)} of "
                             f"{window.event!r} leaves the recording ({seconds:.1f} s).")
    if window.average:
        skipped = len(onsets) - used
        note = (f"average of {used} occurrences of {window.event!r}"
                + (f" ({skipped} too close to the recording's edges left out)" if skipped else ""))
    else:
        note = f"occurrence {window.index + 1} of {len(events[window.event])} of {window.event!r}"
    note += f", {window.tmin * 1000:+.0f} to {window.tmax * 1000:+.0f} ms" + (
        ", baseline before onset" if window.tmin < 0 else "")
    return EEGTrial(data=data, sfreq=sfreq, ch_names=names, info={"note": note, "n_averaged": used},
                    tmin=window.tmin, positions=_positions(raw, picks))


def _read_epochs_window(path: Path, name: str, window: Window) -> EEGTrial:
    """An epochs file keeps its own tmin; ``index`` picks an epoch, ``average`` averages them (of ``event``)."""
    import mne

    epochs = mne.read_epochs(path, preload=False, verbose="error")
    if window.event is not None:
        if window.event not in epochs.event_id:
            raise TrialFileError(f"{name!r} has no event {window.event!r}: its epochs are of "
                                 f"{sorted(epochs.event_id)}.")
        epochs = epochs[window.event]
    picks = _eeg_picks(epochs, name)
    n = len(epochs)
    check_trial_bytes((len(picks), len(epochs.times)), name)
    of = f" of {window.event!r}" if window.event is not None else ""
    if window.average:
        total = np.zeros((len(picks), len(epochs.times)))
        for k in range(n):
            total += epochs.get_data(picks=picks, item=k)[0]
        data, note = (total / n).astype(np.float32), f"average of {n} epochs{of}"
    else:
        if not 0 <= window.index < n:
            raise TrialFileError(f"{name!r} has {n} epochs{of}: expected index from 0 to {n - 1}, got "
                                 f"{window.index}.")
        data = epochs.get_data(picks=picks, item=window.index)[0].astype(np.float32)
        note = f"epoch {window.index + 1} of {n}{of}"
    note += f", from {epochs.tmin * 1000:+.0f} ms"
    return EEGTrial(data=data, sfreq=float(epochs.info["sfreq"]), ch_names=[epochs.ch_names[i] for i in picks],
                    info={"note": note, "n_averaged": n if window.average else 1}, tmin=float(epochs.tmin),
                    positions=_positions(epochs, picks))


def _open_raw(path: Path):
    import mne

    ext = path.suffix.lower()
    reader = {".fif": mne.io.read_raw_fif, ".edf": mne.io.read_raw_edf, ".bdf": mne.io.read_raw_bdf,
              ".set": mne.io.read_raw_eeglab, ".vhdr": mne.io.read_raw_brainvision}[ext]
    raw = reader(path, preload=False, verbose="error")
    if ext in (".edf", ".bdf"):
        _drop_export_padding(raw)
    return raw


def _is_epochs(name: str) -> bool:
    return name.lower().endswith(("-epo.fif", "_epo.fif"))


def _read_mne_staged(path: Path, name: str, window: Window) -> EEGTrial:
    """Read a staged recording without preloading: sizes checked first, data read into float32."""
    if _is_epochs(name):
        return _read_epochs_window(path, name, window)
    return _read_raw_window(_open_raw(path), name, window)


@contextlib.contextmanager
def _reading_mne(path: Path, companions):
    """MNE reads copies of exactly the given files, in a private folder, under a guard that refuses any other.
    Yields the staged path; a refused open becomes a TrialFileError naming what was tried."""
    with stage(path, companions, max_bytes=MAX_FILE_BYTES) as staged, \
            only_these_files(list(staged.parent.iterdir())) as refused:
        try:
            yield staged
        except OutsideFileRefused:
            pass
        else:
            if not refused:
                return
        raise TrialFileError(f"{path.name!r} made the reader open {', '.join(map(repr, refused))}, which is not "
                             f"among the files given: refused. Expected a recording whose files are all given.")


def _read_mne(path: Path, companions, window: Window) -> EEGTrial:
    with _reading_mne(path, companions) as staged:
        return _read_mne_staged(staged, path.name, window)


def read_events(path: str | Path, companions: Sequence[str | Path] | None = None) -> dict[str, np.ndarray]:
    """The events of a recording: description -> onsets in seconds from its first sample.

    From the annotations (EDF+, BrainVision ``.vmrk`` markers, EEGLAB events, FIF annotations), else from a
    stim channel (codes as descriptions, e.g. ``"3"``); for epochs files, the epochs' events (their onset is
    each epoch's t = 0). Boundary and bad-segment annotations are not events. Array files have none (``{}``).

    Parameters
    ----------
    path : str | Path
        A recording :func:`read_trial` reads.
    companions : list of (str | Path) | None
        As for :func:`read_trial`.

    Returns
    -------
    events : dict of str to ndarray, shape (n_occurrences,)
        Onsets in seconds, sorted, per description (sorted by description).
    """
    path = _check_path(path)
    if path.suffix.lower() in (".npz", ".npy", ".pth"):
        return {}
    try:
        with _reading_mne(path, companions) as staged:
            if _is_epochs(path.name):
                import mne

                epochs = mne.read_epochs(staged, preload=False, verbose="error")
                codes = {v: k for k, v in epochs.event_id.items()}
                out: dict[str, list[float]] = {}
                for sample, _, code in epochs.events:
                    out.setdefault(codes.get(code, str(code)), []).append(sample / epochs.info["sfreq"])
                return {k: np.array(sorted(v)) for k, v in sorted(out.items())}
            raw = _open_raw(staged)
            return {k: v / raw.info["sfreq"] for k, v in _raw_events(raw).items()}
    except (TrialFileError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - untrusted bytes: any reader failure becomes one clear message
        raise TrialFileError(_corrupt(path, err)) from None


def _check_size(path: Path) -> None:
    """Refuse, before reading, files over MAX_FILE_BYTES, and archives that unpack to more (companions: ``stage``)."""
    size, what = path.stat().st_size, "is"
    if size <= MAX_FILE_BYTES and path.suffix.lower() in (".npz", ".pth") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:  # a small archive can unpack to gigabytes
            size, what = sum(i.file_size for i in z.infolist()), "unpacks to"
    if size > MAX_FILE_BYTES:
        raise TrialFileError(f"{path.name!r} {what} {size / 2**20:.1f} MB: the limit is "
                             f"{MAX_FILE_BYTES / 2**20:.0f} MB for one trial. Crop the recording to the trial first.")


def read_trial(path: str | Path, companions: Sequence[str | Path] | None = None, *, event: str | None = None,
               index: int = 0, average: bool = False, tmin: float = -0.2, tmax: float = 0.5) -> EEGTrial:
    """Read one EEG trial from a file.

    Parameters
    ----------
    path : str | Path
        ``.npz`` (keys ``data`` or ``eeg``; optional ``sfreq``, ``ch_names``, ``subject``, ``label`` (0-39),
        ``stimulus`` (H, W, 3)), ``.npy`` (a (128, n_times) array), ``.pth`` (a tensor, an EEG-ImageNet item or
        a trial dict), ``.fif`` (raw, or epochs when named ``-epo.fif``), ``.edf``, ``.bdf``, ``.set`` (with its
        ``.fdt`` when the data are separate) or ``.vhdr`` (with its ``.eeg`` and ``.vmrk``). Without channel
        names, a 128-row array is taken as the model's montage and, without a rate, at 1000 Hz;
        ``info["assumed"]`` says so.
    companions : list of (str | Path) | None
        The files given with ``path`` (uploads: a server must pass them, see below). The header's
        references must be the bare names of these files and nothing else is read; symbolic links among
        them are refused. ``None``: the files the header names are taken from ``path``'s folder (a local
        recording). :func:`neuroimagen.data.companions.companion_names` lists what a header needs.
    event : str | None
        A continuous recording: the event (a description of :func:`read_events`) to cut the trial at. Without
        one, a recording with events is refused with their list, and one without events is taken whole (onset
        at its first sample, ``info["assumed"]`` says so) only when at most ``ONE_TRIAL_SECONDS`` long. An
        epochs file: only its epochs of this event.
    index : int
        Which occurrence of ``event`` (0-based), or which epoch.
    average : bool
        Average every occurrence (or epoch) instead: an ERP; ``info["n_averaged"]`` says how many.
    tmin, tmax : float
        The window around the event's onset, in seconds; the mean before onset is subtracted (baseline).
        Epochs files keep their own window.

    Returns
    -------
    trial : EEGTrial
        ``data`` shape (n_chans, n_times), float32, in the file's units; EEG channels only; ``tmin`` the
        time of its first sample relative to onset; ``info["note"]`` which epoch or occurrence was taken.

    Raises
    ------
    TrialFileError (a ValueError)
        Unsupported extension, empty, oversized (``MAX_FILE_BYTES`` on disk, ``MAX_TRIAL_BYTES`` as float32),
        truncated or corrupt file, a pickle with code, no EEG, invalid ``label``/``stimulus``, a header that
        names a path or a file that was not given, a split FIF.
    FileNotFoundError
        No file at ``path``.

    Notes
    -----
    Only the given files are ever opened: MNE reads copies of them in a private folder, the BrainVision
    header rewritten from its parsed values, under a guard that refuses to open any other file
    (:mod:`neuroimagen.data.companions`).
    """
    window = _window(event, index, average, tmin, tmax)
    path = _check_path(path)
    ext = path.suffix.lower()
    try:
        _check_size(path)
        if ext in (".npz", ".npy", ".pth"):
            if companions:
                names = ", ".join(repr(Path(c).name) for c in companions)
                raise TrialFileError(f"Got {names} with {path.name!r}: a {READERS[ext]} file is one trial on its own; "
                                     f"give it alone.")
            if event is not None or average or index:
                raise TrialFileError(f"{path.name!r} is one trial ({READERS[ext]}): it has no events or epochs to "
                                     f"choose from (event, index, average are for recordings and epochs files).")
            with only_these_files([path]):
                trial = {".npz": _read_npz, ".npy": _read_npy, ".pth": _read_pth}[ext](path)
        else:
            trial = _read_mne(path, companions, window)
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


def _trial_path(path) -> Path:
    """``path`` as a Path whose extension is one of ``READERS`` (both :func:`read_trial` and :func:`write_trial`)."""
    validate_type("path", path, (str, os.PathLike), "str or Path")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READERS:
        raise TrialFileError(f"Unsupported file type {ext or '(none)'!r} for {path.name!r}. Allowed: {ALLOWED}.")
    return path


def _check_path(path) -> Path:
    path = _trial_path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}.")
    if path.stat().st_size == 0:
        raise TrialFileError(f"{path.name!r} is empty (0 bytes): expected one EEG trial in {READERS[ext]} format.")
    return path


def _window(event, index, average, tmin, tmax) -> Window:
    validate_type("event", event, (str, type(None)), "str or None")
    validate_type("index", index, (int, np.integer), "int")
    validate_type("average", average, (bool, np.bool_), "bool")
    check_range("index", index, 0)
    check_range("tmin", tmin, -10.0, 10.0)
    check_range("tmax", tmax, -10.0, 10.0)
    if not tmin < tmax or not tmin <= 0 < tmax:
        raise ValueError(f"Invalid window: expected tmin <= 0 < tmax (seconds around the event's onset), got "
                         f"tmin={tmin!r}, tmax={tmax!r}.")
    return Window(event, int(index), bool(average), float(tmin), float(tmax))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return re.sub(r"(?:[^\s'\"/]*/)+", "", line)[:300]  # file names only: never where the server keeps files


def _corrupt_msg(name: str, fmt: str, reason: str) -> str:
    return f"Could not read {name!r} as {fmt}: {reason.rstrip('. ')}. The file may be truncated or corrupt."


def _corrupt(path: Path, err: BaseException | str) -> str:
    reason = err if isinstance(err, str) else _first_line(err)
    if isinstance(err, FileNotFoundError):
        reason = f"a file it refers to is missing ({Path(str(err.filename or reason)).name}); give it too"
    return _corrupt_msg(path.name, READERS[path.suffix.lower()], reason)


# ------------------------------------------------------------------------------------------------- writing
def write_trial(trial: EEGTrial, path: str | Path) -> Path:
    """Write a trial in the format given by the extension (the ones :func:`read_trial` reads).

    ``.npz``/``.pth`` keep every field; ``.npy`` keeps only the data (so it reads back as the model montage
    at 1 kHz); the MNE formats keep data (volts), rate, channel names and positions: ``-epo.fif`` through
    ``EpochsArray.save`` (keeping ``tmin``), ``.fif`` through ``Raw.save``,
    ``.edf``/``.bdf``/``.set``/``.vhdr`` through ``mne.export.export_raw`` (BrainVision also writes the
    ``.eeg``/``.vmrk`` beside the ``.vhdr``). EDF/BDF store whole data records: MNE pads the last one and
    marks the padding, which :func:`read_trial` cuts off again.

    Parameters
    ----------
    trial : EEGTrial
    path : str | Path
        Any ``os.PathLike``, as :func:`read_trial` takes.

    Returns
    -------
    path : Path

    Raises
    ------
    TrialFileError (a ValueError)
        Unsupported extension, data that are not (n_chans, n_times) with one name per channel, a trial that
        does not start at onset written in a format that cannot keep ``tmin``.
    TypeError
        ``trial`` is not an EEGTrial, or ``path`` not a str or Path.
    """
    validate_type("trial", trial, EEGTrial)
    path = _trial_path(path)
    ext = path.suffix.lower()
    data = np.asarray(trial.data)
    if data.ndim != 2 or data.shape[0] != len(trial.ch_names):
        raise TrialFileError(f"Invalid trial: expected data (n_chans, n_times) with one name per channel, got shape "
                         f"{data.shape} and {len(trial.ch_names)} names.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"data": data.astype(np.float32), "sfreq": float(trial.sfreq), "ch_names": np.array(trial.ch_names)}
    if trial.tmin:
        fields["tmin"] = float(trial.tmin)
    if trial.positions is not None:
        fields["positions"] = np.asarray(trial.positions, dtype=np.float64)
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

        info = mne.create_info(list(trial.ch_names), float(trial.sfreq), "eeg")
        if trial.positions is not None:
            pos = np.asarray(trial.positions, dtype=np.float64)
            ch_pos = {n: p for n, p in zip(trial.ch_names, pos) if np.isfinite(p).all()}
            info.set_montage(mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head"), on_missing="ignore")
        if _is_epochs(path.name):  # an epochs file keeps tmin
            mne.EpochsArray(data[None].astype(np.float64), info, tmin=float(trial.tmin), baseline=None,
                            verbose="error").save(path, overwrite=True, verbose="error")
            return path
        if trial.tmin:
            raise TrialFileError(f"Cannot write a trial that starts {trial.tmin * 1000:+.0f} ms from onset as {ext}: a "
                             f"recording starts at its onset. Write it as .npz, .pth or -epo.fif (which keep tmin).")
        raw = mne.io.RawArray(data.astype(np.float64), info, verbose="error")
        if ext == ".fif":
            raw.save(path, overwrite=True, verbose="error")
        elif ext in (".edf", ".bdf"):
            # channelwise: each channel uses the full digital range (16-bit EDF keeps small channels precise)
            mne.export.export_raw(path, raw, fmt=ext[1:], physical_range="channelwise", overwrite=True, verbose="error")
        else:
            mne.export.export_raw(path, raw, fmt={".set": "eeglab", ".vhdr": "brainvision"}[ext], overwrite=True,
                                  verbose="error")
    return path
