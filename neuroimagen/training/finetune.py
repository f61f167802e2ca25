"""Stage ``finetune``: rounds that fine-tune the ``vae`` and ``unet`` stages' weights, the autoencoder first and then
the UNet on its new latents.

    python -m neuroimagen.train finetune --config configs/tiny.json [--resume]

Round ``i`` writes ``<out>/finetune/round<i>/vae/`` and ``.../unet/``. Its autoencoder starts from the previous
round's (round 1: the ``vae`` stage's) and its UNet from the previous round's UNet (round 1: the ``unet`` stage's),
trained on the new autoencoder's latents: a fine-tuned autoencoder moves the latents, so a UNet must follow it.
A round is ``{"vae": {...}, "unet": {...}}`` with the ``vae`` and ``unet`` stages' settings (``init_from`` is the
round's to set; the UNet keeps the noise schedule and prediction type it was trained with unless the round sets
them), and optionally ``"vae_mixed_precision"``, the autocast of its autoencoder phase (``"bf16"``: 1.4 x
faster per step on a CPU with AMX, measured here; the UNet gains nothing from it). With ``--resume`` a finished phase
is not run again and an unfinished one continues from its resume point, so an interrupted chain loses at most one
phase's last ``save_every`` steps. ``assemble`` ships the last round's VAE and UNet when its ``finetuned`` is true.

The embedded default's VAE and UNet came this way (issue 22; ``configs/tiny.json``, docs/EXPERIMENTS.md): two rounds
that teach the autoencoder colours no stimulus has (renders on random backgrounds, which the start images' flat
backgrounds need), the second ending with its decoder alone on the frozen encoder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .common import logger, write_metrics
from .config import Paths

ROUND_KEYS = ("vae", "unet", "vae_mixed_precision")


@dataclass
class Config:
    # Each round: {"vae": {vae stage settings}, "unet": {unet stage settings}, "vae_mixed_precision": "bf16"
    # (optional)}; the rounds run in order, each starting from the one before.
    rounds: list[dict] = field(default_factory=list)

    def __post_init__(self):
        from . import unet, vae
        from .common import MIXED_PRECISION

        if not isinstance(self.rounds, list) or not self.rounds:
            raise ValueError(f"finetune 'rounds' must be a non-empty list of rounds {{'vae': {{...}}, 'unet': "
                             f"{{...}}}}, but got {self.rounds!r}.")
        for i, r in enumerate(self.rounds, 1):
            where = f"finetune round {i}"
            if not isinstance(r, dict) or not {"vae", "unet"} <= set(r) or set(r) - set(ROUND_KEYS):
                raise ValueError(f"{where} must be an object with the keys 'vae' and 'unet' (and optionally "
                                 f"'vae_mixed_precision'), but got {r!r}: a fine-tuned autoencoder moves the latents, "
                                 "so every round fine-tunes the UNet after it.")
            for phase, module in (("vae", vae), ("unet", unet)):
                allowed = {f.name for f in fields(module.Config)} - {"init_from"}
                extra = sorted(set(r[phase]) - allowed) if isinstance(r[phase], dict) else None
                if extra is None or extra:
                    raise ValueError(f"'{phase}' of {where}: expected an object of the {phase} stage's settings "
                                     f"{sorted(allowed)} (init_from is the round's), but got {r[phase]!r}.")
            if r.get("vae_mixed_precision", "no") not in MIXED_PRECISION:
                raise ValueError(f"'vae_mixed_precision' of {where} must be one of {list(MIXED_PRECISION)}, but got "
                                 f"{r['vae_mixed_precision']!r}.")


def round_dir(paths: Paths, i: int) -> Path:
    """Where round ``i`` (from 1) writes its ``vae/`` and ``unet/``."""
    return paths.stage_dir("finetune") / f"round{i}"


def last_round(paths: Paths) -> Path:
    """The folder of the run's last finished round (what ``assemble`` ships with ``finetuned``)."""
    m = paths.stage_dir("finetune") / "metrics.json"
    rounds = json.loads(m.read_text()).get("rounds", []) if m.is_file() else []
    if not rounds:
        raise FileNotFoundError(f"No finished finetune rounds in {paths.stage_dir('finetune')}: run the stage first "
                                "(python -m neuroimagen.train finetune --config ...).")
    return round_dir(paths, len(rounds))


def _finished(stage_dir: Path, steps: int) -> bool:
    f = stage_dir / "metrics.json"
    return f.is_file() and json.loads(f.read_text()).get("steps", -1) >= steps


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from ..train import record_times, run_mixed_precision, times_so_far
    from . import unet, vae

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # several processes: only the main one writes
    prev = Path(paths.out)
    done = []
    for i, r in enumerate(cfg.rounds, 1):
        here = replace(paths, out=str(round_dir(paths, i)))
        phases = ((vae, r["vae"], r.get("vae_mixed_precision")), (unet, r["unet"], None))
        for module, settings, mp in phases:
            name = module.__name__.rsplit(".", 1)[1]
            if name == "unet":  # the schedule the UNet was trained with, unless the round changes it
                settings = {**_schedule(prev / name), **settings}
            stage_cfg = module.Config(**settings, init_from=str(prev / name))
            out = here.stage_dir(name)
            total = stage_cfg.max_steps + getattr(stage_cfg, "decoder_steps", 0)
            if resume and _finished(out, total):
                logger.info("finetune round %d: %s finished (%d steps), not run again", i, name, total)
                continue
            again = resume and (out / "resume.pt").is_file()
            before = times_so_far(out) if again else (0.0, 0.0)
            c0, w0 = time.process_time(), time.perf_counter()
            logger.info("finetune round %d: %s from %s", i, name, prev / name)
            with run_mixed_precision(mp):
                module.train(stage_cfg, here, resume=again)
            state.wait_for_everyone()  # the next phase reads what the main process wrote
            if state.is_main_process:
                record_times(out, time.process_time() - c0, time.perf_counter() - w0, before)
        state.wait_for_everyone()
        done.append({name: _summary(here.stage_dir(name)) for name in ("vae", "unet")})
        prev = Path(here.out)
        if state.is_main_process:
            write_metrics(paths.stage_dir("finetune"), {"stage": "finetune", "rounds": done})
    return {"rounds": len(done), **{f"last_{k}": v for k, v in done[-1]["vae"].items()}}


def _schedule(unet_dir: Path) -> dict:
    """The noise schedule and prediction type the UNet in ``unet_dir`` was trained with (the scheduler ``assemble``
    ships with it)."""
    from .denoising import trained_scheduler

    c = trained_scheduler(unet_dir).config
    return {k: c[k] for k in ("num_train_timesteps", "beta_schedule", "prediction_type")}


def _summary(stage_dir: Path) -> dict:
    m = json.loads((stage_dir / "metrics.json").read_text())
    return {k: m[k] for k in ("steps", "cpu_time_s", "wall_time_s") if k in m} | m.get("val", {})
