"""How well a checkpoint decodes the class from caps other than its own, and from people it never saw.

For each standard cap (``neuroimagen.data.caps.STANDARD_CAPS``: actiCAP 128, 10-10 64, BioSemi 64 with its
native A1..B32 names, 10-20 32, 10-20 19, occipito-parietal 8, plus smaller occipital sets to find the floor),
held-out test images are simulated **on that cap** (its own positions and names, not cut from the 128),
as raw volts, then read the way an upload is: ``preprocess`` places the channels by their names and
interpolates the model's 128 (spherical splines), and the checkpoint decodes the class (`pipe.decode_class`: its class
decoder mixed with the caption readout, or the readout alone in a checkpoint without one).
The trained subjects (1-6) and new people of the same population (7-10) are reported apart.

    python scripts/cap_accuracy.py --checkpoint checkpoints/neuroimagen-tiny --preset demo --out reports/caps/demo
    python scripts/cap_accuracy.py --preset realistic --checkpoint runs/tiny-realistic/pipeline \\
        --out reports/caps/realistic

Writes ``metrics.json`` (per cap: channels, top-1, top-5, trials; the chance level; the wall time) and
``README.md`` (the table) in ``--out``, and ``accuracy_vs_channels.png``. ``neuroimagen.data.preprocessing``
takes its floor (``MIN_CHANNELS``) from these numbers, and the app reads ``reports/caps/demo/metrics.json``
to show an upload's expected accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLOOR_CAPS = {"occipital 6": ("O1", "Oz", "O2", "PO3", "POz", "PO4"), "occipital 4": ("O1", "Oz", "O2", "POz"),
              "occipital 3": ("O1", "Oz", "O2")}


def _caps():
    from neuroimagen.data.caps import cap_info, standard_caps

    caps = list(standard_caps())
    caps += [(name, cap_info("easycap-M1", list(names))) for name, names in FLOOR_CAPS.items()]
    return caps


def _test_images(stimuli: Path, per_class: int, seed: int):
    from neuroimagen.data.simulate import make_image_splits
    from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata

    records = load_stimulus_metadata(stimuli)
    classes = np.array([r.class_index for r in records])
    test = make_image_splits(classes, seed)["test"]
    keep = np.concatenate([test[classes[test] == c][:per_class] for c in np.unique(classes)])
    return load_stimulus_images(stimuli, [records[i] for i in keep]), classes[keep]


def decode(pipe, trials) -> np.ndarray:
    """Class probabilities of preprocessed trials: the class the pipeline decodes (``pipe.decode_class``)."""
    import torch

    x = torch.from_numpy(np.stack([t.data for t in trials])).float()
    return pipe.decode_class(x, k=1)["class_probs"].numpy()


def measure(pipe, preset: str, images, labels, subjects: list[int], seed: int) -> dict:
    from neuroimagen.data import EEGTrial, preprocess
    from neuroimagen.data.simulate import EEGSimulator

    out = {}
    for name, info in _caps():
        t0 = time.perf_counter()
        sim = EEGSimulator(preset, seed=0, montage=info)
        rng = np.random.default_rng([seed, len(info.ch_names)])
        rows = {}
        for group, subj in (("trained subjects", [s for s in subjects if s <= 6]),
                            ("new subjects", [s for s in subjects if s > 6])):
            if not subj:
                continue
            subj_of = np.resize(np.array(subj), len(images))
            volts = sim.simulate(images, labels, subj_of, rng, raw=True)
            trials = [preprocess(EEGTrial(v, 1000.0, list(info.ch_names)), min_channels=1) for v in volts]  # the floor is measured here
            probs = decode(pipe, trials)
            top5 = np.argsort(-probs, axis=1)[:, :5]
            rows[group] = {"top1": round(float((top5[:, 0] == labels).mean()), 4),
                           "top5": round(float((top5 == labels[:, None]).any(1).mean()), 4), "trials": len(labels),
                           "subjects": subj}
        out[name] = {"n_chans": len(info.ch_names), "scheme": trials[0].info["channels"]["scheme"], **rows,
                     "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[caps] {name:22s} {len(info.ch_names):3d} ch  " + "  ".join(
            f"{g}: top-1 {r['top1']:.3f}" for g, r in rows.items()), file=sys.stderr)
    return out


def write_report(metrics: dict, out: Path) -> None:
    caps = metrics["caps"]
    lines = [f"# Decoding the class from other caps ({metrics['preset']} preset)", "",
             f"Checkpoint `{metrics['checkpoint']}`; {metrics['per_class']} held-out test images per class, simulated "
             f"on each cap (its own positions and names), read as uploads (channels placed by name, the model's 128 "
             f"interpolated); the decoded class (`decode_class`), 40 classes (chance {100 / 40:.1f} %). Made by `{metrics['command']}` "
             f"in {metrics['seconds']:.0f} s.", "",
             "| cap | channels | read as | top-1 (subjects 1-6) | top-5 | top-1 (new subjects 7-10) | top-5 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in caps.items():
        t, n = r.get("trained subjects", {}), r.get("new subjects", {})
        cell = lambda d, k: f"{100 * d[k]:.1f} %" if k in d else "-"  # noqa: E731
        lines.append(f"| {name} | {r['n_chans']} | {r['scheme']} | {cell(t, 'top1')} | {cell(t, 'top5')} | "
                     f"{cell(n, 'top1')} | {cell(n, 'top5')} |")
    lines += ["", "![top-1 against channel count](accuracy_vs_channels.png)", ""]
    (out / "README.md").write_text("\n".join(lines))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for group, marker in (("trained subjects", "o"), ("new subjects", "s")):
        pts = sorted((r["n_chans"], r[group]["top1"]) for r in caps.values() if group in r)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=group)
    ax.axhline(1 / 40, color="grey", ls=":", label="chance")
    ax.set(xscale="log", xlabel="channels in the cap", ylabel="top-1 (40 classes)", ylim=(0, 1),
           title=f"Class decoded from other caps ({metrics['preset']})")
    ax.legend()
    fig.savefig(out / "accuracy_vs_channels.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "neuroimagen-tiny"))
    p.add_argument("--stimuli", default=str(ROOT / "data" / "stimuli"))
    p.add_argument("--preset", default="demo", choices=["demo", "realistic"])
    p.add_argument("--per-class", type=int, default=3, help="held-out test images per class (default: 3)")
    p.add_argument("--subjects", default="1-10", help="subjects to simulate; above 6 are new people (default 1-10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "reports" / "caps" / "demo"))
    args = p.parse_args(argv)
    import torch

    from neuroimagen import NeuroImagenPipeline

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    lo, _, hi = args.subjects.partition("-")
    subjects = list(range(int(lo), int(hi or lo) + 1))
    pipe = NeuroImagenPipeline.from_pretrained(args.checkpoint)
    images, labels = _test_images(Path(args.stimuli), args.per_class, args.seed)
    caps = measure(pipe, args.preset, images, labels, subjects, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/cap_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    metrics = {"preset": args.preset, "checkpoint": str(Path(args.checkpoint)), "per_class": args.per_class,
               "chance": 1 / 40, "caps": caps, "command": command.strip(),
               "seconds": round(time.perf_counter() - t0, 1)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    write_report(metrics, out)
    print(json.dumps({k: {g: v[g]["top1"] for g in v if isinstance(v[g], dict)} for k, v in caps.items()}))


if __name__ == "__main__":
    main()
