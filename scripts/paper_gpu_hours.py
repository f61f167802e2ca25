"""Estimate the GPU-hours of the paper run (configs/eeg-imagenet-sd15.json on the real EEG-ImageNet), from FLOPs.

    python scripts/paper_gpu_hours.py --out reports/paper_gpu_hours/estimate.json

An **estimate**, not a measurement: nothing here ran on a GPU. How it is made:

1. **Work.** The real data set's size (11,964 usable segments, split 80/10/10 by image: PAPER.md) and the
   config's epochs (the most each stage runs; early stopping may end it sooner) and batch sizes give the number of
   training steps. The evaluation is the README's command: every test trial, ``--rows paper`` (5 rows),
   ``--samples-per-trial 3``, SD 1.5 img2img at 512 x 512 with ``--steps 50 --strength 0.75 --guidance 7.5``
   (classifier-free guidance: the UNet on a batch of 2), one VAE encode and decode per image.
2. **FLOPs.** One training step of each stage's models, built at the config's sizes (the LSTM encoder, the
   128 x 128 saliency GAN, the semantic decoder on SD's 77 x 768 states), forward and backward on CPU under
   PyTorch's ``FlopCounterMode`` (2 FLOPs per multiply-add; convolutions and matrix products); the LSTM, which the
   counter does not see, analytically (4 gates x 2 x hidden x (input + hidden) per time step, x 3 for forward and
   backward). SD 1.5's parts from ``scripts/sd_flops.py`` (its architecture on the meta device).
3. **Time.** FLOPs divided by an assumed 10 to 40 % of a GPU's dense float16 tensor peak (A100 312 TFLOPS, T4 65
   TFLOPS: the vendors' data sheets), as docs/DEPLOY.md. The EEG models are small: on a GPU their steps are bound by
   kernel launches, not FLOPs, so their FLOP time is a floor; the script also times one training step of each on
   this machine's CPU (1 thread), the cost of the same step without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "eeg-imagenet-sd15.json"
N_SEGMENTS = 11_964  # EEG-ImageNet's usable segments, all 6 subjects (PAPER.md)
SPLIT = (0.8, 0.1, 0.1)  # by image (PAPER.md)
EVAL = {"rows": 5, "samples_per_trial": 3, "steps": 50, "strength": 0.75, "cfg_batch": 2}
GPUS = {"A100 (312 TFLOPS)": 312e12, "T4 (65 TFLOPS)": 65e12}
UTILISATION = (0.4, 0.1)


def _sd_flops() -> dict:
    spec = importlib.util.spec_from_file_location("sd_flops", ROOT / "scripts" / "sd_flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main()


def _count(step) -> tuple[float, float]:
    """FLOPs of ``step()`` (counted) and its CPU wall time in seconds (the second of two runs)."""
    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    t0 = time.perf_counter()
    step()
    return float(counter.get_total_flops()), time.perf_counter() - t0


def _stage_configs() -> dict:
    from neuroimagen.training import encoder, saliency, semantic

    raw = json.loads(CONFIG.read_text())
    return {"encoder": encoder.Config(**raw["encoder"]), "saliency": saliency.Config(**raw["saliency"]),
            "semantic": semantic.Config(**raw["semantic"])}  # its text encoder is not loaded: 77 x 768 states


def encoder_step(cfg) -> dict:
    from neuroimagen.data.montage import model_ch_names
    from neuroimagen.models import EEGEncoder

    model = EEGEncoder(n_chans=128, n_times=440, ch_names=list(model_ch_names()), arch=cfg.arch,
                       embed_dim=cfg.embed_dim, hidden_size=cfg.hidden_size, dropout=cfg.dropout)
    batch = cfg.classes_per_batch * cfg.trials_per_class
    x = torch.randn(batch, 128, 440)
    flops, seconds = _count(lambda: model(x).square().sum().backward())
    lstm = model.lstm
    t_steps = 440 // model.time_pool.kernel_size[0]
    per_step = 4 * 2 * lstm.hidden_size * (lstm.input_size + lstm.hidden_size) * lstm.num_layers
    flops += 3 * per_step * t_steps * batch  # forward + backward of the LSTM, which the counter does not see
    return {"batch": batch, "tflops_per_step": flops / 1e12, "cpu_s_per_step": seconds}


def saliency_step(cfg, feature_dim: int) -> dict:
    from neuroimagen.models import SaliencyDiscriminator, SaliencyGenerator

    gen = SaliencyGenerator(feature_dim=feature_dim, noise_dim=cfg.noise_dim, image_size=cfg.image_size,
                            base_channels=cfg.base_channels)
    disc = SaliencyDiscriminator(feature_dim=feature_dim, image_size=cfg.image_size, base_channels=cfg.disc_channels)
    b = cfg.batch_size
    f, real = torch.randn(b, feature_dim), torch.randn(b, 3, cfg.image_size, cfg.image_size)

    def step():  # the stage's step: D on real and fake, G twice (mode seeking), D again for G's loss
        z1, z2 = torch.randn(b, cfg.noise_dim), torch.randn(b, cfg.noise_dim)
        fake = gen(f, z1)
        (F.relu(1 - disc(real, f)).mean() + F.relu(1 + disc(fake.detach(), f)).mean()).backward()
        fake2 = gen(f, z2)
        (-disc(fake, f).mean() + (fake - real).abs().mean() + (fake2 - fake).abs().mean()).backward()

    flops, seconds = _count(step)
    return {"batch": b, "tflops_per_step": flops / 1e12, "cpu_s_per_step": seconds}


def semantic_step(cfg) -> dict:
    from neuroimagen.data.montage import model_ch_names
    from neuroimagen.models import SemanticDecoder

    model = SemanticDecoder(n_chans=128, n_times=440, ch_names=list(model_ch_names()), seq_len=77, hidden_dim=768,
                            rank=cfg.rank, hidden=cfg.hidden, dropout=cfg.dropout)
    x, target = torch.randn(cfg.batch_size, 128, 440), torch.randn(cfg.batch_size, 2, 77, 768)
    flops, seconds = _count(lambda: F.mse_loss(model(x), target).backward())
    return {"batch": cfg.batch_size, "tflops_per_step": flops / 1e12, "cpu_s_per_step": seconds}


def _hours(tflops: float) -> dict:
    """Hours of ``tflops`` on each GPU at 40 % and 10 % of its peak."""
    return {gpu: {f"{int(u * 100)}%": round(tflops * 1e12 / (peak * u) / 3600, 3) for u in UTILISATION}
            for gpu, peak in GPUS.items()}


def estimate() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfgs = _stage_configs()
    n_train, n_val, n_test = (round(N_SEGMENTS * s) for s in SPLIT)
    steps = {"encoder": encoder_step(cfgs["encoder"]), "saliency": saliency_step(cfgs["saliency"], cfgs["encoder"].embed_dim),
             "semantic": semantic_step(cfgs["semantic"])}
    training = {}
    for stage, s in steps.items():
        epochs = cfgs[stage].epochs
        n_steps = epochs * math.ceil(n_train / s["batch"])
        tf = n_steps * s["tflops_per_step"]
        training[stage] = {"epochs_at_most": epochs, **{k: round(v, 6) for k, v in s.items()}, "steps": n_steps,
                           "tflops": round(tf, 1), "gpu_hours_flop_floor": _hours(tf),
                           "cpu_hours_1_thread_here": round(n_steps * s["cpu_s_per_step"] / 3600, 2)}
    sd = _sd_flops()["tflops"]
    unet_calls = int(EVAL["steps"] * EVAL["strength"])
    per_image = unet_calls * sd["unet_cfg_batch2"] + sd["vae_encode_512"] + sd["vae_decode_512"]
    n_images = n_test * EVAL["rows"] * EVAL["samples_per_trial"]
    eval_tf = n_images * per_image
    train_tf = sum(t["tflops"] for t in training.values())
    return {
        "estimate": "FLOPs counted (PyTorch FlopCounterMode; the LSTM analytically), divided by an assumed share of "
                    "the GPU's dense fp16 peak; not measured on a GPU",
        "assumptions": {"segments": N_SEGMENTS, "split": SPLIT, "train_val_test_trials": [n_train, n_val, n_test],
                        "evaluation": EVAL, "gpus_dense_fp16_peak": GPUS, "utilisation": UTILISATION,
                        "configs": {k: asdict(v) for k, v in cfgs.items()}},
        "training": training,
        "training_tflops": round(train_tf, 1),
        "training_cpu_hours_1_thread_here": round(sum(t["cpu_hours_1_thread_here"] for t in training.values()), 2),
        "evaluation": {"images": n_images, "unet_calls_per_image": unet_calls, "tflops_per_image": round(per_image, 2),
                       "tflops": round(eval_tf, 1)},
        "gpu_hours": {"training_flop_floor": _hours(train_tf), "evaluation": _hours(eval_tf),
                      "total": _hours(train_tf + eval_tf)},
        "torch": torch.__version__,
    }


def main(argv=None) -> dict:
    sys.path.insert(0, str(ROOT))  # run as a file: the package is the repository's
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "reports" / "paper_gpu_hours" / "estimate.json"))
    args = p.parse_args(argv)
    out = estimate()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("training_tflops", "training_cpu_hours_1_thread_here", "evaluation",
                                          "gpu_hours")}, indent=1))
    return out


if __name__ == "__main__":
    main()
