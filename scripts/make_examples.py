"""Write examples/: a dozen held-out trials for the app and the tests, and one trial per upload format.

    python scripts/make_examples.py [--stimuli data/stimuli] [--splits data/sim_demo_splits.pth] [--out examples]

Trials are simulated afresh (``EEGSimulator(preset="demo", seed=0)``, raw broadband volts at 1 kHz, the
way a recording would arrive) for stimuli of the TEST split, over 12 classes and all 6 subjects, so the
models never saw these images. Each ``.npz`` carries ``data, sfreq, ch_names, subject, label, stimulus``;
``index.json`` lists them. The first trial is also written as .npy, .pth, .fif, .edf, .bdf, .set and
.vhdr (with its .eeg/.vmrk) to show every upload format.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neuroimagen.data import EEGTrial, write_trial
from neuroimagen.data.montage import SFREQ, model_ch_names
from neuroimagen.data.simulate import EEGSimulator
from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata

N_EXAMPLES = 12
FORMATS = (".npy", ".pth", ".fif", ".edf", ".bdf", ".set", ".vhdr")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stimuli", default="data/stimuli")
    p.add_argument("--data", default="data/sim_demo.pth", help="the simulated data set whose splits to honour")
    p.add_argument("--splits", default="data/sim_demo_splits.pth")
    p.add_argument("--out", default="examples")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

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

    sim = EEGSimulator(preset="demo", n_subjects=6, seed=0)
    rng = np.random.default_rng(args.seed)
    eeg = sim.simulate(images[chosen], [records[i].class_index for i in chosen], subjects, rng, raw=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
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
            for ext in FORMATS:
                fmt_dir = out / "formats"
                fmt_dir.mkdir(exist_ok=True)
                write_trial(trial, fmt_dir / f"{name}{ext}")
    (out / "index.json").write_text(json.dumps({"examples": index}, indent=1))
    print(f"wrote {len(index)} examples and {len(FORMATS)} format examples to {out}")


if __name__ == "__main__":
    main()
