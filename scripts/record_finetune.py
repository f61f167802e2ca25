"""Record in a checkpoint the ``finetune`` rounds its VAE and UNet came from, when the rounds ran as separate runs.

``python -m neuroimagen.train finetune`` runs the rounds in one run folder and ``assemble`` (``finetuned``) records
them. Rounds run before that stage existed, each as a run of its own (a ``vae`` and a ``unet`` stage with
``init_from``, as issue 22's configs tiny-v3 and tiny-v4 did), and whose last round's weights were then copied into a
checkpoint, get the same record with this::

    python scripts/record_finetune.py --rounds runs/tiny-v3 runs/tiny-v4 --out checkpoints/neuroimagen-tiny

Each round folder must hold ``vae/`` and ``unet/`` with their ``metrics.json``. The checkpoint's VAE must be the last
round's, weight for weight, and its UNet the last round's (in the checkpoint's dtype): else nothing is written. The
rounds' ``metrics.json`` files are copied to ``<out>/finetune_metrics/`` (the ``finetune`` stage's layout),
``training_metrics.json`` gets a ``vae round <i>`` and ``unet round <i>`` row after ``unet`` with a note naming this
command, and ``training.json`` is made again from it; ``python -m neuroimagen.training.assemble --config ...`` then
rewrites the card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("vae", "unet")
NOTE = "The VAE and UNet were fine-tuned"  # how this script's note in training_metrics.json begins


def check_same_weights(checkpoint: Path, last_round: Path) -> None:
    """Raise ``SystemExit`` unless the checkpoint's vae/ and unet/ hold the last round's weights."""
    from safetensors.torch import load_file

    for phase in PHASES:
        for folder in (checkpoint, last_round):
            if not list((folder / phase).glob("*.safetensors")):
                raise SystemExit(f"No {phase} weights in {folder / phase}: expected --out to be a checkpoint folder "
                                 "and each round folder to hold vae/ and unet/.")
        ours = load_file(next((checkpoint / phase).glob("*.safetensors")))
        theirs = load_file(next((last_round / phase).glob("*.safetensors")))
        same = ours.keys() == theirs.keys() and all(
            (ours[k] == theirs[k].to(ours[k].dtype)).all() for k in ours)
        if not same:
            raise SystemExit(f"{checkpoint / phase} does not hold the weights of {last_round / phase}: expected the "
                             "checkpoint to ship the last round's VAE and UNet (copy them in first); nothing written.")


def record(rounds: list[Path], out: Path) -> Path:
    from neuroimagen.training.assemble import TRAINING_METRICS, with_finetune_rounds, write_training_json

    sys.path.insert(0, str(Path(__file__).parent))
    from swap_eeg_stages import _relative, append_note  # the same note and paths as a swap of EEG stages

    for r in rounds:
        missing = [p for p in PHASES if not (r / p / "metrics.json").is_file()]
        if missing:
            raise SystemExit(f"{r}: no {', '.join(missing)}/metrics.json: expected each round folder to hold the vae/ "
                             "and unet/ of one finished fine-tune round.")
    check_same_weights(out, rounds[-1])
    dest = out / "finetune_metrics"
    shutil.rmtree(dest, ignore_errors=True)
    for i, r in enumerate(rounds, 1):
        for p in PHASES:
            (dest / f"round{i}" / p).mkdir(parents=True)
            shutil.copy(r / p / "metrics.json", dest / f"round{i}" / p / "metrics.json")
    (dest / "metrics.json").write_text(json.dumps({"stage": "finetune", "rounds": [str(_relative(r)) for r in rounds]},
                                                  indent=1) + "\n")
    f = out / TRAINING_METRICS
    t = json.loads(f.read_text())
    stages = {s: d for s, d in t["stages"].items() if not s.startswith(("vae round", "unet round"))}
    t["stages"] = with_finetune_rounds(stages, dest)
    t["shipped"]["finetuned"] = True
    where = " ".join(str(_relative(r)) for r in rounds)
    t["swap_notes"] = [n for n in t.get("swap_notes", []) if not n.startswith(NOTE)]  # recorded again: once
    append_note(t, f"{NOTE} in {len(rounds)} rounds ({where}, the finetune stage's rounds of "
                   "configs/tiny.json run as separate runs) and put into this folder; `python scripts/record_finetune.py "
                   f"--rounds {where} --out {_relative(out)}` recorded them on {time.strftime('%Y-%m-%d')} (their "
                   "metrics.json files are in finetune_metrics/).")
    f.write_text(json.dumps(t, indent=1) + "\n")
    write_training_json(out)
    return out


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", nargs="+", required=True, help="the round folders, in order, each with vae/ and unet/")
    p.add_argument("--out", required=True, help="the checkpoint that ships the last round's VAE and UNet")
    args = p.parse_args(argv)
    print(record([Path(r) for r in args.rounds], Path(args.out)))


if __name__ == "__main__":
    main()
