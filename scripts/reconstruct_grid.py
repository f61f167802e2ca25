"""Reconstruct held-out trials with a pipeline folder; print class accuracy and SSIM; save a grid image.

    python scripts/reconstruct_grid.py --checkpoint checkpoints/neuroimagen-tiny --data data/sim_demo.pth \
        --splits data/sim_demo_splits.pth --stimuli data/stimuli --per-class 2 --out docs/figures/reconstructions.png

Rows of the grid: stimulus, start image (the saliency map with the layout prior's template drawn in, what img2img
starts from: the pipeline's ``start_images``), reconstruction, for the first trials of each class in the test
split (``--split val``: the validation split, to compare checkpoints without the test trials), every trial,
in bands of 20 columns separated by a white line. Accuracy is the evaluation classifier's
(``<checkpoint>/eval_classifier``) 40-way top-1 on the
reconstructions (``robust_classifier``: the same three by ``<checkpoint>/eval_classifier_robust``, when there is one); SSIM is skimage's on 64 x 64 RGB against the stimulus (``ssim_saliency``: of the start images). Ceilings are printed beside
them: the classifier's accuracy on the stimuli themselves, and on the stimuli after a round trip through
the pipeline's VAE (encode, decode: no diffusion can be recognised better than its decoder lets it); on the start
images, and on their round trips (what the reconstruction becomes as the strength goes to 0), with the round trips'
error (``start_round_trip_l1_255``: mean absolute difference, 0-255). ``--vae`` swaps the autoencoder (with a UNet
trained on its latents).
``--round-trip-out`` saves those round trips as a grid of the same layout, for the blind naming test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    from neuroimagen.pipelines.pipeline_neuroimagen import (
        CAPTION_SOURCES,
        DEFAULT_GUIDANCE_SCALE,
        DEFAULT_STEPS,
        DEFAULT_STRENGTH,
    )

    SCHEDULERS = {"ddim": DDIMScheduler, "dpm-solver++": DPMSolverMultistepScheduler,
                  "euler-ancestral": EulerAncestralDiscreteScheduler}

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/neuroimagen-tiny")
    p.add_argument("--data", default="data/sim_demo.pth")
    p.add_argument("--splits", default="data/sim_demo_splits.pth")
    p.add_argument("--stimuli", default="data/stimuli")
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE)
    p.add_argument("--caption-source", default="label", choices=CAPTION_SOURCES,
                   help="the pipeline's caption_source (default: label, the pipeline's and the app's default)")
    p.add_argument("--scheduler", default=None, choices=sorted(SCHEDULERS),
                   help="swap the checkpoint's scheduler (same config) for this one (default: keep it)")
    p.add_argument("--unet", default=None,
                   help="swap in this UNet folder (e.g. a training run's runs/NAME/unet, its EMA weights at the last "
                        "save point); it must have been trained on the checkpoint's VAE latents")
    p.add_argument("--vae", default=None,
                   help="swap in this autoencoder folder (e.g. runs/NAME/vae); with a UNet trained on its latents (--unet)")
    p.add_argument("--saliency", default=None,
                   help="swap in this saliency generator folder (e.g. a training run's runs/NAME/saliency/generator); "
                        "it must take the checkpoint's EEG encoder's features")
    p.add_argument("--layout-prior", default=None,
                   help="swap in this layout prior folder (the layout stage's runs/NAME/layout)")
    p.add_argument("--layout-weight", type=float, default=None,
                   help="the pipeline's layout_weight (default: the layout prior's default_weight, 0 without one)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="the trials to reconstruct (val: to choose between checkpoints without looking at test)")
    p.add_argument("--out", default="docs/figures/reconstructions.png")
    p.add_argument("--round-trip-out", default=None,
                   help="also save the grid with the VAE's round trips of the stimuli in the reconstruction row "
                        "(for scripts/blind_naming.py: a blind judge's ceiling)")
    args = p.parse_args()

    from skimage.metrics import structural_similarity

    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data import load_eeg_imagenet
    from neuroimagen.models import ImageClassifier

    pipe = NeuroImagenPipeline.from_pretrained(args.checkpoint)
    if args.vae:
        from neuroimagen.models.diffusion import load_autoencoder

        pipe.vae = load_autoencoder(args.vae).eval()
    if args.unet:
        from diffusers import UNet2DConditionModel

        from neuroimagen.training.denoising import trained_scheduler

        pipe.unet = UNet2DConditionModel.from_pretrained(args.unet)
        # The scheduler the UNet was trained with (what it predicts): its run's metrics.json, next to the weights
        # or two levels up for a snapshot (runs/NAME/unet/snapshots/stepN).
        run = next((d for d in (Path(args.unet), *Path(args.unet).parents[:2]) if (d / "metrics.json").is_file()), None)
        if run is None:
            sys.exit(f"--unet {args.unet}: no metrics.json of its unet run there or two levels up, so what the UNet "
                     "predicts (epsilon or v) is unknown")
        pipe.scheduler = trained_scheduler(run)
    if args.saliency:
        from neuroimagen.models import SaliencyGenerator

        pipe.saliency_generator = SaliencyGenerator.from_pretrained(args.saliency).eval()
    if args.layout_prior:
        from neuroimagen.models import LayoutPrior

        pipe.layout_prior = LayoutPrior.from_pretrained(args.layout_prior).eval()
    if args.scheduler:
        pipe.scheduler = SCHEDULERS[args.scheduler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    clf = ImageClassifier.from_pretrained(Path(args.checkpoint) / "eval_classifier").eval()
    robust_dir = Path(args.checkpoint) / "eval_classifier_robust"
    robust = ImageClassifier.from_pretrained(robust_dir).eval() if robust_dir.is_dir() else None
    ds = load_eeg_imagenet(args.data, args.splits, args.split, stimuli_dir=args.stimuli)
    eeg, labels, images, _ = ds.arrays()
    pick = np.concatenate([np.flatnonzero(labels == c)[:args.per_class] for c in np.unique(labels)])
    stim = np.stack([np.asarray(Image.open(Path(args.stimuli) / f"{ds.images[i]}.png").convert("RGB")) for i in images[pick]])
    recs, sals, top = [], [], []
    for k in range(0, len(pick), 16):
        idx = pick[k:k + 16]
        gens = [torch.Generator().manual_seed(int(i)) for i in idx]
        out = pipe(eeg[idx], strength=args.strength, guidance_scale=args.guidance, num_inference_steps=args.steps,
                   caption_source=args.caption_source, generator=gens, output_type="np", layout_weight=args.layout_weight)
        recs.append(out.images)
        sals.append(out.start_images)  # the grid's middle row and ssim_saliency: the start images
        top.append(out.class_probs.argmax(1))
    rec, sal, top = np.concatenate(recs), np.concatenate(sals), np.concatenate(top)
    with torch.no_grad():
        rec_x = torch.from_numpy(rec).permute(0, 3, 1, 2).float() * 2 - 1
        logits = clf(rec_x)
        stim_x = torch.from_numpy(stim).permute(0, 3, 1, 2).float() / 127.5 - 1
        stim_logits = clf(stim_x)
        def vae_round_trip(x):
            return pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)

        round_trip = vae_round_trip(stim_x)
        round_trip_logits = clf(round_trip)
        # the start images after a round trip: what the reconstruction is as the strength goes to 0
        start_x = torch.from_numpy(sal).permute(0, 3, 1, 2).float() * 2 - 1
        start_round_trip = vae_round_trip(start_x)
        start_error = round(float((start_round_trip - start_x).abs().mean()) * 127.5, 2)
        start_logits, start_round_trip_logits = clf(start_x), clf(start_round_trip)
        if robust is not None:
            robust_acc = {name: round(float((robust(x).argmax(1).numpy() == labels[pick]).mean()), 4) for name, x in (
                ("reconstruction_class_acc", rec_x),
                ("stimulus_class_acc", stim_x), ("vae_round_trip_class_acc", round_trip),
                ("start_class_acc", start_x), ("start_round_trip_class_acc", start_round_trip))}
    y = labels[pick]
    stim_f = stim / 255.0
    res = {
        "trials": len(pick),
        "reconstruction_class_acc": round(float((logits.argmax(1).numpy() == y).mean()), 4),
        "stimulus_class_acc": round(float((stim_logits.argmax(1).numpy() == y).mean()), 4),
        "vae_round_trip_class_acc": round(float((round_trip_logits.argmax(1).numpy() == y).mean()), 4),
        "eeg_readout_top1": round(float((top == y).mean()), 4),
        "start_class_acc": round(float((start_logits.argmax(1).numpy() == y).mean()), 4),
        "start_round_trip_class_acc": round(float((start_round_trip_logits.argmax(1).numpy() == y).mean()), 4),
        "start_round_trip_l1_255": start_error,
        "ssim_reconstruction": round(float(np.mean([structural_similarity(a, b, channel_axis=2, data_range=1.0)
                                                    for a, b in zip(rec, stim_f)])), 4),
        "ssim_saliency": round(float(np.mean([structural_similarity(a, b, channel_axis=2, data_range=1.0)
                                              for a, b in zip(sal, stim_f)])), 4),
        "robust_classifier": robust_acc if robust is not None else None,
        "settings": {"steps": args.steps, "strength": args.strength, "guidance": args.guidance,
                     "caption_source": args.caption_source, "scheduler": type(pipe.scheduler).__name__,
                     "unet": args.unet or f"{args.checkpoint}/unet", "vae": args.vae or f"{args.checkpoint}/vae",
                     "saliency_generator": args.saliency or f"{args.checkpoint}/saliency_generator",
                     "layout_prior": args.layout_prior or (f"{args.checkpoint}/layout_prior"
                                                           if getattr(pipe, "layout_prior", None) is not None else None),
                     "layout_weight": args.layout_weight},
    }
    print(json.dumps(res, indent=1))
    save_grid(args.out, stim_f, sal, rec)
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    if args.round_trip_out:
        save_grid(args.round_trip_out, stim_f, sal, (round_trip.permute(0, 2, 3, 1).numpy() + 1) / 2)


def save_grid(path, stim, sal, rec) -> None:
    """Every trial in bands of up to 20 columns, each band three rows (stimulus, start image, reconstruction), 2 x."""
    bands = []
    for k in range(0, len(stim), 20):
        cols = [np.concatenate(list(a[k:k + 20]), 1) for a in (stim, sal, rec)]
        width = 20 * stim.shape[2] if len(stim) > 20 else cols[0].shape[1]
        bands.append(np.pad(np.concatenate(cols, 0), ((0, 4), (0, width - cols[0].shape[1]), (0, 0)), constant_values=1))
    grid = (np.concatenate(bands, 0)[:-4] * 255).round().astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
