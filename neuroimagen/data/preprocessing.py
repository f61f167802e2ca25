"""Signal steps shared by every path into the model space (docs/CONTRACTS.md).

``bandpass`` and ``standardize`` are used by the simulator (to write files like the published
``eeg_5_95_std.pth``), by the training datasets and by :func:`preprocess` for uploaded trials, so the
three land in the same space.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .montage import CROP  # samples after stimulus onset the models see

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


def _norm_name(name: str) -> str:
    """'EEG Fp1', 'fp1-Ref', ' FP1 ' -> 'fp1' (how other tools decorate the same electrode)."""
    n = str(name).strip().lower()
    for prefix in ("eeg ", "eeg-", "eeg_", "eeg"):
        if n.startswith(prefix) and len(n) > len(prefix):
            n = n[len(prefix):].strip()
            break
    for suffix in ("-ref", "-avg", "-a1", "-a2", "-m1", "-m2", "-fcz"):
        n = n.removesuffix(suffix)
    return n


def _match_channels(file_names: list[str], model_names: tuple[str, ...]) -> dict[str, int]:
    """Model channel name -> row in the file, matched case-insensitively (the first of duplicates wins)."""
    rows: dict[str, int] = {}
    for i, n in enumerate(file_names):
        rows.setdefault(_norm_name(n), i)
    return {m: rows[_norm_name(m)] for m in model_names if _norm_name(m) in rows}


def _names(names, k: int = 4) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:k]) + (", ..." if len(names) > k else "")


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
    from .montage import SFREQ

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
               max_interpolated: int = 16):
    """Bring a trial into the models' space (docs/CONTRACTS.md).

    Maps channels by name to the model montage (case-insensitive; ``'EEG Fp1'`` and ``'Fp1-Ref'`` match
    ``'Fp1'``), interpolates a few missing or flat ones with spherical splines (MNE
    ``interpolate_bads``), refuses when too few match, resamples to ``sfreq`` (from any rate in ``SFREQ_RANGE``),
    band-passes on the whole trial, crops samples ``crop`` after stimulus onset and standardizes
    (:func:`standardize`). A trial of exactly ``crop[1] - crop[0]`` samples (after resampling) is taken as
    already cropped. A trial on the model's channels at ``sfreq`` makes no MNE object (a few ms).

    Parameters
    ----------
    trial : EEGTrial
        From :func:`neuroimagen.data.read_trial`; data shape (n_chans, n_times), its first sample at
        ``trial.tmin`` seconds from stimulus onset (0: onset at sample 0; -0.2: an epoch with a baseline).
    ch_names : list of str | None
        The model's channels (default: the 128 actiCAP channels of ``brainproducts-RNP-BA-128``).
    sfreq : float
        The model's rate in Hz.
    l_freq, h_freq : float | None
        Band-pass edges in Hz (None: no high-pass / low-pass).
    crop : tuple of int
        Samples (at ``sfreq``) the models see, from stimulus onset.
    max_interpolated : int
        Most channels that may be missing or flat; more is refused.

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
    from .._check import check_range, validate_type
    from .io import EEGTrial
    from .montage import model_ch_names

    # 1. Check inputs
    validate_type("trial", trial, EEGTrial)
    check_range("sfreq", sfreq, 0, None, low_inclusive=False)
    check_range("max_interpolated", max_interpolated, 0)
    if not (len(crop) == 2 and 0 <= crop[0] < crop[1]):
        raise ValueError(f"Invalid value for the 'crop' parameter: expected (start, stop) samples with "
                         f"0 <= start < stop, got {crop!r}.")
    default_model = ch_names is None
    model = tuple(model_ch_names() if default_model else ch_names)
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

    # 2. Channels: map by name; missing ones are interpolated when few, else refused
    file_names = [str(n) for n in trial.ch_names]
    rows = _match_channels(file_names, model)
    missing = [m for m in model if m not in rows]
    if len(missing) > max_interpolated:
        found = [m for m in model if m in rows]
        expected = (f"the actiCAP 128 names of brainproducts-RNP-BA-128, e.g. {_names(model)}" if default_model
                    else f"names such as {_names(model)}")
        raise ValueError(
            f"Only {len(rows)} of the {len(model)} model channels were found in the file"
            f"{' (e.g. ' + _names(found, 3) + ')' if found else ''}; expected {expected}; the file has "
            f"{len(file_names)} channels ({_names(file_names)}). At most {max_interpolated} missing channels "
            f"can be interpolated.")
    matched = [m for m in model if m in rows]
    # Memory: only the model's channels are copied, in float32 (the file's other channels never are), and every
    # check below works row by row, so a long trial at a high rate costs about one copy of what is used.
    x = np.zeros((len(model), data.shape[1]), np.float32)
    k_matched = [k for k, m in enumerate(model) if m in rows]
    for k, m in zip(k_matched, matched):
        x[k] = data[rows[m]]
    n_bad = np.array([int((~np.isfinite(x[k])).sum()) for k in k_matched], dtype=np.int64)
    if n_bad.any():
        bad_rows = [matched[i] for i in np.flatnonzero(n_bad)]
        raise ValueError(f"The EEG contains {int(n_bad.sum())} NaN or infinite values in {len(bad_rows)} channels "
                         f"({_names(bad_rows, 5)}); expected finite numbers. Repair or drop those channels first.")
    std = np.array([x[k].std(dtype=np.float64) for k in k_matched])
    if len(std) and std.max() < FLAT_STD:
        raise ValueError(f"The EEG is flat: all {len(std)} model channels in the file are constant; expected a "
                         f"recording (e.g. tens of microvolts).")
    flat_k = [k_matched[i] for i in np.flatnonzero(std < max(FLAT_STD, FLAT_REL * float(np.median(std))))]
    interpolated = {m: "missing" for m in missing} | {model[k]: "flat" for k in flat_k}
    if len(interpolated) > max_interpolated:
        raise ValueError(f"{len(interpolated)} of the {len(model)} model channels are missing ({len(missing)}) or "
                         f"flat ({len(flat_k)}); at most {max_interpolated} can be interpolated. Flat: "
                         f"{_names([model[k] for k in flat_k]) or 'none'}; missing: {_names(missing) or 'none'}.")
    interpolated = {m: interpolated[m] for m in model if m in interpolated}  # montage order
    used = set(rows.values())
    dropped = [n for i, n in enumerate(file_names) if i not in used]

    # 3. Rate: resample (never refuse another rate)
    info = dict(trial.info)
    if abs(trial.sfreq - sfreq) > 1e-6 * sfreq:
        from fractions import Fraction

        from scipy.signal import resample_poly

        frac = Fraction(sfreq / trial.sfreq).limit_denominator(1000)
        x = resample_poly(x, frac.numerator, frac.denominator, axis=-1)
        info["resampled"] = f"{trial.sfreq:g} Hz -> {sfreq:g} Hz"

    # 4. Length: the crop, counted from stimulus onset (trial.tmin before the first sample), must fit,
    #    unless the trial starts at onset and is exactly the crop's length (already cropped)
    n_crop = crop[1] - crop[0]
    tmin = float(getattr(trial, "tmin", 0.0))
    onset = int(round(-tmin * sfreq))
    already = tmin == 0 and x.shape[1] == n_crop
    start, stop = (0, n_crop) if already else (onset + crop[0], onset + crop[1])
    starts = f" (it starts {tmin * 1000:+.0f} ms from onset)" if tmin else ""
    if start < 0:
        raise ValueError(f"The trial starts too late: its first sample is {tmin * 1000:.0f} ms after stimulus onset; "
                         f"expected data from {crop[0] / sfreq * 1000:.0f} ms after onset (samples {crop[0]}-{crop[1]} "
                         f"after onset are used).")
    if stop > x.shape[1]:
        raise ValueError(f"The trial is too short: {trial.n_times} samples at {trial.sfreq:g} Hz "
                         f"({trial.duration * 1000:.0f} ms{starts}); expected at least {crop[1] / sfreq * 1000:.0f} ms "
                         f"from stimulus onset (samples {crop[0]}-{crop[1]} are used), or exactly {n_crop} samples "
                         f"at {sfreq:g} Hz if already cropped.")

    # 5. Interpolate missing / flat channels from their neighbours (MNE spherical splines)
    if interpolated:
        x = _interpolate(x, model, sfreq, list(interpolated))

    # 6. Filter on the whole trial, then crop, then standardize
    x = bandpass(x, sfreq, l_freq, h_freq)
    if already:
        info["cropped"] = f"already {n_crop} samples: taken as samples {crop[0]}-{crop[1]} after onset, not cropped"
    x = standardize(x[:, start:stop])
    info["channels"] = {"mapped": [m for m in matched if m not in interpolated], "interpolated": interpolated,
                        "dropped": dropped}
    info["preprocessed"] = True
    return EEGTrial(data=x.astype(np.float32), sfreq=float(sfreq), ch_names=list(model), subject=trial.subject,
                    label=trial.label, stimulus=trial.stimulus, info=info, tmin=crop[0] / sfreq)


