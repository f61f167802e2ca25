"""EEG caps as ``mne.Info``: the model's actiCAP 128 and the standard caps issue 20 measures.

Each cap has its own electrode positions (an MNE template montage) and its own channel names, so a
simulation "on" a cap (``EEGSimulator(montage=...)``) looks like a recording made with it::

    from neuroimagen.data.caps import standard_caps, cap_info
    for name, info in standard_caps():       # "actiCAP 128", "10-10 64", "BioSemi 64", ...
        ...
    cap_info("biosemi32")                     # any MNE built-in montage name
    cap_info("colin27_1020", ["O1", "Oz", "O2"])  # a subset of one

BioSemi caps carry BioSemi's native names (A1..A32, B1..B32, ...: banks of 32 in the order of MNE's
``biosemiN`` montage, which is BioSemi's numbering), not the 10-10 labels MNE gives them, as a BioSemi
``.bdf`` does: BioSemi's "F3" is an electrode of bank F, not the 10-20 F3.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from string import ascii_uppercase

import numpy as np

from .._check import check_option, validate_type
from .montage import SFREQ, make_info

# The 64-channel 10-10 layout (the labels of the common 64-channel caps: BioSemi, actiCAP 64, easycap).
TEN_TEN_64 = ("Fp1", "AF7", "AF3", "F1", "F3", "F5", "F7", "FT7", "FC5", "FC3", "FC1", "C1", "C3", "C5", "T7", "TP7",
              "CP5", "CP3", "CP1", "P1", "P3", "P5", "P7", "P9", "PO7", "PO3", "O1", "Iz", "Oz", "POz", "Pz", "CPz",
              "Fpz", "Fp2", "AF8", "AF4", "AFz", "Fz", "F2", "F4", "F6", "F8", "FT8", "FC6", "FC4", "FC2", "FCz", "Cz",
              "C2", "C4", "C6", "T8", "TP8", "CP6", "CP4", "CP2", "P2", "P4", "P6", "P8", "P10", "PO8", "PO4", "O2")
# The 32-channel actiCAP / easycap layout of BrainVision recordings (reference FCz, ground AFz).
TEN_TWENTY_32 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz", "C4", "T8",
                 "TP9", "CP5", "CP1", "CP2", "CP6", "TP10", "P7", "P3", "Pz", "P4", "P8", "PO9", "O1", "Oz", "O2", "PO10")
# The 19 electrodes of the international 10-20 system (T7/T8/P7/P8 for the older T3/T4/T5/T6).
TEN_TWENTY_19 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8",
                 "O1", "O2")
OCCIPITO_PARIETAL_8 = ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8")

# Where the labelled caps' electrodes sit: EasyCap's M1 (10-10 / 10-05) layout, on the same idealised head
# as the actiCAP 128 and BioSemi templates (same-label electrodes within 3 mm on average, 8 mm at most).
# MNE's colin27 / fsaverage 10-05 templates are MRI heads whose positions sit 15-22 mm from those.
LABELLED_CAP_MONTAGE = "easycap-M1"

STANDARD_CAPS = ("actiCAP 128", "10-10 64", "BioSemi 64", "10-20 32", "10-20 19", "occipito-parietal 8")


def biosemi_names(n_chans: int) -> list[str]:
    """BioSemi's native channel names for an ``n_chans`` cap: A1..A32, B1..B32, ... (banks of 32)."""
    if n_chans < 32:  # the 16-channel cap is one half bank
        return [f"A{k}" for k in range(1, n_chans + 1)]
    return [f"{ascii_uppercase[k // 32]}{k % 32 + 1}" for k in range(n_chans)]


