"""Signal steps shared by every path into the model space (docs/CONTRACTS.md).

``bandpass`` and ``standardize`` are used by the simulator (to write files like the published
``eeg_5_95_std.pth``), by the training datasets and by :func:`preprocess` for uploaded trials, so the
three land in the same space.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .._check import check_range, validate_type
from .channels import interpolation_weights, norm_name, place_channels
from .io import EEGTrial
from .montage import CROP, SFREQ, model_ch_names  # CROP: samples after stimulus onset the models see

L_FREQ = 5.0  # Hz, as the published eeg_5_95_std.pth
H_FREQ = 95.0


def bandpass(data: np.ndarray, sfreq: float, l_freq: float | None = L_FREQ, h_freq: float | None = H_FREQ) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass along the last axis.

    An IIR filter because trials are short (~0.5 s): a FIR filter with a 5 Hz edge would be longer than
    the trial. ``l_freq=None`` / ``h_freq=None`` make it a low-pass / high-pass.

    Parameters
    ----------
    data : ndarray, shape (..., n_times)
    sfreq : float
        Sampling rate in Hz.
    """
    from scipy.signal import butter, sosfiltfilt

    nyq = sfreq / 2.0
    if h_freq is not None and h_freq >= nyq:
        h_freq = None  # nothing to remove above Nyquist
    if l_freq is None and h_freq is None:
        return np.asarray(data, dtype=np.float64)
    if l_freq is None:
        sos = butter(4, h_freq, btype="lowpass", fs=sfreq, output="sos")
    elif h_freq is None:
        sos = butter(4, l_freq, btype="highpass", fs=sfreq, output="sos")
    else:
        sos = butter(4, [l_freq, h_freq], btype="bandpass", fs=sfreq, output="sos")
    return sosfiltfilt(sos, np.asarray(data, dtype=np.float64), axis=-1)


