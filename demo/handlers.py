"""Event handlers: widget values in, one library call, display values out.

Every handler turns the library's ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` into
``gr.Error(message)`` so the user reads the library's own explanation and the app keeps serving.
A user's mistake writes one line to the server log (logger ``demo``); anything else is a bug and keeps its
traceback. Trials come from three sources, all reachable through the API with plain values:

- ``"example"``: a name from ``examples/index.json`` (or any ``examples/*.npz`` when there is no index);
- ``"upload"``: one trial file, with its companions (BrainVision ``.vhdr`` + ``.eeg`` + ``.vmrk``,
  EEGLAB ``.set`` + ``.fdt``) uploaded together; for a continuous recording with events, the ``event`` to
  cut the trial at and its ``occurrence`` (1-based), or the ``average`` of all its occurrences; for an
  epochs file, the epoch (of ``event`` when one is given);
- ``"simulate"``: class, stimulus number, subject and noise preset, run through the EEG simulator.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch

from neuroimagen.data.classes import CLASS_NAMES, CLASSES
from neuroimagen.data.io import READERS
from neuroimagen.data.montage import CROP, SFREQ
from neuroimagen.data.simulate import PRESETS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
STIMULI_DIR = ROOT / "data" / "stimuli"
# Top-1 of the class decoded from trials simulated on each standard cap (scripts/cap_accuracy.py, demo preset):
# an upload's expected accuracy is read from it by its channel count.
CAP_METRICS = ROOT / "reports" / "caps" / "demo" / "metrics.json"

SOURCES = ("example", "upload", "simulate")
TRIAL_EXTENSIONS = tuple(READERS)  # .npz .npy .pth .fif .edf .bdf .set .vhdr
COMPANION_EXTENSIONS = (".eeg", ".vmrk", ".fdt")  # BrainVision data + markers, EEGLAB data
UPLOAD_EXTENSIONS = TRIAL_EXTENSIONS + COMPANION_EXTENSIONS
NOISE_PRESETS = tuple(PRESETS)  # "demo", "realistic"
N_SUBJECTS = 6
IMAGES_PER_CLASS = 50
MAX_SEED = 2**31 - 1
TMIN = CROP[0] / SFREQ  # the model input starts 20 ms after stimulus onset
DEFAULT_LATENCY_MS = 170  # the N1 / N170 of visual evoked potentials
MAX_OCCURRENCES = 100_000  # the occurrence slider's bound for API calls (the page sets it to the event's count)
EPOCHS_SUFFIXES = ("-epo.fif", "_epo.fif")  # MNE's names for epochs files (read_trial reads them as epochs)
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
logger = logging.getLogger("demo")

# Upload limits (docs/RELIABILITY.md). A trial is ~0.5 s of 128 channels (~0.25-0.5 MB); these bound what one
# request can cost in memory and CPU before the model runs: Gradio refuses bigger files while they stream in
# (ui.py passes MAX_UPLOAD_BYTES as ``max_file_size``), and ``preprocess`` refuses, before any resampling,
# filtering or interpolation, trials over the library's limits (neuroimagen.data.preprocessing.check_trial_limits).
MAX_UPLOAD_BYTES = 10 * 2**20  # per file; the library's own limit (io.MAX_FILE_BYTES) is 100 MB


def refuse(message: str, title: str = "Invalid input", event: str = "request") -> gr.Error:
    """A ``gr.Error`` for a user's mistake: the user reads ``message``; the server log gets one line, no traceback.

    Gradio prints the traceback of every exception an event raises unless it is a ``gr.Error`` with
    ``print_exception=False`` (``queueing.py``); a bad upload is not a bug of the app.
    """
    logger.info("%s refused (%s): %s", event, title, " ".join(str(message).split()))
    return gr.Error(message, title=title, print_exception=False)


def user_errors(fn):
    """Show the library's own message for bad input (``gr.Error``) instead of a generic failure."""

    @functools.wraps(fn)  # keeps the signature: Gradio reads parameter names and gr.Progress from it
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            if err.print_exception:  # raised by our own code or Gradio's: still the user's mistake
                raise refuse(err.message, err.title, fn.__name__) from err
            raise
        except USER_ERRORS as err:
            title = "File not found" if isinstance(err, FileNotFoundError) else "Invalid input"
            raise refuse(str(err), title, fn.__name__) from err

    return wrapper


class SelectedTabs:
    """Which tab ("example", "upload", "simulate") each browser session has selected, as its ``tab.select``
    reported it: the trial loads of the other tabs that end later change nothing on that page.

    Without it the last load to *finish* would be shown, not the last one asked for: loads run two at a time
    (``default_concurrency_limit``) and wait in a queue, and Gradio 6.31 even selects the first tab when a page
    opens (a second load beside ``demo.load``), so an example could replace "No trial uploaded" after the user
    chose Upload, and Reconstruct then ran the example. API sessions select no tab and are never stale.
    Bounded (the oldest sessions are forgotten first) and emptied as pages close (``demo.unload``).
    """

    def __init__(self, max_sessions: int = 4096):
        self._tabs: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    @staticmethod
    def _session(request) -> str | None:
        return getattr(request, "session_hash", None) if request is not None else None

    def select(self, request, source: str) -> None:
        session = self._session(request)
        if session is None:
            return
        with self._lock:
            self._tabs[session] = source
            self._tabs.move_to_end(session)
            while len(self._tabs) > self.max_sessions:
                self._tabs.popitem(last=False)

    def stale(self, request, source: str) -> bool:
        """Whether the session of ``request`` has selected a tab other than ``source``."""
        session = self._session(request)
        with self._lock:
            selected = self._tabs.get(session) if session is not None else None
        return selected is not None and selected != source

    def forget(self, request) -> None:
        session = self._session(request)
        with self._lock:
            self._tabs.pop(session, None)


