"""Train one stage, or all of them: ``python -m neuroimagen.train STAGE --config configs/tiny.json``.

Stages, in the order ``all`` runs them::

    python -m neuroimagen.train vae        --config configs/tiny.json   # AutoencoderKL on the stimulus set
    python -m neuroimagen.train decoder    --config configs/tiny.json   # optional: wider decoder, frozen VAE encoder
    python -m neuroimagen.train unet       --config configs/tiny.json   # caption-conditioned UNet on VAE latents
    python -m neuroimagen.train finetune   --config configs/tiny.json   # optional: rounds of VAE then UNet fine-tunes
    python -m neuroimagen.train encoder    --config configs/tiny.json   # EEG encoder, triplet loss
    python -m neuroimagen.train saliency   --config configs/tiny.json   # saliency GAN on encoder features
    python -m neuroimagen.train layout     --config configs/tiny.json   # optional: class templates + EEG -> object box
    python -m neuroimagen.train refine     --config configs/tiny.json   # optional: UNet fine-tuned to start from maps
    python -m neuroimagen.train semantic   --config configs/tiny.json   # EEG -> caption states
    python -m neuroimagen.train class_decoder --config configs/tiny.json  # optional: CNN for the decoded class
    python -m neuroimagen.train classifier --config configs/tiny.json   # image classifier for evaluation
    python -m neuroimagen.train assemble   --config configs/tiny.json   # write the pipeline folder
    python -m neuroimagen.train all        --config configs/tiny.json

``all`` runs ``decoder``, ``finetune``, ``layout``, ``refine`` and ``class_decoder`` only when the config has an entry
for them (``assemble`` ships the wide VAE when ``wide_decoder`` is true, the refined UNet when ``refined_unet`` is, the
last fine-tune round's VAE and UNet when ``finetuned`` is). A config's
top-level ``stages`` list, when there is one, is exactly what ``all`` runs (in the order above): the paper's
configuration (``configs/eeg-imagenet-sd15.json``) lists ``encoder``, ``saliency``, ``semantic`` and ``assemble``,
leaving out the tiny latent diffusion stages (Stable Diffusion replaces them), the layout prior and the classifier.
Every key of a config is checked before any stage runs (:func:`check_config`). ``--data/--splits/--stimuli/--out``
override the config's ``paths``; ``--resume`` continues from the stage's last checkpoint. ``--captions FILE`` (or
``"captions"`` in ``paths``) takes the detailed captions from a captions file (``python -m neuroimagen.data
captions``, BLIP as the paper), checked against the stimuli and copied to the run folder's ``captions.json`` as the
record of what the run was trained on. Several GPUs: ``accelerate launch -m neuroimagen.train STAGE ...``: the
EEG stages, the classifier and ``unet`` give each process its share of every batch (``batch_size`` is per process;
see :class:`~neuroimagen.training.common.EpochLoop` and docs/TRAINING.md), and only the main process writes and
prints; ``vae``, ``decoder`` and ``refine`` do not share yet (run them in one process). ``--mixed-precision`` (or the
config's top-level ``"mixed_precision"``) sets the stages' autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from pathlib import Path

STAGES = ("vae", "decoder", "unet", "finetune", "encoder", "saliency", "layout", "refine", "semantic", "class_decoder",
          "classifier", "assemble")
OPTIONAL = ("decoder", "finetune", "layout", "refine", "class_decoder")  # ``all`` runs these only when the config has an entry for them
RUN_KEYS = ("stages", "mixed_precision")  # a config's top-level settings of the whole run, beside the stage entries


def stages_to_run(stage: str, stage_cfgs: dict) -> list[str]:
    """The stages ``stage`` names, in order: ``all`` is the config's ``stages`` list when it has one, else every
    stage but the optional ones the config leaves out."""
    if stage != "all":
        return [stage]
    if "stages" in stage_cfgs:
        return [s for s in STAGES if s in stage_cfgs["stages"]]
    return [s for s in STAGES if s not in OPTIONAL or s in stage_cfgs]


def check_config(stage_cfgs: dict, source: str = "the config") -> None:
    """Raise a ``ValueError`` naming the first unknown stage, ``stages`` entry or stage key of a preset.

    ``stage_cfgs`` is what :func:`~neuroimagen.training.config.load_config` returns besides the paths: one dict per
    stage, and optionally ``stages``, the list ``all`` runs. Each stage's keys must be fields of its ``Config``.
    """
    from dataclasses import fields

    from .training.common import MIXED_PRECISION

    unknown = sorted(set(stage_cfgs) - set(STAGES) - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"Unknown entries {unknown} in {source}: expected 'paths', 'stages', 'mixed_precision', keys "
                         f"starting with '_' (comments) or stage names {list(STAGES)}.")
    mp = stage_cfgs.get("mixed_precision", "no")
    if mp not in MIXED_PRECISION:
        raise ValueError(f"'mixed_precision' in {source} must be one of {list(MIXED_PRECISION)}, but got {mp!r}.")
    listed = stage_cfgs.get("stages", [])
    if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
        raise ValueError(f"'stages' in {source} must be a list of stage names, but got {listed!r}.")
    bad = sorted(set(listed) - set(STAGES))
    if bad:
        raise ValueError(f"Unknown stages {bad} in 'stages' of {source}: allowed: {list(STAGES)}.")
    for stage, cfg in stage_cfgs.items():
        if stage in RUN_KEYS:
            continue
        if not isinstance(cfg, dict):
            raise ValueError(f"The '{stage}' entry of {source} must be an object of settings, but got {cfg!r}.")
        module = importlib.import_module(f".training.{stage}", __package__)
        allowed = {f.name for f in fields(module.Config)}
        extra = sorted(set(cfg) - allowed)
        if extra:
            raise ValueError(f"Unknown keys in '{stage}' of {source}: {extra}; allowed: {sorted(allowed)}.")
        module.Config(**cfg)  # a stage's own checks of its values (finetune: each round's keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuroimagen.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES + ("all",))
    parser.add_argument("--config", required=True, help="JSON preset, e.g. configs/tiny.json")
    parser.add_argument("--data", help="EEG-ImageNet-format .pth (overrides paths.data)")
    parser.add_argument("--splits", help="splits .pth (overrides paths.splits)")
    parser.add_argument("--stimuli", help="stimulus folder (overrides paths.stimuli)")
    parser.add_argument("--out", help="run folder (overrides paths.out)")
    parser.add_argument("--captions", help="captions file from 'python -m neuroimagen.data captions' (overrides "
                        "paths.captions): the detailed captions, copied into the run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the stage's last checkpoint")
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                        help="autocast of the stages (overrides the config's 'mixed_precision' and accelerate launch's "
                        "--mixed_precision): fp16 on CUDA only (on a CPU it falls back to float32, with a warning), bf16 "
                        "on CUDA (Ampere or later) or CPU")
    args = parser.parse_args(argv)

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from .training.common import use_captions
    from .training.config import load_config

    paths, stage_cfgs = load_config(args.config, overrides={k: getattr(args, k) for k in
                                                            ("data", "splits", "stimuli", "out", "captions")})
    check_config(stage_cfgs, args.config)
    # One process, or one of several (accelerate launch, torchrun; on CPU with ACCELERATE_USE_CPU=1, as accelerate's
    # own Accelerator reads it): only the main one writes.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.is_main_process:
        use_captions(paths)
    with run_mixed_precision(args.mixed_precision or stage_cfgs.get("mixed_precision")):
        _run_stages(args, paths, stage_cfgs, state)
    return 0


@contextlib.contextmanager
def run_mixed_precision(mixed_precision: str | None):
    """Within the block, the stages' accelerators use ``mixed_precision`` (None: as the environment says), passed
    the way ``accelerate launch --mixed_precision`` passes it (``ACCELERATE_MIXED_PRECISION``); the environment is
    restored afterwards."""
    from .training.common import MIXED_PRECISION_ENV

    before = os.environ.get(MIXED_PRECISION_ENV)
    if mixed_precision is not None:
        os.environ[MIXED_PRECISION_ENV] = mixed_precision
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MIXED_PRECISION_ENV, None)
        else:
            os.environ[MIXED_PRECISION_ENV] = before


def _run_stages(args, paths, stage_cfgs: dict, state) -> None:
    """Run the stages ``args.stage`` names, in order, each with its config entry; the main process prints each
    stage's metrics and times."""
    for stage in stages_to_run(args.stage, stage_cfgs):
        module = importlib.import_module(f".training.{stage}", __package__)
        cfg = module.Config(**stage_cfgs.get(stage, {}))
        before = times_so_far(paths.stage_dir(stage)) if args.resume else (0.0, 0.0)  # the stage rewrites metrics.json
        t0 = time.process_time()
        w0 = time.perf_counter()
        metrics = module.train(cfg, paths, resume=args.resume)
        state.wait_for_everyone()  # the next stage reads what the main process wrote
        if not state.is_main_process:
            continue
        times = record_times(paths.stage_dir(stage), time.process_time() - t0, time.perf_counter() - w0, before)
        print(json.dumps({"stage": stage, **(metrics or {}), **times}))


def times_so_far(stage_dir) -> tuple[float, float]:
    """CPU and wall seconds recorded in the stage's metrics.json by its earlier runs (0 when none)."""
    f = Path(stage_dir) / "metrics.json"
    m = json.loads(f.read_text()) if f.is_file() else {}
    return float(m.get("cpu_time_s", 0.0)), float(m.get("wall_time_s", 0.0))


def record_times(stage_dir, cpu_s: float, wall_s: float, before: tuple[float, float] = (0.0, 0.0)) -> dict:
    """Write this run's CPU and wall time plus ``before`` (earlier runs', when resumed) to the stage's metrics.json."""
    f = Path(stage_dir) / "metrics.json"
    m = json.loads(f.read_text()) if f.is_file() else {}
    if m.get("times_cumulative"):  # the stage sums its own times over resumed runs (unet)
        return {k: m[k] for k in ("cpu_time_s", "wall_time_s")}
    prev_cpu, prev_wall = before
    times = {"cpu_time_s": round(prev_cpu + cpu_s, 1), "wall_time_s": round(prev_wall + wall_s, 1)}
    if f.parent.is_dir():
        f.write_text(json.dumps({**m, **times}, indent=1))
    return times


if __name__ == "__main__":
    sys.exit(main())