def cap_info(montage, ch_names: Sequence[str] | None = None, sfreq: float = SFREQ):
    """An ``mne.Info`` of EEG channels with positions: a cap to simulate or to read with.

    Parameters
    ----------
    montage : str | mne.Info | mne.channels.DigMontage
        One of :data:`STANDARD_CAPS`, an MNE built-in montage name (``"biosemi64"``, ``"easycap-M1"``,
        ``"colin27_1020"``, ...; ``"standard_1005"`` / ``"standard_1020"`` are read as MNE's current
        name for them, without its deprecation warning), a montage, or an ``Info`` with positions.
        ``"biosemi*"`` montages get BioSemi's native names (:func:`biosemi_names`).
    ch_names : sequence of str | None
        Keep only these channels, in this order (default: all the montage's EEG channels).
    sfreq : float
        The Info's sampling rate.

    Returns
    -------
    info : mne.Info
        EEG channels only, positions in head coordinates.
    """
    import mne

    validate_type("montage", montage, (str, mne.Info, mne.channels.DigMontage), "str, mne.Info or DigMontage")
    if isinstance(montage, str):
        if montage in STANDARD_CAPS:
            if ch_names is None:
                return _standard_cap(montage, sfreq)
            return cap_info(_standard_cap(montage, sfreq), ch_names, sfreq)
        builtin = mne.channels.get_builtin_montages()
        name = montage
        if name in ("standard_1005", "standard_1020") and f"colin27_{name[-4:]}" in builtin:
            name = f"colin27_{name[-4:]}"  # MNE 1.13 renamed them (the old names warn, and go in 1.14)
        check_option("montage", name, list(STANDARD_CAPS) + builtin)
        montage = mne.channels.make_standard_montage(name)
        if name.startswith("biosemi"):
            montage.rename_channels(dict(zip(montage.ch_names, biosemi_names(len(montage.ch_names)))))
    elif isinstance(montage, mne.Info):
        eeg = mne.pick_types(montage, eeg=True, exclude=())
        if len(eeg) == 0:
            raise ValueError("The Info given as montage has no EEG channels.")
        info = mne.pick_info(montage, eeg)
        montage = info.get_montage()
        ch_pos = {} if montage is None else montage.get_positions()["ch_pos"]
        wanted = info.ch_names if ch_names is None else [n for n in ch_names if n in info.ch_names]
        missing = [n for n in wanted if not np.isfinite(ch_pos.get(n, np.nan)).all()]
        if missing:
            raise ValueError(f"{len(missing)} EEG channels of the Info given as montage have no position "
                             f"({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}): a forward model "
                             f"needs every electrode's position (set one with info.set_montage).")
    names = list(montage.ch_names) if ch_names is None else list(ch_names)
    unknown = [n for n in names if n not in montage.ch_names]
    if unknown:
        raise ValueError(f"Channels {unknown} are not in the montage (it has {len(montage.ch_names)}: "
                         f"{', '.join(montage.ch_names[:6])} ...).")
    if len(set(names)) != len(names):
        raise ValueError(f"ch_names has duplicates: {sorted({n for n in names if names.count(n) > 1})}.")
    info = mne.create_info(names, sfreq, ch_types="eeg")
    info.set_montage(montage, on_missing="raise")
    return info


@cache
def _standard_cap_cached(name: str, sfreq: float):
    if name == "actiCAP 128":
        return make_info(sfreq=sfreq)
    if name == "BioSemi 64":
        return cap_info("biosemi64", sfreq=sfreq)
    names = {"10-10 64": TEN_TEN_64, "10-20 32": TEN_TWENTY_32, "10-20 19": TEN_TWENTY_19,
             "occipito-parietal 8": OCCIPITO_PARIETAL_8}[name]
    return cap_info(LABELLED_CAP_MONTAGE, names, sfreq=sfreq)


def _standard_cap(name: str, sfreq: float = SFREQ):
    return _standard_cap_cached(name, float(sfreq)).copy()  # an Info is mutable: callers get their own


def standard_caps(sfreq: float = SFREQ) -> list[tuple[str, object]]:
    """The caps issue 20 measures, each as ``(name, mne.Info)``, largest first (see :data:`STANDARD_CAPS`).

    ``"actiCAP 128"`` is the model's montage; ``"10-10 64"``, ``"10-20 32"`` (the BrainVision actiCAP 32
    layout), ``"10-20 19"`` and ``"occipito-parietal 8"`` are those labels at EasyCap M1 positions
    (:data:`LABELLED_CAP_MONTAGE`); ``"BioSemi 64"`` is MNE's ``biosemi64`` with BioSemi's native names
    A1..B32.
    """
    return [(name, _standard_cap(name, sfreq)) for name in STANDARD_CAPS]
