"""How well each evaluation classifier names the class of stimuli, of degraded stimuli and of VAE round trips.

A reconstruction is a blurred, noisy, low-resolution, colour-shifted version of its stimulus: a classifier that
only recognises sharp stimuli scores sharpness rather than class. For the held-out test stimuli (the images whose
reconstructions ``python -m neuroimagen.evaluate`` scores), each classifier is measured on the images as they
are, under the fixed degradations of ``neuroimagen.training.classifier.DEGRADATIONS`` (Gaussian blur, pixel noise,
down-up scaling, JPEG), after a round trip through the checkpoint's VAE (encode, posterior mean, decode), and on
freshly rendered stimuli of another seed (never in the data set nor in either classifier's training renders).

    nice -n 10 python scripts/classifier_robustness.py --checkpoint checkpoints/neuroimagen-tiny \\
        --classifiers eval_classifier eval_classifier_robust --out reports/classifier

Writes ``metrics.json`` (top-1 per classifier and condition, the command, the wall time) and ``README.md`` (the
table and the command) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch


def _test_stimuli(data: str, splits: str, stimuli: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's stimuli as float (n, 3, H, W) in [-1, 1] and their classes."""
    from neuroimagen.data.stimuli import load_stimulus_metadata
    from neuroimagen.training.classifier import split_images
    from neuroimagen.training.config import Paths
    from neuroimagen.training.images import stimulus_images

    rows = torch.from_numpy(split_images(Paths(data=data, splits=splits, stimuli=stimuli), "test"))
    y = torch.tensor([r.class_index for r in load_stimulus_metadata(stimuli)])
    return stimulus_images(stimuli)[rows], y[rows]


def _fresh_stimuli(per_class: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` stimuli per class rendered with ``seed`` (into a temporary folder) and their classes."""
    from neuroimagen.data.stimuli import load_stimulus_metadata, make_stimulus_set
    from neuroimagen.training.images import stimulus_images

    with tempfile.TemporaryDirectory() as d:
        make_stimulus_set(d, size=size, per_class=per_class, seed=seed)
        return stimulus_images(d), torch.tensor([r.class_index for r in load_stimulus_metadata(d)])


@torch.no_grad()
def vae_round_trip(vae, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Images through the VAE: the posterior mean decoded, clamped to [-1, 1]."""
    from neuroimagen.training.images import encode_latents

    mean, _ = encode_latents(vae, x, batch)
    return torch.cat([vae.decode(mean[i:i + batch]).sample for i in range(0, len(mean), batch)]).clamp(-1, 1)


def conditions(x: torch.Tensor, vae, seed: int) -> dict[str, torch.Tensor]:
    """The test images under each condition: as they are, each of ``DEGRADATIONS``, the VAE round trip."""
    from neuroimagen.training.classifier import DEGRADATIONS

    g = torch.Generator().manual_seed(seed)
    out = {"stimuli": x, **{name: f(x, g) for name, f in DEGRADATIONS.items()}}
    if vae is not None:
        out["VAE round trip"] = vae_round_trip(vae, x)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/neuroimagen-tiny", help="pipeline folder (its vae/)")
    p.add_argument("--classifiers", nargs="+", default=["eval_classifier", "eval_classifier_robust"],
                   help="ImageClassifier folders, relative to --checkpoint or not")
    p.add_argument("--data", default="data/sim_demo.pth")
    p.add_argument("--splits", default="data/sim_demo_splits.pth")
    p.add_argument("--stimuli", default="data/stimuli")
    p.add_argument("--fresh-per-class", type=int, default=10, help="fresh renders per class (0: none)")
    p.add_argument("--fresh-seed", type=int, default=7, help="their seed (data set: 0; classifiers' renders: 1)")
    p.add_argument("--seed", type=int, default=0, help="seeds the noise degradations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="reports/classifier")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    from neuroimagen.evaluate import load_classifier
    from neuroimagen.training.classifier import accuracy

    t0 = time.perf_counter()
    ckpt = Path(args.checkpoint)
    clf_dirs = {c: ckpt / c if (ckpt / c).is_dir() else Path(c) for c in args.classifiers}
    classifiers = {c: load_classifier(d) for c, d in clf_dirs.items()}
    vae = AutoencoderKL.from_pretrained(ckpt / "vae").eval() if (ckpt / "vae").is_dir() else None
    x, y = _test_stimuli(args.data, args.splits, args.stimuli)
    sets = {"test stimuli": (conditions(x, vae, args.seed), y)}
    if args.fresh_per_class:
        fx, fy = _fresh_stimuli(args.fresh_per_class, args.fresh_seed, x.shape[-1])
        sets[f"fresh renders (seed {args.fresh_seed})"] = (conditions(fx, vae, args.seed), fy)
    acc = {c: {s: {cond: accuracy(m, imgs, yy) for cond, imgs in conds.items()} for s, (conds, yy) in sets.items()}
           for c, m in classifiers.items()}
    metrics = {"command": "python scripts/classifier_robustness.py " + shlex.join(argv or sys.argv[1:]),
               "checkpoint": str(ckpt), "classifiers": {c: str(d) for c, d in clf_dirs.items()},
               "n_images": {s: len(yy) for s, (_, yy) in sets.items()}, "top1": acc,
               "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    names = list(classifiers)
    lines = ["# The evaluation classifiers on stimuli, degraded stimuli and VAE round trips", "",
             "Top-1 (40 classes, chance 2.5 %) of each classifier. Made by:", "", "```bash",
             "nice -n 10 " + metrics["command"], "```", "",
             f"Test stimuli: the {metrics['n_images']['test stimuli']} images of `{args.data}`'s test split (the "
             "images whose reconstructions the evaluation scores); the degradations are "
             "`neuroimagen.training.classifier.DEGRADATIONS` (images in [-1, 1]: noise std 0.1 is 0.05 of the "
             f"0-1 range); the VAE round trip goes through `{ckpt / 'vae'}` (posterior mean). Fresh renders: "
             "stimuli drawn with another seed, never seen by the data set nor by the classifiers' training.", ""]
    for s in sets:
        lines += [f"## {s}", "", "| condition | " + " | ".join(f"`{c}`" for c in names) + " |",
                  "|---|" + "---:|" * len(names)]
        lines += [f"| {cond} | " + " | ".join(f"{100 * acc[c][s][cond]:.1f} %" for c in names) + " |"
                  for cond in acc[names[0]][s]]
        lines.append("")
    lines.append(f"Wall time {metrics['wall_s']} s.")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(acc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