def _interpolate(x: np.ndarray, ch_names: tuple[str, ...], sfreq: float, bads: list[str]) -> np.ndarray:
    """Spherical-spline interpolation of ``bads`` from the other channels at their montage positions."""
    bad = [k for k, n in enumerate(ch_names) if n in bads]
    good = [k for k, n in enumerate(ch_names) if n not in bads]
    out = np.array(x, dtype=np.float64)
    out[bad] = _interpolation_matrix(tuple(ch_names), tuple(ch_names[k] for k in bad)) @ out[good]
    return out


@lru_cache(maxsize=64)
def _interpolation_matrix(ch_names: tuple[str, ...], bads: tuple[str, ...]) -> np.ndarray:
    """(n_bads, n_good) weights of MNE's ``interpolate_bads`` (spherical splines), which is linear in the data:
    applied once to an identity it gives them. Cached, because the pseudo-inverse inside costs 0.1-1.5 s on
    2 busy cores and uploads from one device miss the same channels."""
    import mne

    from .montage import make_info

    info = make_info(ch_names, 1000.0)  # positions only: the rate does not enter the weights
    no_pos = [ch["ch_name"] for ch in info["chs"] if not np.isfinite(ch["loc"][:3]).all() or not ch["loc"][:3].any()]
    if no_pos:
        raise ValueError(f"Cannot interpolate: channels {_names(no_pos)} have no position in the montage.")
    good = [k for k, n in enumerate(ch_names) if n not in bads]
    eye = np.zeros((len(ch_names), len(good)))
    eye[good, np.arange(len(good))] = 1.0
    raw = mne.io.RawArray(eye, info, verbose="error")
    raw.info["bads"] = list(bads)
    raw.interpolate_bads(reset_bads=True, verbose="error")
    weights = raw.get_data()[[ch_names.index(b) for b in bads]]
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights
