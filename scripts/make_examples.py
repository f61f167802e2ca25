"""Write examples/: a dozen held-out trials for the app and the tests, and example files of every upload format.

    python scripts/make_examples.py [--stimuli data/stimuli] [--splits data/sim_demo_splits.pth] [--out examples]
    python scripts/make_examples.py --only caps      # only the recordings on other caps (no data set needed)

``trials``: trials are simulated afresh (``EEGSimulator(preset="demo", seed=0)``, raw broadband volts at 1 kHz,
the way a recording would arrive) for stimuli of the TEST split, over 12 classes and all 6 subjects, so the
models never saw these images. Each ``.npz`` carries ``data, sfreq, ch_names, subject, label, stimulus``;
``index.json`` lists them. The first trial is also written as .npy, .pth, .edf and .set in the model's layout.

``caps``: recordings made "on other caps", each simulated through that cap's own forward model
(``EEGSimulator(montage=cap)``) for a held-out test image seen by a new person (subjects 7-10, whom no
model was trained on), written in the cap's own channel names, rate and file format, with its stimulus PNG:

- a BioSemi 64 ``.bdf`` (native names A1..B32, 512 Hz): one trial from stimulus onset, no events;
- a 10-20 32 BrainVision set (``.vhdr`` + ``.eeg`` 16-bit at 0.1 uV + ``.vmrk``, 500 Hz): a continuous
  recording with 3 stimulus and 3 response markers;
- a 10-10 64 continuous ``_raw.fif`` (250 Hz, 16-bit): 5 "stimulus" and 5 "response" annotations;
- a 10-20 19 ``-epo.fif`` (250 Hz): 3 epochs of the stimulus from -200 to +500 ms, baseline-corrected.

A recording repeats its one stimulus (an ERP experiment's repetitions): each occurrence is a trial of its
own (own noise), joined to the previous one 0-20 ms after its onset with an equal-power cross-fade, before
the 20-460 ms the model uses. ``formats/index.json`` describes every format example (what it is, its
cap, class, stimulus, events, and its SHA-256, by which the app recognises an uploaded example).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from neuroimagen.data import EEGTrial, write_trial  # noqa: E402
from neuroimagen.data.montage import SFREQ, model_ch_names  # noqa: E402
from neuroimagen.data.simulate import EEGSimulator  # noqa: E402
from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata  # noqa: E402

N_EXAMPLES = 12
FORMATS = (".npy", ".pth", ".edf", ".set")  # the model-layout trial; .bdf, .vhdr and .fif come from other caps
FORMAT_NAMES = {".npy": "NumPy array", ".pth": "PyTorch", ".edf": "EDF", ".set": "EEGLAB"}
PRESET = "demo"

# The recordings on other caps: (file stem, cap, class name, subject, what is written).
CAP_EXAMPLES = (
    ("panda64", "BioSemi 64", "giant panda", 7, "bdf"),
    ("airliner32", "10-20 32", "airliner", 8, "brainvision"),
    ("pizza64_raw", "10-10 64", "pizza", 9, "fif"),
    ("daisy19-epo", "10-20 19", "daisy", 10, "epochs"),
)
LEAD_S, ISI_S, FADE_S = 0.5, 1.0, 0.02  # before the first onset; onset to onset; the cross-fade after each onset
INT16_VOLTS = 1e-7  # 16-bit files store 0.1 uV steps (+-3.2 mV), as BrainVision Recorder's default
RESPONSE_S = (0.45, 0.65)  # button presses this long after the stimulus (markers only: no motor potential)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ trials
def write_trials(args, out: Path) -> list[dict]:
    """The 12 example trials (.npz + stimulus PNG + index.json); the first also in FORMATS. Returns the
    format examples' index entries."""
    import torch
    from PIL import Image

    records = load_stimulus_metadata(args.stimuli)
    images = load_stimulus_images(args.stimuli, records)
    dataset = torch.load(args.data, weights_only=True, mmap=True)["dataset"]
    test_idx = torch.load(args.splits, weights_only=True)["splits"][0]["test"]
    test_images = sorted({int(dataset[i]["image"]) for i in test_idx})
    # 12 classes spread over the 40, one test image each, subjects 1..6 in turn.
    chosen, seen = [], set()
    for c in np.linspace(0, 39, N_EXAMPLES).round().astype(int):
        img = next(i for i in test_images if records[i].class_index == c and i not in seen)
        chosen.append(img)
        seen.add(img)
    subjects = [1 + k % 6 for k in range(len(chosen))]

    sim = EEGSimulator(preset=PRESET, n_subjects=6, seed=0)
    rng = np.random.default_rng(args.seed)
    eeg = sim.simulate(images[chosen], [records[i].class_index for i in chosen], subjects, rng, raw=True)

    index, formats = [], []
    fmt_dir = out / "formats"
    for k, (img, subj) in enumerate(zip(chosen, subjects)):
        r = records[img]
        trial = EEGTrial(data=eeg[k], sfreq=SFREQ, ch_names=list(model_ch_names()), subject=subj,
                         label=r.class_index, stimulus=images[img])
        name = f"{r.image}_s{subj}"
        write_trial(trial, out / f"{name}.npz")
        Image.fromarray(images[img]).save(out / f"{r.image}.png")
        index.append({"file": f"{name}.npz", "label": r.class_index, "class_name": r.class_name, "subject": subj,
                      "stimulus": f"{r.image}.png", "image": r.image, "detailed_caption": r.detailed_caption})
        if k == 0:
            formats += [model_layout_entry(write_trial(trial, fmt_dir / f"{name}{ext}"), index[-1])
                        for ext in FORMATS]
    (out / "index.json").write_text(json.dumps({"examples": index}, indent=1))
    print(f"wrote {len(index)} examples and {len(FORMATS)} format examples to {out}")
    return formats