def standardize(data: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per channel remove the mean over time, then divide by one global std (topography kept).

    Parameters
    ----------
    data : ndarray, shape (..., n_chans, n_times)
        One trial or a batch; each trial is scaled on its own.
    """
    x = np.asarray(data, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    return x / np.maximum(std, eps)


FLAT_STD = 1e-15  # a channel whose std is below this (in the file's units) carries no signal ...
FLAT_REL = 1e-6  # ... nor does one a million times quieter than the median channel


def _names(names, k: int = 4) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:k]) + (", ..." if len(names) > k else "")


# The fewest channels a trial may have (placed, with signal). Measured on the shipped checkpoint with trials
# simulated on each cap (scripts/cap_accuracy.py -> reports/caps/demo, 120 held-out images, 40 classes, chance
# 2.5 %; the class decoder since 2026-12-02): 8 occipito-parietal channels decode the class in 20.8 % (new people
# 15.8 %); 6, 4 and 3 occipital ones in 10.8, 9.2 and 2.5 % (new people 10.8, 9.2, 1.7 %): one trial in ten,
# whose picture would be the wrong class nine times in ten. Below 8 nothing useful is left to show.
# (The EEG stages before channel-subset augmentation: 13.3 % at 8, chance below; reports/caps/demo-unaugmented.)
MIN_CHANNELS = 8


def _check_coverage(n: int, min_channels: int, model: tuple[str, ...], file_names: list[str], scheme: str,
                    what: str) -> None:
    if n >= min_channels:
        return
    raise ValueError(f"Only {n} of the file's {len(file_names)} channels ({_names(file_names)}) {what}; expected "
                     f"at least {min_channels} EEG channels with known names or positions (10-05 names such as "
                     f"{_names(model, 3)}, BioSemi A1..H32, EGI E1..E257, or positions in the file), from which "
                     f"the model's {len(model)} are interpolated. Read as: {scheme}.")


# Limits on one trial (docs/RELIABILITY.md): they bound what resampling, filtering and interpolation can cost
# before anything runs (a small file claiming 0.5 Hz would otherwise be resampled 2000-fold).
MAX_CHANNELS = 512
MAX_TRIAL_SECONDS = 10.0
SFREQ_RANGE = (100.0, 20_000.0)  # Hz


def check_trial_limits(raw) -> None:
    """Refuse a trial :func:`preprocess` will not take: too many channels, too long, or an implausible rate.

    Without these, a small file claiming e.g. 0.5 Hz would be resampled 2000-fold to the model's 1 kHz (a
    10 MB upload could ask for tens of GB). Raises ``ValueError`` with what was expected and what came.
    """
    file = raw.info.get("file") if isinstance(raw.info, dict) else None
    name = repr(str(file)) if file else "The trial"
    n_chans, n_times, sfreq = raw.data.shape[0], raw.data.shape[-1], float(raw.sfreq)
    if n_chans > MAX_CHANNELS:
        raise ValueError(f"{name} has {n_chans} channels: at most {MAX_CHANNELS} (the model uses the "
                         f"128 actiCAP channels; others are dropped). Keep the EEG channels of one cap.")
    low, high = SFREQ_RANGE
    if not low <= sfreq <= high:
        raise ValueError(f"{name} is sampled at {sfreq:g} Hz: expected {low:g} to {high:g} Hz (the model works at "
                         f"{SFREQ:g} Hz on the 5-95 Hz band). Check the file's sampling rate.")
    seconds = n_times / sfreq
    if seconds > MAX_TRIAL_SECONDS:
        raise ValueError(f"{name} is {seconds:.1f} s long ({n_times} samples at {sfreq:g} Hz): expected one "
                         f"trial of at most {MAX_TRIAL_SECONDS:g} s (the model uses 20-460 ms after stimulus "
                         f"onset). Cut one trial out of the recording, starting at stimulus onset.")


def preprocess(trial, ch_names: tuple[str, ...] | list[str] | None = None, sfreq: float = 1000.0,
               l_freq: float | None = L_FREQ, h_freq: float | None = H_FREQ, crop: tuple[int, int] = CROP,
               min_channels: int | None = None):
    """Bring a trial into the models' space (docs/CONTRACTS.md).

    Places the file's channels, whatever the cap (:mod:`neuroimagen.data.channels`: the file's positions,
    else its names in the scheme they follow: 10-05, BioSemi banks, EGI), takes each model channel recorded
    under its own name (case-insensitive; ``'EEG Fp1'`` and ``'Fp1-Ref'`` match ``'Fp1'``) and interpolates
    every other one, and flat ones, with spherical splines (MNE) from all placed channels; refuses fewer
    than ``min_channels`` placed channels with signal; resamples to ``sfreq`` (from any rate in ``SFREQ_RANGE``),
    band-passes on the whole trial, crops samples ``crop`` after stimulus onset and standardizes
    (:func:`standardize`). A trial of exactly ``crop[1] - crop[0]`` samples (after resampling) is taken as
    already cropped. A trial on the model's channels at ``sfreq`` makes no MNE object (a few ms).

    Parameters
    ----------
    trial : EEGTrial
        From :func:`neuroimagen.data.read_trial`; data shape (n_chans, n_times), its first sample at
        ``trial.tmin`` seconds from stimulus onset (0: onset at sample 0; -0.2: an epoch with a baseline).
    ch_names : list of str | None
        The model's channels, 10-05 names (default: the 128 actiCAP channels of ``brainproducts-RNP-BA-128``); a
        model of another montage: its own (``pipe.eeg_preprocess_kwargs``).
    sfreq : float
        The model's rate in Hz.
    l_freq, h_freq : float | None
        Band-pass edges in Hz (None: no high-pass / low-pass).
    crop : tuple of int
        Samples (at ``sfreq``) the models see, counted from stimulus onset (negative: before it; a pipeline's
        own: ``pipe.eeg_preprocess_kwargs``).
    min_channels : int | None
        Fewest channels with a position and a signal; fewer is refused (default ``MIN_CHANNELS``, measured:
        see its comment).

    Returns
    -------
    trial : EEGTrial
        ``data`` float32, shape (len(ch_names), crop[1] - crop[0]); ``info["channels"]`` =
        ``{"mapped": [...], "interpolated": {name: "missing" | "flat"}, "dropped": [...]}`` (file channels
        not used), ``info["preprocessed"] = True``, and ``info["resampled"]`` / ``info["cropped"]`` when done.

    Raises
    ------
    ValueError
        Wrong shape, NaN/Inf, too short, too few model channels, too many missing or flat channels; over
        the limits of :func:`check_trial_limits` (channels, seconds, rate).
    TypeError
        ``trial`` is not an EEGTrial.
    """
    # 1. Check inputs
    model = _check_preprocess_inputs(trial, ch_names, sfreq, min_channels, crop)
    min_channels = MIN_CHANNELS if min_channels is None else min_channels

    # 2. Channels: the file's channels placed, the model's recorded ones found, the others to interpolate
    ch = _select_channels(trial, model, min_channels)
    xs = ch.data

    # 3. Rate: resample (never refuse another rate)
    info = dict(trial.info)
    if abs(trial.sfreq - sfreq) > 1e-6 * sfreq:
        from scipy.signal import resample_poly

        frac = Fraction(sfreq / trial.sfreq).limit_denominator(1000)
        xs = resample_poly(xs, frac.numerator, frac.denominator, axis=-1)
        info["resampled"] = f"{trial.sfreq:g} Hz -> {sfreq:g} Hz"

    # 4. Length: the crop, counted from stimulus onset, must fit
    start, stop, already = _crop_window(trial, xs.shape[1], sfreq, crop)

    # 5. The model's channels: recorded ones as they are, the others interpolated (MNE spherical splines)
    x = np.empty((len(model), xs.shape[1]), np.float32)
    for k, m in enumerate(model):
        if m in ch.direct:
            x[k] = xs[ch.direct[m]]
    if ch.interpolated:
        targets = tuple(ch.interpolated)
        weights = interpolation_weights(ch.positions, targets)
        x[[model.index(m) for m in targets]] = weights @ xs

    # 6. Filter on the whole trial, then crop, then standardize
    x = bandpass(x, sfreq, l_freq, h_freq)
    n_crop = crop[1] - crop[0]
    if already:
        info["cropped"] = f"already {n_crop} samples: taken as samples {crop[0]}-{crop[1]} after onset, not cropped"
    x = standardize(x[:, start:stop])
    info["channels"] = {"mapped": list(ch.direct), "interpolated": ch.interpolated, "dropped": ch.dropped,
                        "scheme": ch.scheme, "n_used": ch.n_used}
    info["coverage"] = (f"{len(ch.direct)} of {len(model)} model channels recorded, {len(ch.interpolated)} "
                        f"interpolated from {ch.n_used} channels ({ch.scheme})")
    info["preprocessed"] = True
    return EEGTrial(data=x.astype(np.float32), sfreq=float(sfreq), ch_names=list(model), subject=trial.subject,
                    label=trial.label, stimulus=trial.stimulus, info=info, tmin=crop[0] / sfreq)


def _check_preprocess_inputs(trial, ch_names, sfreq: float, min_channels: int | None,
                             crop: tuple[int, int]) -> tuple[str, ...]:
    """:func:`preprocess`'s argument and trial checks (only raises); returns the model's channel names."""
    validate_type("trial", trial, EEGTrial)
    check_range("sfreq", sfreq, 0, None, low_inclusive=False)
    check_range("min_channels", MIN_CHANNELS if min_channels is None else min_channels, 1)
    if not (len(crop) == 2 and crop[0] < crop[1]):
        raise ValueError(f"Invalid value for the 'crop' parameter: expected (start, stop) samples from stimulus onset "
                         f"with start < stop (start < 0: before onset), got {crop!r}.")
    model = tuple(model_ch_names() if ch_names is None else ch_names)
    data = np.asarray(trial.data)
    if data.ndim != 2:
        raise ValueError(f"Invalid EEG shape: expected 2 dimensions (n_chans, n_times), got {data.shape}.")
    if data.dtype.kind not in "iuf":
        raise ValueError(f"Invalid EEG data: expected numbers, got dtype {data.dtype}.")
    if data.shape[0] != len(trial.ch_names):
        raise ValueError(f"Invalid trial: {len(trial.ch_names)} channel names for {data.shape[0]} channels of data.")
    if not (np.isfinite(trial.sfreq) and trial.sfreq > 0):
        raise ValueError(f"Invalid sampling rate: expected a positive number of Hz, got {trial.sfreq!r}.")
    check_trial_limits(trial)  # before any costly step
    return model


@dataclass
class _Channels:
    """The file's channels as :func:`preprocess` uses them (see :func:`_select_channels`)."""

    data: np.ndarray  # (n_used, n_times) float32: the placed channels with signal
    positions: np.ndarray | None  # (n_used, 3): their positions, the splines' sources (when interpolating)
    direct: dict[str, int]  # model channel -> row of ``data`` recorded under its name
    interpolated: dict[str, str]  # model channel -> "missing" | "flat"
    dropped: list[str]  # file channels not used
    scheme: str  # how the channels were placed
    n_used: int