def figure_to_image(fig, dpi: int = 100) -> PIL.Image.Image:
    """Render a matplotlib Figure to an RGB image and free the figure (no pyplot, no temp file)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    finally:
        fig.clear()
    buf.seek(0)
    img = PIL.Image.open(buf)
    img.load()
    return img.convert("RGB")


# --------------------------------------------------------------------------------------------------
# Example trials
@dataclass(frozen=True)
class Example:
    """One shipped trial: ``file`` relative to the examples folder; ``stimulus`` a PNG path or None."""

    name: str
    file: Path
    label: int | None = None
    class_name: str | None = None
    subject: int | None = None
    stimulus: Path | None = None

    @property
    def caption(self) -> str:
        """The gallery caption: the class (the trial's name and subject show when it is picked)."""
        return self.class_name or "unknown class"


def load_examples(examples_dir: str | Path | None = None) -> list[Example]:
    """The shipped example trials, from ``index.json`` or, without one, from the ``*.npz`` files.

    ``index.json`` is a list (or ``{"examples": [...]}``) of ``{file, label, class_name, subject, stimulus}``.
    """
    root = Path(EXAMPLES_DIR if examples_dir is None else examples_dir)
    index = root / "index.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        entries = entries.get("examples", []) if isinstance(entries, dict) else entries
    else:
        entries = [_npz_entry(p) for p in sorted(root.glob("*.npz"))]
    examples = []
    for e in entries:
        file = root / e["file"]
        stim = root / e["stimulus"] if e.get("stimulus") else None
        label = e.get("label")
        examples.append(Example(
            name=Path(e["file"]).stem, file=file, label=None if label is None else int(label),
            class_name=e.get("class_name") or (CLASS_NAMES[int(label)] if label is not None else None),
            subject=e.get("subject"), stimulus=stim if stim is not None and stim.is_file() else None))
    return examples


def _npz_entry(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        label = int(z["label"]) if "label" in z and np.asarray(z["label"]).ndim == 0 else None
        subject = int(z["subject"]) if "subject" in z and np.asarray(z["subject"]).ndim == 0 else None
    return {"file": path.name, "label": label, "subject": subject}


# What each upload format is called, and the companion files it is uploaded with.
FORMATS = {
    ".vhdr": ("BrainVision", (".eeg", ".vmrk")),
    ".set": ("EEGLAB", (".fdt",)),
    ".fif": ("MNE (FIF)", ()),
    ".edf": ("EDF", ()),
    ".bdf": ("BioSemi (BDF)", ()),
    ".npz": ("NumPy archive", ()),
    ".npy": ("NumPy array, the model's 128 channels at 1 kHz", ()),
    ".pth": ("PyTorch, one EEG-ImageNet item", ()),
}


def format_examples(examples_dir: str | Path | None = None) -> dict[str, dict]:
    """The example files of other formats and caps (``formats/index.json``, written by
    ``scripts/make_examples.py``), by file name: ``{format, cap, description, label, class_name, stimulus,
    events, sha256, ...}``; empty without an index."""
    index = Path(EXAMPLES_DIR if examples_dir is None else examples_dir) / "formats" / "index.json"
    if not index.is_file():
        return {}
    return {e["file"]: e for e in json.loads(index.read_text()).get("formats", [])}


def upload_examples(examples_dir: str | Path | None = None) -> list[tuple[str, list[str]]]:
    """Files in the examples folder that show each upload format: ``(label, [trial file, companions...])``.

    One entry per trial file that is not an indexed example, with only the companions its format uses (a
    BrainVision header's ``.eeg`` and ``.vmrk``, an EEGLAB ``.set``'s ``.fdt``, when there), e.g.
    ``("BrainVision: trial.vhdr + .eeg + .vmrk", ["examples/formats/trial.vhdr", ".../trial.eeg", ...])``;
    files described in ``formats/index.json`` are labelled by their description (format, cap, events).
    """
    root = Path(EXAMPLES_DIR if examples_dir is None else examples_dir)
    indexed = {e.file.resolve() for e in load_examples(root)} if root.is_dir() else set()
    described = format_examples(root)
    entries = []
    order = list(FORMATS)
    for path in sorted((p for p in root.rglob("*") if p.suffix.lower() in TRIAL_EXTENSIONS),
                       key=lambda p: (order.index(p.suffix.lower()) if p.suffix.lower() in order else len(order), p)):
        if path.resolve() in indexed:
            continue
        name, companion_exts = FORMATS.get(path.suffix.lower(), (path.suffix.lower(), ()))
        if path.parent.name == "formats" and path.name in described:
            name = described[path.name].get("description") or name
        companions = [c for ext in companion_exts if (c := path.with_suffix(ext)).is_file()]
        label = f"{name}: {path.name}" + "".join(f" + {c.suffix}" for c in companions)
        entries.append((label, [str(path)] + [str(c) for c in companions]))
    return entries


# --------------------------------------------------------------------------------------------------
# A loaded trial: as read and in the model's space
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


def _class_index(name: str) -> int:
    if name not in CLASS_NAMES:
        raise ValueError(f"Invalid value for the 'sim_class' parameter: expected one of the 40 class names "
                         f"(e.g. {CLASS_NAMES[8]!r}), but got {name!r} instead.")
    return CLASS_NAMES.index(name)


def _int_in(name: str, value, low: int, high: int) -> int:
    try:
        ivalue = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r} instead.") from None
    if ivalue != value or not low <= ivalue <= high:
        raise ValueError(f"Invalid value for the {name!r} parameter: expected an integer in [{low}, {high}], "
                         f"got {value!r}.")
    return ivalue


def stimulus_image(class_index: int, number: int, stimuli_dir: Path = STIMULI_DIR) -> PIL.Image.Image:
    """Stimulus ``number`` (1-based, as in ``{synset}_{number:04d}.png``) of a class.

    Read from the stimulus folder when it was rendered; else drawn exactly as
    ``make_stimulus_set(seed=0)`` draws it (same random stream), at 64 x 64.
    """
    synset = CLASSES[class_index].synset
    path = Path(stimuli_dir) / f"{synset}_{number:04d}.png"
    if path.is_file():
        return PIL.Image.open(path).convert("RGB")
    from neuroimagen.data.stimuli import draw_stimulus

    img, _ = draw_stimulus(class_index, np.random.default_rng([0, class_index, number - 1]), size=64)
    return img


def upload_paths(files) -> tuple[Path, list[Path]]:
    """(the trial file, its companions) of an upload, checked: one trial file, known extensions, no two files
    of one name."""
    paths = [Path(f if isinstance(f, str | Path) else getattr(f, "name", f)) for f in _as_list(files)]
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


class Handlers:
    """The app's event handlers around one loaded pipeline (shared by all sessions through the queue)."""

    def __init__(self, pipe, examples_dir: str | Path | None = None, stimuli_dir: str | Path | None = None,
                 cap_metrics: str | Path | None = None):
        self.pipe = pipe
        self.examples_dir = Path(EXAMPLES_DIR if examples_dir is None else examples_dir)
        self.stimuli_dir = Path(STIMULI_DIR if stimuli_dir is None else stimuli_dir)
        self.examples = {e.name: e for e in load_examples(self.examples_dir)} if self.examples_dir.is_dir() else {}
        self.gallery = [e for e in self.examples.values() if e.stimulus is not None]  # shown by their stimulus
        self.format_examples = format_examples(self.examples_dir)
        self.cap_metrics = Path(CAP_METRICS if cap_metrics is None else cap_metrics)
        # Loaded example and simulated trials are small (~0.5 MB): keep the recent ones.
        self._example_trial = functools.lru_cache(maxsize=32)(self._read_example)
        self._simulated_trial = functools.lru_cache(maxsize=32)(self._simulate)
        self._simulator = functools.lru_cache(maxsize=len(NOISE_PRESETS))(self._make_simulator)
        self.tabs = SelectedTabs()

    # ---------------------------------------------------------------------------------------------
    # Trial sources
    def _read(self, path: Path, companions: list[Path] | None = None):
        from neuroimagen.data import preprocess, read_trial

        raw = read_trial(path, companions=companions)
        return raw, preprocess(raw)

    def _read_example(self, name: str) -> LoadedTrial:
        ex = self.examples[name]
        raw, model = self._read(ex.file)
        stim = PIL.Image.open(ex.stimulus).convert("RGB") if ex.stimulus is not None else None
        return LoadedTrial(name=f"example {name}", raw=raw, model=model, stimulus=stim)

    def example_trial(self, name: str) -> LoadedTrial:
        if not name:
            raise ValueError("No example chosen: pick one of the example trials first.")
        key = Path(str(name)).stem  # accept "x" and "x.npz"
        if key not in self.examples:
            choices = ", ".join(repr(n) for n in list(self.examples)[:5]) or "none are installed"
            raise ValueError(f"Unknown example {name!r}: expected one of the shipped example names "
                             f"({choices}{', ...' if len(self.examples) > 5 else ''}).")
        return self._example_trial(key)

    def upload_trial(self, files, event: str | None = None, occurrence: int = 1,
                     average: bool = False) -> LoadedTrial:
        """Read one uploaded trial; companions (``.eeg``/``.vmrk``/``.fdt``) are matched by file name.

        A continuous recording with events is cut at ``event`` (occurrence ``occurrence``, 1-based, or the
        ``average`` of all); the library refuses one without ``event``, listing its events.
        """
        from neuroimagen.data import preprocess, read_trial

        main, companions = upload_paths(files)
        event = str(event) if event else None
        index = _int_in("occurrence", occurrence, 1, MAX_OCCURRENCES) - 1
        # Only the uploaded files are read: the library checks the header's references against them
        # (neuroimagen.data.companions), wherever Gradio stored each one.
        raw = read_trial(main, companions=companions, event=event, index=index, average=bool(average))
        known = self.known_upload(main)
        if known is not None and raw.label is None:  # a shipped example file: its class is known
            raw.label = int(known["label"])
        stimulus = self._known_stimulus(getattr(raw, "stimulus", None), known)
        return LoadedTrial(name=f"upload {main.name}{window_name(raw, event, index + 1, average)}", raw=raw,
                           model=preprocess(raw), stimulus=stimulus)

    def upload_events(self, files) -> dict[str, np.ndarray]:
        """The events of the uploaded recording (``read_events``): description -> onsets in seconds."""
        from neuroimagen.data import read_events

        main, companions = upload_paths(files)
        return read_events(main, companions=companions)

    def known_upload(self, main: Path) -> dict | None:
        """The ``formats/index.json`` entry of a shipped example file, recognised by its content (SHA-256)."""
        if not self.format_examples:
            return None
        import hashlib

        digest = hashlib.sha256(Path(main).read_bytes()).hexdigest()
        return next((e for e in self.format_examples.values() if e.get("sha256") == digest), None)

    def _known_stimulus(self, stimulus, known: dict | None = None) -> PIL.Image.Image | None:
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

    def _make_simulator(self, preset: str):
        from neuroimagen.data.simulate import EEGSimulator

        return EEGSimulator(preset, n_subjects=N_SUBJECTS, seed=0)

    def _simulate(self, class_index: int, number: int, subject: int, preset: str) -> LoadedTrial:
        from neuroimagen.data import EEGTrial, preprocess
        from neuroimagen.data.montage import model_ch_names

        image = stimulus_image(class_index, number, self.stimuli_dir)
        rng = np.random.default_rng([class_index, number, subject, NOISE_PRESETS.index(preset)])
        pixels = np.asarray(image)
        volts = self._simulator(preset).simulate(pixels[None], [class_index], [subject], rng, raw=True)[0]
        raw = EEGTrial(data=volts, sfreq=SFREQ, ch_names=list(model_ch_names()), subject=subject, label=class_index,
                       stimulus=pixels)
        return LoadedTrial(name=f"simulated {CLASS_NAMES[class_index]} #{number}, subject {subject}, {preset} noise",
                           raw=raw, model=preprocess(raw), stimulus=image)

    def simulated_trial(self, sim_class: str, sim_image, sim_subject, sim_noise: str) -> LoadedTrial:
        from neuroimagen._check import check_option

        check_option("sim_noise", sim_noise, NOISE_PRESETS)
        return self._simulated_trial(_class_index(sim_class), _int_in("sim_image", sim_image, 1, IMAGES_PER_CLASS),
                                     _int_in("sim_subject", sim_subject, 1, N_SUBJECTS), sim_noise)

    @staticmethod
    def trial_key(source: str, example: str | None, files, sim_class: str, sim_image, sim_subject,
                  sim_noise: str, event: str | None = None, occurrence: int = 1, average: bool = False) -> str:
        """Which trial the widgets describe, without reading it (uploads by their stored paths: Gradio stores
        each upload in a folder named by its content's hash, so another file of the same name differs)."""
        if source == "example":
            return f"example:{Path(str(example)).stem if example else ''}"
        if source == "upload":
            window = f"{event or ''}:{'average' if average else occurrence}"
            return "upload:" + "|".join(sorted(str(getattr(f, "name", f)) for f in _as_list(files))) + f":{window}"
        return f"simulate:{sim_class}:{sim_image}:{sim_subject}:{sim_noise}"

    def trial(self, source: str, example: str | None, files, sim_class: str, sim_image, sim_subject,
              sim_noise: str, event: str | None = None, occurrence: int = 1, average: bool = False) -> LoadedTrial:
        """The trial the widgets describe."""
        from neuroimagen._check import check_option

        check_option("source", source, SOURCES)
        if source == "example":
            return self.example_trial(example)
        if source == "upload":
            return self.upload_trial(files, event, occurrence, average)
        return self.simulated_trial(sim_class, sim_image, sim_subject, sim_noise)

    # ---------------------------------------------------------------------------------------------
    # Views of the EEG
    def eeg_views(self, trial: LoadedTrial, time_ms: float) -> tuple:
        """(facts markdown, butterfly image, topomap image, channel report markdown, stimulus)."""
        expected = expected_accuracy_text(trial.model, self.cap_metrics) if trial.raw.info.get("file") else None
        return (trial_facts(trial, expected), figure_to_image(plot_window(trial, time_ms)),
                self.topomap_image(trial, time_ms), channel_report(trial.model), trial.stimulus)

    def topomap_image(self, trial: LoadedTrial, time_ms: float) -> PIL.Image.Image:
        from neuroimagen.viz import plot_topomap

        m = trial.model
        t = float(np.clip(float(time_ms) / 1000, TMIN, TMIN + (m.data.shape[1] - 1) / m.sfreq))
        return figure_to_image(plot_topomap(m.data, m.sfreq, list(m.ch_names), t, tmin=TMIN, units="z (a.u.)"))

    # ---------------------------------------------------------------------------------------------
    # Events (the names of their parameters are the API's)
    def pick_example(self, evt: gr.SelectData) -> str:
        """The example name of the clicked gallery image."""
        return self.gallery[evt.index].name

    def tab_selector(self, source: str):
        """The ``tab.select`` handler of the tab ``source``: records it for the session (see SelectedTabs)."""

        def select_tab(request: gr.Request) -> None:
            self.tabs.select(request, source)

        return select_tab

    def forget_session(self, request: gr.Request) -> None:
        """A page closed: forget its selected tab."""
        self.tabs.forget(request)

    def for_selected_tab(self, source: str, request, load):
        """``load()``'s views, unless the session has selected another tab by the time it ends: then nothing
        on the page changes (every view skipped) and no error is raised, whatever ``load`` did."""
        try:
            views = load()
        except Exception:
            if self.tabs.stale(request, source):
                return skip_views()
            raise
        return skip_views() if self.tabs.stale(request, source) else views

    @user_errors
    def load_example(self, example: str | None = None, time_ms: float = DEFAULT_LATENCY_MS,
                     request: gr.Request = None):
        """Load a shipped example: (source, facts, butterfly, topomap, channels, stimulus, state)."""

        def load():
            trial = self.example_trial(example)
            return ("example", *self.eeg_views(trial, time_ms), trial)

        return self.for_selected_tab("example", request, load)

    @user_errors
    def load_upload(self, files=None, time_ms: float = DEFAULT_LATENCY_MS, event: str | None = None,
                    occurrence: int = 1, average: bool = False, request: gr.Request = None):
        """Load an uploaded trial: (source, facts, butterfly, topomap, channels, stimulus, state).

        A continuous recording with events and no ``event`` chosen is not an error: the panel lists its events
        and asks for one (nothing is chosen for the user); Reconstruct then refuses with the same list.
        """
        return self.for_selected_tab("upload", request,
                                     lambda: self._load_upload(files, time_ms, event, occurrence, average))

    def _load_upload(self, files, time_ms: float, event: str | None, occurrence: int, average: bool):
        if not _as_list(files):  # nothing uploaded yet, or the upload widget was cleared
            return ("upload", NO_UPLOAD, None, None, "", None, None)
        from neuroimagen.data import TrialFileError

        try:
            trial = self.upload_trial(files, event, occurrence, average)
        except TrialFileError as err:
            try:
                events = {} if event else self.upload_events(files)
            except USER_ERRORS:
                events = {}
            if not events:
                raise err
            main = upload_paths(files)[0]
            known = self.known_upload(main)
            return ("upload", choose_event_text(main.name, events, str(err)), None, None, "",
                    self._known_stimulus(None, known), None)
        # The session keeps only what the topomap needs (not the raw recording, up to MAX_UPLOAD_BYTES read
        # as float64): sessions live on after the request (Gradio drops their state ~1 h after they close).
        return ("upload", *self.eeg_views(trial, time_ms), LoadedTrial(trial.name, None, trial.model))

    def upload_window(self, files=None):
        """After a new upload: the Event dropdown with its events (none chosen: hidden when there are none),
        the Occurrence slider (an epochs file's epochs), Average unticked, and the events for ``pick_event``.

        Never raises: a file whose events cannot be read gets no window widgets, and its load says why.
        """
        events: dict[str, np.ndarray] = {}
        epochs = False
        if _as_list(files):
            try:
                events = self.upload_events(files)
                epochs = upload_paths(files)[0].name.lower().endswith(EPOCHS_SUFFIXES)
            except USER_ERRORS:
                events = {}
        counts = {name: len(onsets) for name, onsets in events.items()}
        choices = [(f"{name} ({n}×)", name) for name, n in counts.items()]
        info = ("which event starts the trial: leave empty for all the epochs" if epochs else
                "which event starts the trial (stimulus onset, t = 0)")
        n_epochs = sum(counts.values()) if epochs else 0
        return (gr.Dropdown(choices=choices, value=None, visible=bool(events), info=info),
                occurrence_slider(n_epochs), gr.Checkbox(value=False, visible=bool(events)),
                {"counts": counts, "epochs": epochs})

    @staticmethod
    def pick_event(event: str | None, window: dict | None):
        """The Occurrence slider for the chosen event: 1 to its number of occurrences (an epochs file without an
        event: its epochs)."""
        window = window or {}
        counts = window.get("counts", {})
        n = counts.get(event, 0) if event else (sum(counts.values()) if window.get("epochs") else 0)
        return occurrence_slider(n)

    @user_errors
    def simulate(self, sim_class: str = CLASS_NAMES[8], sim_image: int = 1, sim_subject: int = 1,
                 sim_noise: str = "demo", time_ms: float = DEFAULT_LATENCY_MS, request: gr.Request = None):
        """Simulate a trial: (source, facts, butterfly, topomap, channels, stimulus, state)."""

        def load():
            trial = self.simulated_trial(sim_class, sim_image, sim_subject, sim_noise)
            return ("simulate", *self.eeg_views(trial, time_ms), trial)

        return self.for_selected_tab("simulate", request, load)

    @staticmethod
    def no_trial():
        """The EEG panel when the chosen trial could not be read (the error message says why):
        (facts, butterfly, topomap, channels, stimulus, state)."""
        return (UNREADABLE, None, None, "", None, None)

    @staticmethod
    def show_ablation(ablation: bool):
        """Show the ablation gallery only while its checkbox is ticked."""
        return gr.Gallery(visible=bool(ablation))

    # Results: (reconstruction, saliency map, caption, class probabilities, seed used, top captions, ablation
    # gallery, notes, title), cleared together; the seen image belongs to the trial and stays.
    @staticmethod
    def clear_results():
        """Empty results, shown while a reconstruction runs: a failed one leaves nothing stale on screen."""
        return (*EMPTY_RESULTS[:-1], RUNNING)

    @staticmethod
    def clear_results_if(ablation: bool):
        """Empty results when the ablation box was just ticked (its run follows), else leave them."""
        return Handlers.clear_results() if ablation else tuple(gr.skip() for _ in EMPTY_RESULTS)

    @staticmethod
    def failed_results() -> str:
        """The results title after a reconstruction failed (its outputs were emptied when it started)."""
        return FAILED

    def clear_stale(self, source: str, example: str | None, files, sim_class: str, sim_image, sim_subject,
                    sim_noise: str, event: str | None, occurrence: int, average: bool, result_key: str | None):
        """After a trial is loaded: empty the results unless they are of the trial the widgets now describe
        (a reconstruction of this trial may have finished while it was loading)."""
        key = self.trial_key(source, example, files, sim_class, sim_image, sim_subject, sim_noise, event,
                             occurrence, average)
        return tuple(gr.skip() for _ in EMPTY_RESULTS) if key == result_key else EMPTY_RESULTS

    @user_errors
    def topomap(self, time_ms: float, state: LoadedTrial | None):
        """Redraw the topomap of the loaded trial at ``time_ms``."""
        return None if state is None else self.topomap_image(state, time_ms)

    @user_errors
    def reconstruct(self, source: str = "example", example: str | None = None, files=None,
                    sim_class: str = CLASS_NAMES[8], sim_image: int = 1, sim_subject: int = 1,
                    sim_noise: str = "demo", strength: float = 0.75, guidance_scale: float = 5.0,
                    num_inference_steps: int = 25, seed: int = 0, randomize_seed: bool = False,
                    caption_source: str = "label", ablation: bool = False, layout_weight: float | None = None,
                    event: str | None = None, occurrence: int = 1, average: bool = False,
                    progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's documented idiom)
        """Reconstruct the seen image from the chosen trial.

        ``event``, ``occurrence`` (1-based) and ``average`` choose the trial of an uploaded recording (see
        :meth:`upload_trial`); they come last so that callers of the earlier parameters keep working.

        Returns (reconstruction, saliency map, caption, class probabilities, seed used, top-5 captions,
        true stimulus, ablation gallery, notes, title naming the trial), and the trial's key for the page.
        """
        t0 = time.perf_counter()
        progress(0, desc="Reading the trial")
        window = (event, occurrence, average)
        trial = self.trial(source, example, files, sim_class, sim_image, sim_subject, sim_noise, *window)
        key = self.trial_key(source, example, files, sim_class, sim_image, sim_subject, sim_noise, *window)
        if randomize_seed:
            seed = int(np.random.default_rng().integers(0, MAX_SEED))
        seed = _int_in("seed", seed, 0, MAX_SEED)
        steps = _int_in("num_inference_steps", num_inference_steps, 1, 1000)
        kwargs = dict(strength=float(strength), guidance_scale=float(guidance_scale), num_inference_steps=steps,
                      caption_source=caption_source, output_type="pil",
                      layout_weight=None if layout_weight is None else float(layout_weight))
        runs = 3 if ablation else 1
        progress(0.05, desc="Decoding the EEG and denoising" + (f" (run 1 of {runs})" if ablation else ""))
        out = self.pipe(trial.model, generator=torch.Generator().manual_seed(seed), mode="both", **kwargs)
        gallery = None
        if ablation:
            # The paper's ablation: same trial, same seed, one condition left out at a time.
            gallery = []
            for k, (mode, label) in enumerate((("saliency_only", "saliency map only"),
                                               ("caption_only", "caption only")), start=2):
                progress((k - 1) / runs, desc=f"Ablation: {label} (run {k} of {runs})")
                alt = self.pipe(trial.model, generator=torch.Generator().manual_seed(seed), mode=mode, **kwargs)
                gallery.append((alt.images[0], label))
            gallery.append((out.images[0], "saliency map + caption"))
        probs = {name: float(p) for name, p in zip(CLASS_NAMES, out.class_probs[0])}
        caption = out.caption_used[0] if out.caption_used else out.captions[0][0][0]
        notes = list(out.notes) + [f"Seed {seed}; {steps} steps at strength {strength:g} (img2img runs "
                                   f"{int(steps * float(strength))}), guidance {float(guidance_scale):g}; "
                                   f"{time.perf_counter() - t0:.2f} s on {self.pipe.device}."]
        label = trial.label
        title = f"Reconstructed from **{trial.name}**" + (f" (true class: {CLASS_NAMES[label]})"
                                                          if label is not None else "")
        return (out.images[0], out.saliency_maps[0], caption, probs, seed, captions_table(out), trial.stimulus,
                gallery, "\n".join(f"- {n}" for n in notes), title, key)

    def reconstruct_if_ablation(self):
        """``reconstruct`` for the ablation checkbox: runs when it is ticked, leaves everything when unticked.

        Same parameters as :meth:`reconstruct` (Gradio reads them, and ``gr.Progress``, from its signature).
        """
        import inspect

        signature = inspect.signature(self.reconstruct)

        @functools.wraps(self.reconstruct)
        def run(*args, **kwargs):
            if not signature.bind(*args, **kwargs).arguments.get("ablation"):
                return tuple(gr.skip() for _ in range(len(EMPTY_RESULTS) + 2))  # + seen image, trial key
            return self.reconstruct(*args, **kwargs)

        return run


# --------------------------------------------------------------------------------------------------
# Text views
NO_UPLOAD = ("**No trial uploaded yet.** Drop one EEG trial file in the upload box (with its companion files), "
             "or click one of the example files: its EEG shows here, and Reconstruct uses it.")
UNREADABLE = ("**This trial could not be read**: the error message says why. Upload another file or pick "
              "another trial; Reconstruct uses what this panel shows.")
NO_RESULTS = "Press **Reconstruct**: the results of the trial shown appear here."
RUNNING = "Reconstructing the trial shown…"
FAILED = "**The reconstruction failed**: the error message says why. Nothing shown here is stale."
EMPTY_RESULTS = (None, None, "", None, None, "", None, "", NO_RESULTS)
N_VIEWS = 7  # a trial load's outputs: source, facts, butterfly, topomap, channels, stimulus, state


def skip_views() -> tuple:
    """A trial load's outputs that change nothing on the page."""
    return tuple(gr.skip() for _ in range(N_VIEWS))


def _as_list(files) -> list:
    if files is None:
        return []
    return list(files) if isinstance(files, list | tuple) else [files]


def trial_facts(trial: LoadedTrial, expected: str | None = None) -> str:
    """A markdown table: the trial as read and as the model sees it; then how its channels were covered
    (``info["coverage"]``) and, given, the expected accuracy for its channel count."""
    r, m = trial.raw, trial.model
    label = trial.label
    subject = getattr(r, "subject", None)
    lines = [f"**{trial.name}**", "",
             f"subject: **{subject if subject is not None else 'unknown'}** · true class: "
             f"**{CLASS_NAMES[label] if label is not None else 'unknown'}**", "",
             "| | channels | sampling rate | duration |", "|---|---|---|---|"]
    lines += [f"| {what} | {len(t.ch_names)} | {t.sfreq:g} Hz | {1000 * t.data.shape[-1] / t.sfreq:.0f} ms |"
              for what, t in (("as read", r), ("model input", m))]
    coverage = m.info.get("coverage") if isinstance(m.info, dict) else None
    if coverage:
        lines += ["", f"**Channels**: {coverage}."]
    if expected:
        lines += ["", expected]
    notes = [info.get(k) for info in (r.info, m.info) if isinstance(info, dict)
             for k in ("assumed", "note", "resampled", "cropped")]
    lines += [f"\n*{n}*" for n in dict.fromkeys(n for n in notes if n)]
    return "\n".join(lines)


def choose_event_text(file_name: str, events: dict[str, np.ndarray], refusal: str) -> str:
    """The EEG panel of a recording with events and none chosen: its events, and what to do."""
    lines = [f"**upload {file_name}**: choose an event", "", f"*{refusal}*", "",
             "Pick the **Event** that marks stimulus onset (t = 0) under the upload box, then an **Occurrence** or "
             "**Average all occurrences**: nothing is chosen for you.", "",
             "| event | occurrences | first onsets (s) |", "|---|---|---|"]
    for name, onsets in events.items():
        first = ", ".join(f"{t:.2f}" for t in onsets[:4]) + (" …" if len(onsets) > 4 else "")
        lines.append(f"| {name.replace('|', '/')} | {len(onsets)} | {first} |")
    return "\n".join(lines)


def occurrence_slider(n: int) -> gr.Slider:
    """The Occurrence slider for an event with ``n`` occurrences (shown only when there is a choice)."""
    return gr.Slider(minimum=1, maximum=max(n, 2), value=1, visible=n > 1,
                     info=f"which of the {n} to cut the trial at" if n > 1 else None)


def expected_accuracy(n_chans: int, metrics_path: str | Path = CAP_METRICS) -> dict[str, float] | None:
    """The top-1 to expect from a cap of ``n_chans`` channels, by group (``"new subjects"``, ``"trained
    subjects"``), interpolated linearly in the channel count between the caps measured.

    ``metrics_path`` is ``scripts/cap_accuracy.py``'s ``metrics.json``: ``{"caps": {name: {"n_chans": 32,
    "trained subjects": {"top1": 0.9, ...}, "new subjects": {...}}}}``; caps of the same size are averaged.
    Above the largest cap measured its value is taken (the model uses 128 channels); below the smallest, or
    without the file, ``None``: nothing is said that was not measured.
    """
    try:
        caps = json.loads(Path(metrics_path).read_text())["caps"]
        by_group: dict[str, dict[int, list[float]]] = {}
        for cap in caps.values():
            for group in ("new subjects", "trained subjects"):
                if isinstance(cap.get(group), dict) and "top1" in cap[group]:
                    by_group.setdefault(group, {}).setdefault(int(cap["n_chans"]), []).append(
                        float(cap[group]["top1"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    out = {}
    for group, points in by_group.items():
        xs = sorted(points)
        if n_chans < xs[0]:
            continue
        out[group] = float(np.interp(n_chans, xs, [float(np.mean(points[x])) for x in xs]))
    return out or None


def expected_accuracy_text(model_trial, metrics_path: str | Path = CAP_METRICS) -> str:
    """One line for the EEG panel: the expected top-1 for the trial's channel count (``n_used``)."""
    rep = model_trial.info.get("channels") if isinstance(model_trial.info, dict) else None
    n = int(rep.get("n_used", 0)) if rep else 0
    if not n:
        return ""
    acc = expected_accuracy(n, metrics_path)
    head = f"**Expected accuracy** ({n} channels): "
    if acc is None:
        why = "no cap this small was measured" if Path(metrics_path).is_file() else "reports/caps/demo is not there"
        return head + f"not measured ({why})."
    main = acc.get("new subjects", acc.get("trained subjects"))
    text = head + f"about {100 * main:.0f} % top-1 on simulated trials (demo preset)"
    if "new subjects" in acc:
        text += " of people the model never saw"
        if "trained subjects" in acc:
            text += f"; {100 * acc['trained subjects']:.0f} % for those it was trained on"
    return text + "."


def plot_window(trial: LoadedTrial, time_ms: float):
    """The butterfly plots: the window as read (onset at t = 0 marked, the model's part shaded), then the
    model input (band-passed, z-scored, the topomap's latency marked). A Figure."""
    from matplotlib.figure import Figure

    from neuroimagen.viz import plot_eeg

    r, m = trial.raw, trial.model
    fig = Figure(figsize=(8.0, 5.6))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.94, bottom=0.08, hspace=0.45)  # not constrained: 2x faster
    ax_read, ax_model = fig.subplots(2, 1)
    data = np.asarray(r.data, dtype=np.float64)
    volts = np.nanmax(np.abs(data)) < 1e-2 if data.size else False  # MNE formats and our .npz: volts
    note = (r.info or {}).get("note", "").split(", ")[0]  # "occurrence 2 of 5 of 'stimulus'", "epoch 1 of 3"
    plot_eeg(data, r.sfreq, _unique(list(r.ch_names)), axes=ax_read, tmin=float(r.tmin),
             units="µV" if volts else "file units", scale=1e6 if volts else 1.0,
             title="As read" + (f": {note}" if note else ""))
    crop_end = TMIN + m.data.shape[1] / m.sfreq
    ax_read.axvspan(TMIN, crop_end, color="tab:blue", alpha=0.08, zorder=0)
    ax_read.axvline(0.0, color="crimson", linewidth=1.5, zorder=5, clip_on=False)  # over the frame at tmin = 0
    # Labels at the bottom, apart: "onset" beside its line (left of it when there is time before onset), "model
    # input" at the right end of its shade.
    before = float(r.tmin) < 0
    ax_read.annotate("onset", (0.0, 0.0), xycoords=("data", "axes fraction"), xytext=(-3 if before else 3, 4),
                     textcoords="offset points", ha="right" if before else "left", color="crimson", fontsize=9)
    ax_read.annotate("model input", (crop_end, 0.0), xycoords=("data", "axes fraction"), xytext=(-3, 4),
                     textcoords="offset points", ha="right", color="tab:blue", fontsize=8)
    plot_eeg(m.data, m.sfreq, list(m.ch_names), axes=ax_model, tmin=TMIN, units="z (a.u.)", time_s=time_ms / 1000,
             title="Model input (band-passed, z-scored)")
    ax_model.set_xlim(ax_read.get_xlim())  # one time axis: the model's part sits under its shade
    n_ave = int((r.info or {}).get("n_averaged") or 1)
    for text in (t for ax in (ax_read, ax_model) for t in ax.texts if "ave" in t.get_text()):
        text.set_text(f"{n_ave} averaged" if n_ave > 1 else "single trial")  # MNE's N_ave of an EvokedArray is 1
    return fig


def _unique(names: list[str]) -> list[str]:
    """Channel names made unique for plotting (a file may repeat one)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def channel_report(trial) -> str:
    """How the channels were read (``info["channels"]["scheme"]``), and which were mapped onto the model
    montage, interpolated or dropped."""
    rep = trial.info.get("channels") if isinstance(trial.info, dict) else None
    if not rep:
        return "Channel mapping: not reported."
    lines = [f"- **read as**: {rep['scheme']}"] if rep.get("scheme") else []
    for key in ("mapped", "interpolated", "dropped"):
        items = rep.get(key, [])
        if isinstance(items, dict):  # e.g. interpolated: {"Oz": "flat"}
            names = [f"{k} ({v})" for k, v in items.items()]
        else:
            names = [str(x) for x in items]
        shown = ", ".join(names[:12]) + (f", … (+{len(names) - 12})" if len(names) > 12 else "")
        lines.append(f"- **{key}** ({len(names)}): {shown or '—'}")
    return "\n".join(lines)


# The detailed captions describe how a stimulus was drawn in the words of its generator
# (neuroimagen.data.stimuli.detailed_caption); the app shows them in plainer words. Display only: the model is
# conditioned on the caption bank's own text and states, which the "Decoded caption" box shows as they are.
PLAIN_WORDS = {"mirrored": "flipped left to right"}


def plain_caption(text: str) -> str:
    """A caption for display, in plain words (``PLAIN_WORDS``)."""
    for word, plain in PLAIN_WORDS.items():
        text = re.sub(rf"\b{word}\b", plain, text)
    return text


def captions_table(out) -> str:
    """Top-5 label captions (probability) and detailed captions (similarity) as markdown."""
    lines = ["| decoded caption | probability |", "|---|---|"]
    lines += [f"| {plain_caption(text)} | {score:.3f} |" for text, score in out.captions[0]]
    if getattr(out, "detailed_captions", None):
        lines += ["", "| nearest detailed caption | similarity |", "|---|---|"]
        lines += [f"| {plain_caption(text)} | {score:.3f} |" for text, score in out.detailed_captions[0]]
    return "\n".join(lines)


def model_summary(pipe) -> str:
    """Device, diffusion model and sizes of the loaded pipeline, one line."""
    try:
        d = pipe.describe()
    except AttributeError:
        return f"Running on **{pipe.device}**."
    name = Path(str(d.get("name_or_path") or "")).name or "in-memory pipeline"
    return (f"Running on **{d['device']}** · model **{name}** · diffusion: {d['diffusion']} "
            f"(U-Net {d['unet_params_M']} M parameters) · EEG models {d['eeg_params_M']} M parameters")


def model_card(pipe) -> str | None:
    """The checkpoint's model card (README.md) text, when the pipeline was loaded from a folder."""
    path = Path(str(pipe.config.get("_name_or_path", "") or "")) / "README.md"
    return path.read_text() if path.is_file() else None


@dataclass
class ModelCard:
    """A model card split for display: its YAML metadata as a table, its body as markdown sections."""

    title: str  # the body's "# " heading ("" without one)
    metadata: str  # markdown table of the front matter ("" without one)
    intro: str  # the body up to its first "## " heading
    sections: list[tuple[str, str]]  # (heading, markdown) of each "## " section


def split_model_card(text: str) -> ModelCard:
    """Split a Hugging Face model card: ``---`` YAML front matter, then markdown.

    Markdown would render the front matter as a heading (its closing ``---`` underlines the lines above);
    here it becomes a two-column table, and the body is cut at its ``## `` headings.
    """
    import yaml

    metadata = ""
    match = re.match(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", text, flags=re.S)
    if match:
        text = text[match.end():]
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and meta:
            def cell(value) -> str:
                value = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
                return value.replace("|", "\\|").replace("\n", " ")

            metadata = "\n".join(["| metadata | |", "|---|---|"] + [f"| {k} | {cell(v)} |" for k, v in meta.items()])
    title = ""
    if match := re.match(r"\s*# +(.+?)\s*$", text, flags=re.M):
        title, text = match.group(1), text[match.end():]
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.M)  # [intro, heading, body, heading, body, ...]
    sections = [(parts[i].strip(), parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    return ModelCard(title=title, metadata=metadata, intro=parts[0].strip(), sections=sections)
