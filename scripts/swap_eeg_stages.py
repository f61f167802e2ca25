"""Put a run's EEG stages into a copy of a checkpoint, keeping its VAE, UNet, scheduler and classifier.

The EEG stages (encoder, saliency, semantic with its caption bank, layout) train in minutes; the diffusion
stages in CPU-hours. When only the EEG side changes (e.g. ``configs/tiny-caps.json``, channel-subset
augmentation), this makes the new pipeline without touching the rest::

    python scripts/swap_eeg_stages.py --run runs/tiny-caps --out runs/tiny-caps/pipeline
    python scripts/swap_eeg_stages.py --run runs/tiny-caps --out checkpoints/neuroimagen-tiny  # ship it

The stage folders are found as ``neuroimagen.training.assemble`` finds them; the checkpoint's other files
(its model card, ``training_metrics.json``, the evaluation classifier) are copied unchanged, and the run's
stage ``metrics.json`` files are copied beside the card as ``eeg_stage_metrics/<stage>.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
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
    for stage in ("encoder", "saliency", "semantic", "layout"):
        if (run / stage / "metrics.json").is_file():
            shutil.copy(run / stage / "metrics.json", metrics / f"{stage}.json")
    return out


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
