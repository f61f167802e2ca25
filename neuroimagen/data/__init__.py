"""Data: stimuli, the EEG simulator, the EEG-ImageNet and THINGS-EEG2 formats, single-trial reading and preprocessing.

``from neuroimagen.data import read_trial, preprocess, load_eeg_imagenet, load_things_eeg2``. Importing this package is light
(numpy only); torch, scipy and MNE are imported by the functions that need them.
"""

from .errors import DataFileError
from .io import EEGTrial, TrialFileError, read_events, read_trial, write_trial
from .preprocessing import bandpass, preprocess, standardize
from .safe_pickle import load_pickled
from .things_eeg2 import ThingsEEG2Dataset, load_things_eeg2


def __getattr__(name: str):
    # The loader needs torch: import it only when asked for.
    if name in ("load_eeg_imagenet", "EEGImageNetDataset", "save_eeg_imagenet", "save_splits"):
        from . import eeg_imagenet

        return getattr(eeg_imagenet, name)
    raise AttributeError(f"module 'neuroimagen.data' has no attribute {name!r}")


__all__ = ["EEGTrial", "DataFileError", "TrialFileError", "read_events", "read_trial", "write_trial", "preprocess", "bandpass", "standardize",
           "load_eeg_imagenet", "EEGImageNetDataset", "save_eeg_imagenet", "save_splits", "load_things_eeg2", "ThingsEEG2Dataset",
           "load_pickled"]