def _select_channels(trial, model: tuple[str, ...], min_channels: int) -> _Channels:
    """Place the file's channels (its positions, else its names in the scheme they follow); a model channel
    recorded under its own name is taken as it is, every other one is interpolated from all the placed
    channels. Memory: only the placed channels are copied, in float32, and the checks work row by row, so a
    long trial at a high rate costs about one copy of what is used."""
    data = np.asarray(trial.data)
    file_names = [str(n) for n in trial.ch_names]
    placement = place_channels(file_names, getattr(trial, "positions", None), model)
    rows, seen = [], set()
    for i in np.flatnonzero(placement.placed):  # the first of channels that share a name
        if norm_name(file_names[i]) not in seen:
            seen.add(norm_name(file_names[i]))
            rows.append(int(i))
    _check_coverage(len(rows), min_channels, model, file_names, placement.scheme, "could be placed")
    xs = np.empty((len(rows), data.shape[1]), np.float32)
    for j, i in enumerate(rows):
        xs[j] = data[i]
    n_bad = np.array([int((~np.isfinite(row)).sum()) for row in xs], dtype=np.int64)
    if n_bad.any():
        bad_rows = [file_names[rows[j]] for j in np.flatnonzero(n_bad)]
        raise ValueError(f"The EEG contains {int(n_bad.sum())} NaN or infinite values in {len(bad_rows)} channels "
                         f"({_names(bad_rows, 5)}); expected finite numbers. Repair or drop those channels first.")
    std = np.array([row.std(dtype=np.float64) for row in xs])
    if len(std) and std.max() < FLAT_STD:
        raise ValueError(f"The EEG is flat: all {len(std)} EEG channels in the file are constant; expected a "
                         f"recording (e.g. tens of microvolts).")
    flat = std < max(FLAT_STD, FLAT_REL * float(np.median(std)))
    good = [j for j in range(len(rows)) if not flat[j]]
    _check_coverage(len(good), min_channels, model, file_names, placement.scheme, "carry signal (others are flat)")
    row_of = {rows[j]: k for k, j in enumerate(good)}  # file row -> row of the good channels
    direct = {m: row_of[i] for m, i in placement.same_as_model.items() if m in model and i in row_of}
    flat_names = {file_names[rows[j]] for j in range(len(rows)) if flat[j]}
    interpolated = {m: ("flat" if m in placement.same_as_model and file_names[placement.same_as_model[m]]
                        in flat_names else "missing") for m in model if m not in direct}
    used = {rows[j] for j in good} if interpolated else {rows[good[k]] for k in direct.values()}
    dropped = [n for i, n in enumerate(file_names) if i not in used]
    return _Channels(data=xs[good] if len(good) < len(rows) else xs,
                     positions=placement.positions[[rows[j] for j in good]] if interpolated else None,
                     direct=direct, interpolated=interpolated, dropped=dropped, scheme=placement.scheme,
                     n_used=len(good))


