"""The trial on screen, from its three sources, as read and in the model's space. No Gradio here.

- ``"example"``: a name from ``examples/index.json`` (or any ``examples/*.npz`` when there is no index);
- ``"upload"``: one trial file, with its companions (BrainVision ``.vhdr`` + ``.eeg`` + ``.vmrk``,
  EEGLAB ``.set`` + ``.fdt``) uploaded together; for a continuous recording with events, the ``event`` to
  cut the trial at and its ``occurrence`` (1-based), or the ``average`` of all its occurrences; for an
  epochs file, the epoch (of ``event`` when one is given);
- ``"simulate"``: class, stimulus number, subject and noise preset, run through the EEG simulator.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from neuroimagen._check import check_option
from neuroimagen.data import EEGTrial, preprocess, read_events, read_trial
from neuroimagen.data.classes import CLASS_NAMES, CLASSES
from neuroimagen.data.montage import SFREQ, model_ch_names
from neuroimagen.data.stimuli import numbered_stimulus

from .examples import format_examples, load_examples
from .settings import (
    EXAMPLES_DIR,
    IMAGES_PER_CLASS,
    MAX_OCCURRENCES,
    N_SUBJECTS,
    NOISE_PRESETS,
    SOURCES,
    STIMULI_DIR,
    TRIAL_EXTENSIONS,
    UPLOAD_EXTENSIONS,
)


@dataclass
class LoadedTrial:
    name: str
    raw: Any  # neuroimagen.data.EEGTrial as read
    model: Any  # the same after preprocess(): model channels, rate and crop
    stimulus: PIL.Image.Image | None = None

    @property
    def label(self) -> int | None:
        for t in (self.model, self.raw):
            if getattr(t, "label", None) is not None:
                return int(t.label)
        return None


def as_list(files) -> list:
    """An upload widget's value as a list (``None``: nothing uploaded)."""
    if files is None:
        return []
    return list(files) if isinstance(files, list | tuple) else [files]


def int_in(name: str, value, low: int, high: int) -> int:
    """``value`` as an integer in [``low``, ``high``], else ``TypeError`` / ``ValueError`` naming ``name``."""
    try:
        ivalue = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r} instead.") from None
    if ivalue != value or not low <= ivalue <= high:
        raise ValueError(f"Invalid value for the {name!r} parameter: expected an integer in [{low}, {high}], "
                         f"got {value!r}.")
    return ivalue


def class_index(name: str) -> int:
    if name not in CLASS_NAMES:
        raise ValueError(f"Invalid value for the 'sim_class' parameter: expected one of the 40 class names "
                         f"(e.g. {CLASS_NAMES[8]!r}), but got {name!r} instead.")
    return CLASS_NAMES.index(name)


def stimulus_image(class_index: int, number: int, stimuli_dir: Path = STIMULI_DIR) -> PIL.Image.Image:
    """Stimulus ``number`` (1-based, as in ``{synset}_{number:04d}.png``) of a class: read from the stimulus
    folder when it was rendered, else drawn as the stimulus set draws it (``numbered_stimulus``), at 64 x 64."""
    path = Path(stimuli_dir) / f"{CLASSES[class_index].synset}_{number:04d}.png"
    if path.is_file():
        return PIL.Image.open(path).convert("RGB")
    return numbered_stimulus(class_index, number, size=64)[0]


def upload_paths(files) -> tuple[Path, list[Path]]:
    """(the trial file, its companions) of an upload, checked: one trial file, known extensions, no two files
    of one name."""
    paths = [Path(f if isinstance(f, str | Path) else getattr(f, "name", f)) for f in as_list(files)]
    if not paths:
        raise ValueError(f"No file uploaded: expected one EEG trial file ({', '.join(TRIAL_EXTENSIONS)}).")
    unknown = [p.name for p in paths if p.suffix.lower() not in UPLOAD_EXTENSIONS]
    if unknown:
        raise ValueError(f"Unsupported file type: {', '.join(unknown)}. Expected one trial file "
                         f"({', '.join(TRIAL_EXTENSIONS)}), with its .eeg and .vmrk for BrainVision "
                         f"(.vhdr) or its .fdt for EEGLAB (.set).")
    mains = [p for p in paths if p.suffix.lower() in TRIAL_EXTENSIONS]
    if len(mains) != 1:
        what = "none" if not mains else ", ".join(p.name for p in mains)
        raise ValueError(f"Upload exactly one trial file ({', '.join(TRIAL_EXTENSIONS)}) with its companion "
                         f"files, but got {what}.")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"Got several files with the same name: {', '.join(sorted(names))}.")
    return mains[0], [p for p in paths if p != mains[0]]


