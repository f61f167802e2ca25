"""The shipped examples: trials with their seen images (``examples/index.json``) and one file per upload format
and cap (``examples/formats/index.json``, written by ``scripts/make_examples.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuroimagen.data.classes import CLASS_NAMES
from neuroimagen.data.companions import COMPANION_EXTENSIONS

from .settings import EXAMPLES_DIR, TRIAL_EXTENSIONS

# What each upload format is called (its companions: neuroimagen.data.companions.COMPANION_EXTENSIONS).
FORMATS = {
    ".vhdr": "BrainVision",
    ".set": "EEGLAB",
    ".fif": "MNE (FIF)",
    ".edf": "EDF",
    ".bdf": "BioSemi (BDF)",
    ".npz": "NumPy archive",
    ".npy": "NumPy array, the model's 128 channels at 1 kHz",
    ".pth": "PyTorch, one EEG-ImageNet item",
}


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


def _root(examples_dir: str | Path | None) -> Path:
    return Path(EXAMPLES_DIR if examples_dir is None else examples_dir)


def load_examples(examples_dir: str | Path | None = None) -> list[Example]:
    """The shipped example trials, from ``index.json`` or, without one, from the ``*.npz`` files.

    ``index.json`` is a list (or ``{"examples": [...]}``) of ``{file, label, class_name, subject, stimulus}``.
    """
    root = _root(examples_dir)
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


def format_examples(examples_dir: str | Path | None = None) -> dict[str, dict]:
    """The example files of other formats and caps (``formats/index.json``, written by
    ``scripts/make_examples.py``), by file name: ``{format, cap, description, label, class_name, stimulus,
    events, sha256, ...}``; empty without an index."""
    index = _root(examples_dir) / "formats" / "index.json"
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
    root = _root(examples_dir)
    indexed = {e.file.resolve() for e in load_examples(root)} if root.is_dir() else set()
    described = format_examples(root)
    entries = []
    order = list(FORMATS)
    for path in sorted((p for p in root.rglob("*") if p.suffix.lower() in TRIAL_EXTENSIONS),
                       key=lambda p: (order.index(p.suffix.lower()) if p.suffix.lower() in order else len(order), p)):
        if path.resolve() in indexed:
            continue
        name = FORMATS.get(path.suffix.lower(), path.suffix.lower())
        if path.parent.name == "formats" and path.name in described:
            name = described[path.name].get("description") or name
        companions = [c for ext in COMPANION_EXTENSIONS.get(path.suffix.lower(), ())
                      if (c := path.with_suffix(ext)).is_file()]
        label = f"{name}: {path.name}" + "".join(f" + {c.suffix}" for c in companions)
        entries.append((label, [str(path)] + [str(c) for c in companions]))
    return entries
