"""Put a run's EEG stages into a copy of a checkpoint, keeping its VAE, UNet, scheduler and classifier.

The EEG stages (encoder, saliency, semantic with its caption bank, layout) train in minutes; the diffusion
stages in CPU-hours. When only the EEG side changes (e.g. channel-subset augmentation, ``cap_augment``), this
makes the new pipeline without touching the rest::

    for s in encoder saliency semantic layout; do python -m neuroimagen.train $s --config configs/tiny.json; done
    python scripts/swap_eeg_stages.py --run runs/tiny --out runs/tiny/candidate
    python scripts/swap_eeg_stages.py --run runs/tiny --out checkpoints/neuroimagen-tiny  # ship it

The stage folders are found as ``neuroimagen.training.assemble`` finds them; the checkpoint's other files (the
evaluation classifier, the model card) are copied unchanged. The run's stage ``metrics.json`` files are copied
beside the card as ``eeg_stage_metrics/<stage>.json``, and ``training_metrics.json`` gets their summaries in
place of the old stages' (with a note naming the run and the date), so the card's Training table describes the
weights it ships; ``python -m neuroimagen.training.assemble --config configs/tiny.json`` then rewrites the card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def swap(run: Path, out: Path, checkpoint: Path) -> Path:
    from neuroimagen.models import CaptionBank, EEGEncoder, LayoutPrior, SaliencyGenerator, SemanticDecoder
    from neuroimagen.training.assemble import find_model_dir

    new = {"eeg_encoder": EEGEncoder.from_pretrained(find_model_dir(run / "encoder", "EEGEncoder")),
           "saliency_generator": SaliencyGenerator.from_pretrained(find_model_dir(run / "saliency", "SaliencyGenerator")),
           "semantic_decoder": SemanticDecoder.from_pretrained(find_model_dir(run / "semantic", "SemanticDecoder")),
           "caption_bank": CaptionBank.from_pretrained(find_model_dir(run / "semantic", "CaptionBank"))}
    if (checkpoint / "layout_prior").is_dir():
        new["layout_prior"] = LayoutPrior.from_pretrained(find_model_dir(run / "layout", "LayoutPrior"))
    if out.resolve() != checkpoint.resolve():
        shutil.copytree(checkpoint, out, dirs_exist_ok=True)
    for name, module in new.items():  # the same classes: model_index.json stays as it is
        shutil.rmtree(out / name, ignore_errors=True)
        module.save_pretrained(out / name)
    metrics = out / "eeg_stage_metrics"
    metrics.mkdir(exist_ok=True)
    swapped = []
    for stage in ("encoder", "saliency", "semantic", "layout"):
        if (run / stage / "metrics.json").is_file():
            shutil.copy(run / stage / "metrics.json", metrics / f"{stage}.json")
            swapped.append(stage)
    record_swap(out, run, swapped)
    return out


def record_swap(out: Path, run: Path, stages: list[str]) -> None:
    """Put the swapped stages' summaries into ``out/training_metrics.json`` (what the card's Training table reads)."""
    from neuroimagen.training.assemble import TRAINING_METRICS, stage_summary

    f = out / TRAINING_METRICS
    if not f.is_file() or not stages:
        return
    t = json.loads(f.read_text())
    for stage in stages:
        t["stages"][stage] = stage_summary(stage, json.loads((run / stage / "metrics.json").read_text()))
    where = _relative(run)
    note = (f"The {', '.join(stages)} stages were trained in {where} and put into this folder by "
            f"`python scripts/swap_eeg_stages.py --run {where} --out {_relative(out)}` on {time.strftime('%Y-%m-%d')}; their rows come from {where}/<stage>/metrics.json (copied to "
            f"eeg_stage_metrics/), the others' from {t.get('run')}.")
    assembled = t.setdefault("assembly_note", t.get("note"))  # the note of the assembly, kept across swaps
    t["note"] = " ".join(x for x in (assembled, note) if x)
    f.write_text(json.dumps(t, indent=1) + "\n")


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the run folder holding encoder/, saliency/, semantic/, layout/")
    p.add_argument("--out", required=True, help="the pipeline folder to write")
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "neuroimagen-tiny"),
                   help="the checkpoint whose other components are kept (default: %(default)s)")
    args = p.parse_args(argv)
    print(swap(Path(args.run), Path(args.out), Path(args.checkpoint)))


if __name__ == "__main__":
    main()
