"""Put a run's EEG stages into a copy of a checkpoint, keeping its VAE, UNet, scheduler and classifier.

The EEG stages (encoder, saliency, semantic with its caption bank, layout) train in minutes; the diffusion
stages in CPU-hours. When only the EEG side changes (e.g. channel-subset augmentation, ``cap_augment``), this
makes the new pipeline without touching the rest::

    for s in encoder saliency semantic layout; do python -m neuroimagen.train $s --config configs/tiny.json; done
    python scripts/swap_eeg_stages.py --run runs/tiny --out runs/tiny/candidate
    python scripts/swap_eeg_stages.py --run runs/tiny --out checkpoints/neuroimagen-tiny  # ship it
    python scripts/swap_eeg_stages.py --run runs/tiny --stages class_decoder --out checkpoints/neuroimagen-tiny

``--stages`` picks which (default: encoder, saliency, semantic and, when the checkpoint has a layout prior,
layout); a component the checkpoint does not have yet (``class_decoder``) is added to ``model_index.json``.

The stage folders are found as ``neuroimagen.training.assemble`` finds them; the checkpoint's other files (the
evaluation classifier, the model card) are copied unchanged. The run's stage ``metrics.json`` files are copied
beside the card as ``eeg_stage_metrics/<stage>.json``, and ``training_metrics.json`` gets their summaries in
place of the old stages' (with a note naming the run and the date), and ``training.json`` (each stage's CPU and
wall seconds and steps) is made again from it, so the card's Training table describes the weights it ships;
``python -m neuroimagen.training.assemble --config configs/tiny.json`` then rewrites the card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# stage -> the pipeline components it trains (component name, class name)
STAGE_COMPONENTS = {"encoder": [("eeg_encoder", "EEGEncoder")], "saliency": [("saliency_generator", "SaliencyGenerator")],
                    "semantic": [("semantic_decoder", "SemanticDecoder"), ("caption_bank", "CaptionBank")],
                    "layout": [("layout_prior", "LayoutPrior")], "class_decoder": [("class_decoder", "ClassDecoder")]}


def swap(run: Path, out: Path, checkpoint: Path, stages: list[str] | None = None) -> Path:
    from neuroimagen import models
    from neuroimagen.training.assemble import find_model_dir

    if stages is None:
        stages = ["encoder", "saliency", "semantic"] + (["layout"] if (checkpoint / "layout_prior").is_dir() else [])
    unknown = sorted(set(stages) - set(STAGE_COMPONENTS))
    if unknown:
        raise SystemExit(f"Unknown stages {unknown}: expected some of {sorted(STAGE_COMPONENTS)}.")
    new = {name: getattr(models, cls).from_pretrained(find_model_dir(run / stage, cls))
           for stage in stages for name, cls in STAGE_COMPONENTS[stage]}
    if out.resolve() != checkpoint.resolve():
        shutil.copytree(checkpoint, out, dirs_exist_ok=True)
    index_file = out / "model_index.json"
    index = json.loads(index_file.read_text())
    for name, module in new.items():
        shutil.rmtree(out / name, ignore_errors=True)
        module.save_pretrained(out / name)
        index[name] = [type(module).__module__, type(module).__name__]  # a new component is registered
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    metrics = out / "eeg_stage_metrics"
    metrics.mkdir(exist_ok=True)
    swapped = []
    for stage in stages:
        if (run / stage / "metrics.json").is_file():
            shutil.copy(run / stage / "metrics.json", metrics / f"{stage}.json")
            swapped.append(stage)
    record_swap(out, run, swapped)
    return out


def record_swap(out: Path, run: Path, stages: list[str]) -> None:
    """Put the swapped stages' summaries into ``out/training_metrics.json`` and make ``out/training.json`` again from
    it (what the card's Training table reads)."""
    from neuroimagen.training.assemble import TRAINING_METRICS, stage_summary, write_training_json

    f = out / TRAINING_METRICS
    if not f.is_file() or not stages:
        return
    t = json.loads(f.read_text())
    for stage in stages:
        t["stages"][stage] = stage_summary(stage, json.loads((run / stage / "metrics.json").read_text()))
    where = _relative(run)
    note = (f"The {', '.join(stages)} stage{'s were' if len(stages) > 1 else ' was'} trained in {where} and put into "
            f"this folder by `python scripts/swap_eeg_stages.py --run {where} --stages {','.join(stages)} --out "
            f"{_relative(out)}` on {time.strftime('%Y-%m-%d')}; {'their rows come' if len(stages) > 1 else 'its row comes'} "
            f"from {where}/<stage>/metrics.json (copied to eeg_stage_metrics/).")
    append_note(t, note)
    f.write_text(json.dumps(t, indent=1) + "\n")
    write_training_json(out)


def append_note(t: dict, note: str) -> None:
    """Add ``note`` (what was put into an assembled folder, by which command) to a ``training_metrics.json``'s
    ``swap_notes`` and its ``note`` (the card prints it under the Training table), after the assembly's own."""
    assembled = t.setdefault("assembly_note", t.get("note"))  # the note of the assembly, kept across swaps
    swaps = t.setdefault("swap_notes", [])  # every swap's note, in order
    if not swaps and assembled and t.get("note", "").startswith(assembled) and t["note"] != assembled:
        swaps.append(t["note"][len(assembled):].strip())  # a swap recorded before swap_notes existed
    swaps.append(note)
    t["note"] = " ".join(x for x in (assembled, *swaps) if x)


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
    p.add_argument("--stages", default=None, help="comma-separated stages to put in (default: encoder, saliency, "
                   "semantic and, when the checkpoint has a layout prior, layout)")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    print(swap(Path(args.run), Path(args.out), Path(args.checkpoint), stages))


if __name__ == "__main__":
    main()