def _crop_window(trial, n_times: int, sfreq: float, crop: tuple[int, int]) -> tuple[int, int, bool]:
    """The samples ``(start, stop)`` of the crop in a trial of ``n_times`` samples at ``sfreq``, counted from
    stimulus onset (``trial.tmin`` before the first sample), and whether the trial is taken as already
    cropped (it starts at onset and is exactly the crop's length). Raises when the crop does not fit."""
    n_crop = crop[1] - crop[0]
    tmin = float(getattr(trial, "tmin", 0.0))
    onset = int(round(-tmin * sfreq))
    already = tmin == 0 and n_times == n_crop
    start, stop = (0, n_crop) if already else (onset + crop[0], onset + crop[1])
    starts = f" (it starts {tmin * 1000:+.0f} ms from onset)" if tmin else ""
    if start < 0:
        raise ValueError(f"The trial starts too late: its first sample is {tmin * 1000:.0f} ms after stimulus onset; "
                         f"expected data from {crop[0] / sfreq * 1000:.0f} ms after onset (samples {crop[0]}-{crop[1]} "
                         f"after onset are used).")
    if stop > n_times:
        raise ValueError(f"The trial is too short: {trial.n_times} samples at {trial.sfreq:g} Hz "
                         f"({trial.duration * 1000:.0f} ms{starts}); expected at least {crop[1] / sfreq * 1000:.0f} ms "
                         f"from stimulus onset (samples {crop[0]}-{crop[1]} are used), or exactly {n_crop} samples "
                         f"at {sfreq:g} Hz if already cropped.")
    return start, stop, already
