"""The model montage: 128 actiCAP channels, as recorded in EEG-ImageNet.

MNE's ``brainproducts-RNP-BA-128`` montage lists 130 positions: the 128 recording electrodes, then
FCz (the online reference) and Fpz (ground). Models use the 128 recording channels in this order.
"""

from __future__ import annotations

from functools import lru_cache

MONTAGE_NAME = "brainproducts-RNP-BA-128"
SFREQ = 1000.0  # Hz, EEG-ImageNet's rate
CROP = (20, 460)  # samples kept after stimulus onset, as the reference loaders do
N_TIMES = CROP[1] - CROP[0]


@lru_cache(maxsize=1)
def get_montage():
    """The ``mne.channels.DigMontage`` of the model's 128 channels (plus FCz and Fpz positions)."""
    import mne

    return mne.channels.make_standard_montage(MONTAGE_NAME)


@lru_cache(maxsize=1)
def model_ch_names() -> tuple[str, ...]:
    """The 128 channel names the models expect, in order."""
    names = [n for n in get_montage().ch_names if n not in ("FCz", "Fpz")]
    assert len(names) == 128, "MNE's actiCAP 128 montage changed"  # internal invariant, not user input
    return tuple(names)


def make_info(ch_names: tuple[str, ...] | list[str] | None = None, sfreq: float = SFREQ):
    """An ``mne.Info`` for EEG channels ``ch_names`` (default: the model's) with montage positions set."""
    import mne

    ch_names = list(model_ch_names() if ch_names is None else ch_names)
    info = mne.create_info(ch_names, sfreq, ch_types="eeg")
    info.set_montage(get_montage(), on_missing="ignore")
    return info