def window_name(raw, event: str | None, occurrence: int, average: bool) -> str:
    """How a trial was cut from its file, for its name: ``", 'stimulus' 2"``, ``", average of 5 'stimulus'"``,
    ``", epoch 3"``; ``""`` for a file that is one trial."""
    n = (raw.info or {}).get("n_averaged")
    if n is None:
        return ""
    if average:
        return f", average of {n} {event!r}" if event else f", average of {n} epochs"
    return f", {event!r} {occurrence}" if event else f", epoch {occurrence}"


def trial_key(source: str, example: str | None, files, sim_class: str, sim_image, sim_subject, sim_noise: str,
              event: str | None = None, occurrence: int = 1, average: bool = False) -> str:
    """Which trial the widgets describe, without reading it (uploads by their stored paths: Gradio stores
    each upload in a folder named by its content's hash, so another file of the same name differs)."""
    if source == "example":
        return f"example:{Path(str(example)).stem if example else ''}"
    if source == "upload":
        window = f"{event or ''}:{'average' if average else occurrence}"
        return "upload:" + "|".join(sorted(str(getattr(f, "name", f)) for f in as_list(files))) + f":{window}"
    return f"simulate:{sim_class}:{sim_image}:{sim_subject}:{sim_noise}"


class Trials:
    """Reads the trial the widgets describe: the shipped examples, uploads and the simulator (recent example
    and simulated trials are kept: ~0.5 MB each), each brought into the model's space: ``space``, the pipeline's
    ``eeg_preprocess_kwargs`` (default: the 128 actiCAP channels at 1 kHz)."""

    def __init__(self, examples_dir: str | Path | None = None, stimuli_dir: str | Path | None = None,
                 space: dict | None = None):
        self.space = dict(space or {})  # preprocess() arguments: the model's channels, rate and window
        self.examples_dir = Path(EXAMPLES_DIR if examples_dir is None else examples_dir)
        self.stimuli_dir = Path(STIMULI_DIR if stimuli_dir is None else stimuli_dir)
        self.examples = {e.name: e for e in load_examples(self.examples_dir)} if self.examples_dir.is_dir() else {}
        self.gallery = [e for e in self.examples.values() if e.stimulus is not None]  # shown by their stimulus
        self.format_examples = format_examples(self.examples_dir)
        self._example_trial = functools.lru_cache(maxsize=32)(self._read_example)
        self._simulated_trial = functools.lru_cache(maxsize=32)(self._simulate)
        self._simulator = functools.lru_cache(maxsize=len(NOISE_PRESETS))(self._make_simulator)

    def __call__(self, source: str, example: str | None, files, sim_class: str, sim_image, sim_subject,
                 sim_noise: str, event: str | None = None, occurrence: int = 1, average: bool = False) -> LoadedTrial:
        """The trial the widgets describe."""
        check_option("source", source, SOURCES)
        if source == "example":
            return self.example(example)
        if source == "upload":
            return self.upload(files, event, occurrence, average)
        return self.simulated(sim_class, sim_image, sim_subject, sim_noise)

    # ---- examples
    def _read_example(self, name: str) -> LoadedTrial:
        ex = self.examples[name]
        raw = read_trial(ex.file)
        stim = PIL.Image.open(ex.stimulus).convert("RGB") if ex.stimulus is not None else None
        return LoadedTrial(name=f"example {name}", raw=raw, model=preprocess(raw, **self.space), stimulus=stim)

    def example(self, name: str) -> LoadedTrial:
        if not name:
            raise ValueError("No example chosen: pick one of the example trials first.")
        key = Path(str(name)).stem  # accept "x" and "x.npz"
        if key not in self.examples:
            choices = ", ".join(repr(n) for n in list(self.examples)[:5]) or "none are installed"
            raise ValueError(f"Unknown example {name!r}: expected one of the shipped example names "
                             f"({choices}{', ...' if len(self.examples) > 5 else ''}).")
        return self._example_trial(key)

    # ---- uploads
    def upload(self, files, event: str | None = None, occurrence: int = 1, average: bool = False) -> LoadedTrial:
        """Read one uploaded trial; companions (``.eeg``/``.vmrk``/``.fdt``) are matched by file name.

        A continuous recording with events is cut at ``event`` (occurrence ``occurrence``, 1-based, or the
        ``average`` of all); the library refuses one without ``event``, listing its events.
        """
        main, companions = upload_paths(files)
        event = str(event) if event else None
        index = int_in("occurrence", occurrence, 1, MAX_OCCURRENCES) - 1
        # Only the uploaded files are read: the library checks the header's references against them
        # (neuroimagen.data.companions), wherever Gradio stored each one.
        raw = read_trial(main, companions=companions, event=event, index=index, average=bool(average))
        known = self.known_upload(main)
        if known is not None and raw.label is None:  # a shipped example file: its class is known
            raw.label = int(known["label"])
        stimulus = self.known_stimulus(getattr(raw, "stimulus", None), known)
        return LoadedTrial(name=f"upload {main.name}{window_name(raw, event, index + 1, average)}", raw=raw,
                           model=preprocess(raw, **self.space), stimulus=stimulus)

    def upload_events(self, files) -> dict[str, np.ndarray]:
        """The events of the uploaded recording (``read_events``): description -> onsets in seconds."""
        main, companions = upload_paths(files)
        return read_events(main, companions=companions)

    def known_upload(self, main: Path) -> dict | None:
        """The ``formats/index.json`` entry of a shipped example file, recognised by its content (SHA-256)."""
        if not self.format_examples:
            return None
        digest = hashlib.sha256(Path(main).read_bytes()).hexdigest()
        return next((e for e in self.format_examples.values() if e.get("sha256") == digest), None)

    def known_stimulus(self, stimulus, known: dict | None = None) -> PIL.Image.Image | None:
        """The seen image of an uploaded trial: carried in the file, named by a shipped example file's index
        entry, or found by name in the examples or the stimulus folder."""
        if isinstance(stimulus, np.ndarray) and stimulus.ndim == 3 and stimulus.shape[-1] == 3:
            return PIL.Image.fromarray(np.clip(stimulus, 0, 255).astype(np.uint8))
        if known is not None and known.get("stimulus"):
            path = self.examples_dir / "formats" / known["stimulus"]
            if path.is_file():
                return PIL.Image.open(path).convert("RGB")
        if not isinstance(stimulus, str) or not re.fullmatch(r"[\w.-]+", stimulus):
            return None
        for ex in self.examples.values():
            if ex.stimulus is not None and ex.stimulus.stem == stimulus:
                return PIL.Image.open(ex.stimulus).convert("RGB")
        path = self.stimuli_dir / f"{stimulus}.png"
        return PIL.Image.open(path).convert("RGB") if path.is_file() else None

    # ---- the simulator
    def _make_simulator(self, preset: str):
        from neuroimagen.data.simulate import EEGSimulator

        return EEGSimulator(preset, n_subjects=N_SUBJECTS, seed=0)

    def _simulate(self, class_index: int, number: int, subject: int, preset: str) -> LoadedTrial:
        image = stimulus_image(class_index, number, self.stimuli_dir)
        rng = np.random.default_rng([class_index, number, subject, NOISE_PRESETS.index(preset)])
        pixels = np.asarray(image)
        volts = self._simulator(preset).simulate(pixels[None], [class_index], [subject], rng, raw=True)[0]
        raw = EEGTrial(data=volts, sfreq=SFREQ, ch_names=list(model_ch_names()), subject=subject, label=class_index,
                       stimulus=pixels)
        return LoadedTrial(name=f"simulated {CLASS_NAMES[class_index]} #{number}, subject {subject}, {preset} noise",
                           raw=raw, model=preprocess(raw, **self.space), stimulus=image)

    def simulated(self, sim_class: str, sim_image, sim_subject, sim_noise: str) -> LoadedTrial:
        check_option("sim_noise", sim_noise, NOISE_PRESETS)
        return self._simulated_trial(class_index(sim_class), int_in("sim_image", sim_image, 1, IMAGES_PER_CLASS),
                                     int_in("sim_subject", sim_subject, 1, N_SUBJECTS), sim_noise)
