"""Train one stage, or all of them: ``python -m neuroimagen.train STAGE --config configs/tiny.json``.

Stages, in the order ``all`` runs them::

    python -m neuroimagen.train vae        --config configs/tiny.json   # AutoencoderKL on the stimulus set
    python -m neuroimagen.train unet       --config configs/tiny.json   # caption-conditioned UNet on VAE latents
    python -m neuroimagen.train encoder    --config configs/tiny.json   # EEG encoder, triplet loss
    python -m neuroimagen.train saliency   --config configs/tiny.json   # saliency GAN on encoder features
    python -m neuroimagen.train semantic   --config configs/tiny.json   # EEG -> caption states
    python -m neuroimagen.train classifier --config configs/tiny.json   # image classifier for evaluation
    python -m neuroimagen.train assemble   --config configs/tiny.json   # write the pipeline folder
    python -m neuroimagen.train all        --config configs/tiny.json

``--data/--splits/--stimuli/--out`` override the config's ``paths``; ``--resume`` continues from the
stage's last checkpoint. Several GPUs: ``accelerate launch -m neuroimagen.train STAGE ...``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

STAGES = ("vae", "unet", "encoder", "saliency", "semantic", "classifier", "assemble")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuroimagen.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES + ("all",))
    parser.add_argument("--config", required=True, help="JSON preset, e.g. configs/tiny.json")
    parser.add_argument("--data", help="EEG-ImageNet-format .pth (overrides paths.data)")
    parser.add_argument("--splits", help="splits .pth (overrides paths.splits)")
    parser.add_argument("--stimuli", help="stimulus folder (overrides paths.stimuli)")
    parser.add_argument("--out", help="run folder (overrides paths.out)")
    parser.add_argument("--resume", action="store_true", help="continue from the stage's last checkpoint")
    args = parser.parse_args(argv)

    from .training.config import load_config

    paths, stage_cfgs = load_config(args.config, overrides={k: getattr(args, k) for k in
                                                            ("data", "splits", "stimuli", "out")})
    for stage in STAGES if args.stage == "all" else (args.stage,):
        module = importlib.import_module(f".training.{stage}", __package__)
        cfg = module.Config(**stage_cfgs.get(stage, {}))
        t0 = time.process_time()
        w0 = time.perf_counter()
        metrics = module.train(cfg, paths, resume=args.resume)
        metrics = {**(metrics or {}), "cpu_time_s": round(time.process_time() - t0, 1),
                   "wall_time_s": round(time.perf_counter() - w0, 1)}
        print(json.dumps({"stage": stage, **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
