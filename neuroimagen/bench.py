"""Benchmark: ``python -m neuroimagen.bench [--checkpoint DIR] [--trial FILE] [--repeats N] [--out FILE]``.

Per-stage latency (read, preprocess, encoder, saliency, semantic, readout (the decoded class: the caption readout
and the class decoder when the checkpoint has one), layout when the checkpoint has a layout prior, diffusion,
decode), end to end at the pipeline's defaults (25 steps, strength 0.5, guidance 5), load
time and peak resident memory; medians over ``--repeats`` runs after one warm-up, of the wall time and of this
process's CPU time (all threads). Prints JSON (``--out`` also writes it, e.g. ``reports/bench/threads1.json``),
with the machine's CPU count and load average around the run (other work on the machine slows every number) and
the digests of the weights measured. The project's budgets:
end to end <= 1.0 s median on 2 CPU cores; the EEG stages (read + preprocess + encoder + saliency + semantic +
readout + layout) <= 50 ms; loading <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .data import preprocess, read_trial
from .evaluation.provenance import weights_digest
from .pipelines.pipeline_neuroimagen import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, DEFAULT_STRENGTH

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "neuroimagen-tiny"
DEFAULT_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


CPU_MS: dict[str, float] = {}  # per stage: median CPU time of this process (all threads), filled by _median_ms


def _median_ms(fn, repeats: int, name: str | None = None) -> float:
    """Median wall time in ms over ``repeats`` calls after a warm-up; the median CPU time goes to ``CPU_MS[name]``."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if name:
        CPU_MS[name] = round(statistics.median(cpu) * 1000, 2)
    return round(statistics.median(times) * 1000, 2)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


def run(checkpoint: str | Path = DEFAULT_CHECKPOINT, trial: str | Path | None = None, repeats: int = 10,
        threads: int | None = None, argv: list[str] | None = None) -> dict:
    from . import NeuroImagenPipeline  # diffusers: only when a benchmark runs

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = NeuroImagenPipeline.from_pretrained(str(checkpoint))
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    if trial is None:
        trial = sorted(Path(DEFAULT_EXAMPLES).glob("*.npz"))[0]
    raw = read_trial(trial)
    pre = preprocess(raw)
    x = torch.as_tensor(pre.data, dtype=torch.float32)[None]
    g = torch.Generator().manual_seed(0)
    res: dict = {"command": "python -m neuroimagen.bench " + shlex.join(argv) if argv is not None else None,
                 "date": time.strftime("%Y-%m-%d"), "checkpoint": str(checkpoint), "trial": str(trial),
                 "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "load_average_before": [round(v, 2) for v in os.getloadavg()], "repeats": repeats,
                 "weights": weights_digest(checkpoint), "load_s": round(load_s, 3)}
    with torch.inference_mode():
        feats = pipe.eeg_encoder(x)
        z = torch.randn(1, pipe.saliency_generator.config.noise_dim, generator=g)
        states = pipe.semantic_decoder(x)
        sal = pipe.saliency_generator(feats, z)
        stages = {
            "read": lambda: read_trial(trial),
            "preprocess": lambda: preprocess(raw),
            "encoder": lambda: pipe.eeg_encoder(x),
            "saliency": lambda: pipe.saliency_generator(feats, z),
            "semantic": lambda: pipe.semantic_decoder(x),
            "readout": lambda: pipe.decode_class(x, states, k=5),  # the caption readout (+ the class decoder)
        }
        prior = getattr(pipe, "layout_prior", None)
        if prior is not None:  # the decoded box and the template drawn into the map (step 3b of the pipeline)
            stages["layout"] = lambda: prior.composite(sal, torch.tensor([0]), prior.boxes(feats, x),
                                                       pipe.default_layout_weight)
        CPU_MS.clear()
        ms = {k: _median_ms(f, repeats, k) for k, f in stages.items()}
        ms["eeg_stages_total"] = round(sum(ms[k] for k in ("read", "preprocess", "encoder", "saliency", "semantic",
                                                           "readout", "layout") if k in ms), 2)
        stage = pipe._diffusion_stage("img2img")
        init = torch.nn.functional.interpolate((sal.clamp(-1, 1) + 1) / 2, size=(
            pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2, mode="bilinear", align_corners=False)
        emb = pipe.caption_bank.label_states(torch.tensor([0]))
        neg = pipe.caption_bank.empty_states(1)
        ms["diffusion"] = _median_ms(lambda: stage(
            image=init, prompt_embeds=emb, negative_prompt_embeds=neg, strength=DEFAULT_STRENGTH,
            num_inference_steps=DEFAULT_STEPS, guidance_scale=DEFAULT_GUIDANCE_SCALE,
            generator=torch.Generator().manual_seed(0), output_type="pt"), max(3, repeats // 2), "diffusion")
        lat = torch.randn(1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        ms["decode"] = _median_ms(lambda: pipe.vae.decode(lat), repeats, "decode")

        def end_to_end():
            pipe(preprocess(read_trial(trial)), generator=torch.Generator().manual_seed(0))

        ms["end_to_end"] = _median_ms(end_to_end, max(3, repeats // 2), "end_to_end")
    res["latency_ms"] = ms
    # CPU time of this process: near the wall time on an idle machine with one thread, and much less sensitive than
    # the wall time to other work on the machine (the load average says how much there was).
    res["cpu_ms"] = {**CPU_MS, "eeg_stages_total": round(sum(CPU_MS[k] for k in ms if k in CPU_MS and k not in (
        "diffusion", "decode", "end_to_end")), 2)}
    res["budgets_ok"] = {"end_to_end<=1000ms": ms["end_to_end"] <= 1000, "eeg_stages<=50ms": ms["eeg_stages_total"] <= 50,
                         "load<=5s": load_s <= 5}
    res["peak_rss_mb"] = _peak_rss_mb()
    res["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuroimagen.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="pipeline folder (default: the embedded one)")
    p.add_argument("--trial", default=None, help="trial file (default: the first examples/*.npz)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per stage (default: 10)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="also write the JSON to this file (folders created)")
    args = p.parse_args(argv)
    res = run(args.checkpoint, args.trial, args.repeats, args.threads, sys.argv[1:] if argv is None else argv)
    text = json.dumps(res, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