def model_layout_entry(path: Path, example: dict) -> dict:
    """The ``formats/index.json`` entry of an example trial written in another format (``example``: its entry
    in ``index.json``)."""
    fmt = FORMAT_NAMES[path.suffix]
    return {"file": path.name, "companions": [], "format": fmt, "cap": "actiCAP 128", "n_chans": 128,
            "description": f"{fmt}, 128 ch", "label": example["label"],
            "class_name": example["class_name"], "subject": example["subject"], "image": example["image"],
            "stimulus": f"../{example['stimulus']}"}


# ------------------------------------------------------------------------------------------ other caps
def continuous(sim: EEGSimulator, image: np.ndarray, label: int, subject: int, n_events: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A continuous recording at 1 kHz of ``n_events`` presentations of one image: (volts, onset samples).

    Each presentation is a trial of its own (``simulate(raw=True)``, ``ISI_S`` long); the recording starts
    with ``LEAD_S`` of the late part of one more trial (background, its evoked response over), and each
    trial is joined to what precedes it with an equal-power cross-fade over its first ``FADE_S`` (before the
    model's crop starts at 20 ms), so the recording has no step at any onset.
    """
    isi, lead, fade = (int(round(s * SFREQ)) for s in (ISI_S, LEAD_S, FADE_S))
    trials = sim.simulate(np.repeat(image[None], n_events + 1, axis=0), [label] * (n_events + 1),
                          [subject] * (n_events + 1), rng, raw=True, n_samples=isi + fade).astype(np.float64)
    ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade)  # 0 -> 1; ramp**2 + fall**2 = 1
    fall = np.sqrt(1.0 - ramp ** 2)
    rec, onsets = trials[0][:, -(lead + fade):], []
    for trial in trials[1:]:
        onsets.append(rec.shape[1] - fade)
        joined = rec[:, -fade:] * fall + trial[:, :fade] * ramp
        rec = np.concatenate([rec[:, :-fade], joined, trial[:, fade:]], axis=1)
    return rec, np.array(onsets)


def resample(data: np.ndarray, sfreq: float) -> np.ndarray:
    """From the simulator's 1 kHz to ``sfreq`` (polyphase, with its anti-alias filter)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    frac = Fraction(sfreq / SFREQ).limit_denominator(1000)
    return resample_poly(data, frac.numerator, frac.denominator, axis=-1)


def _raw(data: np.ndarray, info, onsets_s: np.ndarray, response_s: np.ndarray):
    import mne

    for ch in info["chs"]:
        ch["cal"] = INT16_VOLTS  # what one step of a 16-bit ("short") FIF file is
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(np.concatenate([onsets_s, response_s]), 0.0,
                                        ["stimulus"] * len(onsets_s) + ["response"] * len(response_s)))
    return raw


def write_cap_example(stem: str, cap: str, kind: str, image: np.ndarray, label: int, subject: int, out: Path,
                      rng: np.random.Generator) -> tuple[list[Path], dict]:
    """Simulate on ``cap`` and write one example: (files written, main file first; its index entry)."""
    import mne
    import pybv

    from neuroimagen.data.caps import cap_info

    sim = EEGSimulator(preset=PRESET, seed=0, montage=cap)
    names = list(sim.info.ch_names)
    entry: dict = {"cap": cap, "n_chans": len(names)}
    if kind == "bdf":  # one trial from onset, as a BioSemi recording cut at the trigger
        sfreq = 512.0
        volts = sim.simulate(image[None], [label], [subject], rng, raw=True, n_samples=600)[0]
        path = write_trial(EEGTrial(data=resample(volts, sfreq), sfreq=sfreq, ch_names=names), out / f"{stem}.bdf")
        entry.update(format="BioSemi (BDF)", description="BioSemi BDF, 64 ch (A1..B32)",
                     sfreq=sfreq)
        return [path], entry
    n_events = {"brainvision": 3, "fif": 5, "epochs": 3}[kind]
    sfreq = {"brainvision": 500.0, "fif": 250.0, "epochs": 250.0}[kind]
    volts, onsets = continuous(sim, image, label, subject, n_events, rng)
    data = resample(volts, sfreq)
    onsets_s = onsets / SFREQ
    response_s = np.round((onsets_s + rng.uniform(*RESPONSE_S, n_events)) * sfreq) / sfreq
    if kind == "brainvision":  # BrainVision Recorder's 16-bit integers at 0.1 uV, reference FCz (actiCAP 32)
        events = [{"onset": int(round(t * sfreq)), "description": 1, "type": "Stimulus"} for t in onsets_s]
        events += [{"onset": int(round(t * sfreq)), "description": 1, "type": "Response"} for t in response_s]
        pybv.write_brainvision(data=data, sfreq=sfreq, ch_names=names, ref_ch_names="FCz", fname_base=stem,
                               folder_out=out, events=sorted(events, key=lambda e: e["onset"]), resolution=0.1,
                               unit="µV", fmt="binary_int16", overwrite=True)
        files = [out / f"{stem}{ext}" for ext in (".vhdr", ".eeg", ".vmrk")]
        entry.update(format="BrainVision", description=f"BrainVision, {len(names)} ch")
    elif kind == "fif":
        raw = _raw(data, cap_info(cap, sfreq=sfreq), onsets_s, response_s)
        path = out / f"{stem}.fif"
        raw.save(path, fmt="short", overwrite=True, verbose="error")
        files = [path]
        entry.update(format="MNE (FIF)", description=f"FIF, {len(names)} ch, {n_events} events")
    else:  # epochs of the stimulus, -200 to +500 ms, baseline before onset
        raw = _raw(data, cap_info(cap, sfreq=sfreq), onsets_s, response_s)
        events, event_id = mne.events_from_annotations(raw, event_id={"stimulus": 1}, verbose="error")
        epochs = mne.Epochs(raw, events, event_id, tmin=-0.2, tmax=0.5, baseline=(None, 0), preload=True,
                            verbose="error")
        path = out / f"{stem}.fif"
        epochs.save(path, overwrite=True, verbose="error")
        files = [path]
        entry.update(format="MNE epochs (FIF)", description=f"FIF epochs, {len(names)} ch",
                     tmin=-0.2)
    entry["sfreq"] = sfreq
    return files, entry


def write_cap_examples(args, out: Path) -> list[dict]:
    """The recordings on other caps (CAP_EXAMPLES), each with its stimulus PNG. Returns their index entries."""
    from PIL import Image

    from neuroimagen.data.classes import CLASS_NAMES
    from neuroimagen.data.simulate import make_image_splits

    records = load_stimulus_metadata(args.stimuli)
    classes = np.array([r.class_index for r in records])
    test = make_image_splits(classes, 0)["test"]  # the simulated data set's held-out images
    entries = []
    for k, (stem, cap, class_name, subject, kind) in enumerate(CAP_EXAMPLES):
        label = CLASS_NAMES.index(class_name)
        r = records[int(test[classes[test] == label][0])]
        image = load_stimulus_images(args.stimuli, [r])[0]
        rng = np.random.default_rng([args.seed, 20, k])
        files, entry = write_cap_example(stem, cap, kind, image, label, subject, out, rng)
        png = out / f"{r.image}.png"
        Image.fromarray(image).save(png)
        entries.append({"file": files[0].name, "companions": [f.name for f in files[1:]], **entry,
                        "label": label, "class_name": class_name, "subject": subject, "image": r.image,
                        "stimulus": png.name})
        size = sum(f.stat().st_size for f in files) / 1024
        print(f"wrote {', '.join(f.name for f in files)} ({cap}, {class_name}, subject {subject}): {size:.0f} KB")
    return entries


def write_formats_index(out: Path, entries: list[dict]) -> None:
    """``formats/index.json``: these entries, the earlier ones of files not rewritten now, and the model-layout
    files of the first example trial (when written before), each with its events (``read_events``) and the
    SHA-256 of its file."""
    from neuroimagen.data import read_events

    fmt_dir = out / "formats"
    index = fmt_dir / "index.json"
    old = json.loads(index.read_text())["formats"] if index.is_file() else []
    if (out / "index.json").is_file():
        first = json.loads((out / "index.json").read_text())["examples"][0]
        stem = Path(first["file"]).stem
        old += [model_layout_entry(fmt_dir / f"{stem}{ext}", first) for ext in FORMATS
                if (fmt_dir / f"{stem}{ext}").is_file()]
    new = {e["file"] for e in entries}
    kept = {e["file"]: e for e in old if e["file"] not in new and (fmt_dir / e["file"]).is_file()}
    merged = sorted([*kept.values(), *entries], key=lambda e: e["file"])
    for e in merged:
        path = fmt_dir / e["file"]
        events = read_events(path, [fmt_dir / c for c in e.get("companions", [])])
        e["events"] = {name: [round(float(t), 4) for t in onsets] for name, onsets in events.items()}
        e["sha256"] = sha256(path)
    index.write_text(json.dumps({"formats": merged}, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stimuli", default="data/stimuli")
    p.add_argument("--data", default="data/sim_demo.pth", help="the simulated data set whose splits to honour")
    p.add_argument("--splits", default="data/sim_demo_splits.pth")
    p.add_argument("--out", default="examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("trials", "caps"), default=None, help="write only this part (default: both)")
    args = p.parse_args()

    out = Path(args.out)
    fmt_dir = out / "formats"
    fmt_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    if args.only in (None, "trials"):
        entries += write_trials(args, out)
    if args.only in (None, "caps"):
        entries += write_cap_examples(args, fmt_dir)
    write_formats_index(out, entries)


if __name__ == "__main__":
    main()
