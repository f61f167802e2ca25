"""Evaluate a NeuroImagen checkpoint as the paper does, and beyond: ``python -m neuroimagen.evaluate``.

    python -m neuroimagen.evaluate --checkpoint checkpoints/neuroimagen-tiny --data data/sim_demo.pth \\
        --splits data/sim_demo_splits.pth --stimuli data/stimuli --out reports/demo --preset demo --limit 80
    # the block-design effect too (LDA only): add the same data simulated with --block-drift
    python -m neuroimagen.evaluate ... --drift-data data/sim_demo_drift.pth --drift-splits data/sim_demo_drift_splits.pth
    # the real EEG-ImageNet and Stable Diffusion: the same command, other paths
    python -m neuroimagen.evaluate --checkpoint runs/eeg-imagenet/pipeline --sd-model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --data eeg_5_95_std.pth --splits block_splits_by_image_all.pth --stimuli imagenet_stimuli/ \\
        --classifier my_imagenet40_classifier/ --out reports/eeg-imagenet
    # the paper's protocol on real images: ACC by an ImageNet classifier (50-way top-1 against the classifier's
    # class of the seen image), IS by Inception v3 (a torchvision state dict), SSIM at 512 x 512
    python -m neuroimagen.evaluate ... --imagenet-classifier google/vit-base-patch16-224 --inception inception_v3.pth
    # the field's reconstruction metrics (MindEye's suite, as ATM): only the networks given are used
    python -m neuroimagen.evaluate ... --recon-metrics alexnet=alexnet.pth inception=inception_v3.pth \\
        clip=openai/clip-vit-large-patch14 effnet=efficientnet_b1.pth swav=swav_resnet50.pth
    # an index of several reports
    python -m neuroimagen.evaluate --index reports/demo reports/realistic --out reports

Writes into ``--out``: ``metrics.json`` (every number), ``report.md`` (tables, protocol, caveats) and figures:

1. **Reconstructions** (needs ``--checkpoint``): held-out test trials reconstructed ``--samples-per-trial``
   times each, scored with the paper's ACC (N-way top-1), IS, SSIM and pixel correlation, for all subjects and
   per subject, under the paper's five ablation rows (:mod:`neuroimagen.evaluation.ablation`).
2. **EEG decoding baselines** on the same split: shrinkage LDA, xDAWN + tangent space, an EEGNet-style CNN,
   and our semantic readout and encoder probe (:mod:`neuroimagen.evaluation.baselines`).
   With ``--imagenet-classifier``, also by the paper's own protocol on real images
   (:mod:`neuroimagen.evaluation.paper_metrics`): the report says which protocol produced each number.
   With ``--recon-metrics NAME=ID_OR_PATH ...``, also the field's suite (PixCorr, SSIM, 2-way identification with
   AlexNet, Inception, CLIP; EffNet-B and SwAV distances; :mod:`neuroimagen.evaluation.recon_metrics`), each
   number beside the network that produced it.
3. **Block design** (with ``--drift-data``): LDA with and without block drift, by image vs held-out blocks.

Nothing here assumes the simulated data: class names come from the data file's ``labels``, stimuli are
``--stimuli/<images entry>.JPEG|.jpg|.jpeg|.png``, flat or in per-synset folders (ImageNet's layout), the
evaluation classifier is any
:class:`~neuroimagen.models.ImageClassifier` folder with one output per class (default: the checkpoint's
``eval_classifier/``). When the checkpoint also has ``eval_classifier_robust/`` (or with ``--robust-classifier``),
the reconstructions are scored by both: the robust one's numbers sit under ``"robust"`` beside the others.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ._logging import logger, verbose
from .evaluation.ablation import DEFAULT_ROW, EXTRA_ROWS, FULL, ROWS, run_reconstruction_eval
from .evaluation.baselines import block_design_effect, run_baselines
from .evaluation.provenance import network_digest, part_weights, same_weights, weights_digest
from .evaluation.report import rerender_report, write_report
from .pipelines.pipeline_neuroimagen import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, DEFAULT_STRENGTH

PARTS = ("reconstruction", "baselines", "block")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuroimagen.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="pipeline folder (needed for reconstructions and our "
                   "decoders; without it only the baselines and the block-design part run)")
    p.add_argument("--data", help="EEG-ImageNet-format .pth data file")
    p.add_argument("--splits", help="its splits file (split 0 is used)")
    p.add_argument("--stimuli", help="folder of the stimulus images (<images entry>.JPEG/.jpg/.jpeg/.png, "
                   "flat or in per-synset folders)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--preset", default=None, help="a name for this data set in the report (default: the data file's stem)")
    p.add_argument("--limit", type=int, default=None, help="reconstruct at most N test trials, spread over the "
                   "classes (default: all); the baselines always use the whole test split")
    p.add_argument("--seed", type=int, default=0, help="seeds trial selection, diffusion noise and the CNN (default: 0)")
    p.add_argument("--samples-per-trial", type=int, default=3, help="reconstructions per trial (default: 3)")
    p.add_argument("--classifier", default=None, help="ImageClassifier folder for ACC and IS "
                   "(default: CHECKPOINT/eval_classifier)")
    p.add_argument("--robust-classifier", default=None, help="a second ImageClassifier folder (trained robust to blur, "
                   "noise, low resolution) scoring the reconstructions beside --classifier, under the key 'robust' "
                   "(default: CHECKPOINT/eval_classifier_robust when it exists; 'none': only --classifier)")
    p.add_argument("--imagenet-classifier", default=None, metavar="ID_OR_PATH", help="the paper's protocol on real "
                   "images: an ImageNet classifier (transformers AutoModelForImageClassification id or folder) for ACC, "
                   "N-way top-1 against its class of the seen image")
    p.add_argument("--inception", default=None, metavar="PATH_OR_ID", help="Inception v3 for the paper's IS: a state "
                   "dict file of torchvision's inception_v3 (.pth/.safetensors), or a transformers classifier id or "
                   "folder (needs --imagenet-classifier)")
    p.add_argument("--recon-metrics", nargs="+", action="extend", default=None, metavar="NAME=ID_OR_PATH",
                   help="the field's reconstruction metrics (MindEye's suite, as ATM): PixCorr and SSIM, and 2-way "
                   "identification / feature distances with each network given, NAME among alexnet (AlexNet(2), "
                   "AlexNet(5)), inception, clip, effnet, swav; ID_OR_PATH a state-dict file or folder of torchvision's "
                   "architecture, a torchvision weights name (DEFAULT, IMAGENET1K_V1), for clip a transformers hub id "
                   "or folder; 'none' alone: PixCorr and SSIM only")
    p.add_argument("--recon-pix-size", type=int, default=425, help="side of the field's PixCorr and SSIM "
                   "(default: 425, MindEye's)")
    p.add_argument("--paper-n-way", type=int, default=50, help="N of the paper's N-way top-1 (default: 50)")
    p.add_argument("--paper-trials", type=int, default=None, help="draws of the N - 1 other classes per "
                   "reconstruction, as BrainVis (50) (default: the exact expectation over the draws)")
    p.add_argument("--paper-ssim-size", type=int, default=512, help="side at which the paper's SSIM is computed "
                   "(default: 512, Stable Diffusion v1.5's output)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"num_inference_steps (default: {DEFAULT_STEPS})")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                   help=f"img2img strength (default: {DEFAULT_STRENGTH}, the pipeline's)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE,
                   help=f"guidance_scale (default: {DEFAULT_GUIDANCE_SCALE})")
    p.add_argument("--batch-size", type=int, default=16, help="trials per pipeline call (default: 16)")
    p.add_argument("--rows", default="all", help="ablation rows: 'paper' (the five of Table 3), 'all' (plus the "
                   "snapped-label rows L* only and L* + I, the pipeline's default, and with a layout prior the default "
                   "without it and I only with its template), or a comma list of row names (default: all)")
    p.add_argument("--sd-model", default=None, help="Stable Diffusion hub id or folder for the last stage")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list among {', '.join(PARTS)} (default: all "
                   "that the arguments allow)")
    p.add_argument("--baselines", default="lda,xdawn,eegnet", help="baselines to run (default: lda,xdawn,eegnet)")
    p.add_argument("--xdawn-nfilter", type=int, default=1, help="xDAWN filters per class (default: 1)")
    p.add_argument("--lda-bin-ms", type=float, default=40, help="LDA time bins in ms, rounded to whole samples of "
                   "the data averaged down to about 250 Hz (4 ms for the published 1 kHz files; default: 40)")
    p.add_argument("--xdawn-bin-ms", type=float, default=8, help="xDAWN time bins in ms, rounded the same way "
                   "(default: 8)")
    p.add_argument("--eegnet-epochs", type=int, default=30, help="CNN epochs at most, early stopping on val "
                   "(default: 30)")
    p.add_argument("--drift-data", default=None, help="the same data simulated with --block-drift (block part)")
    p.add_argument("--drift-splits", default=None, help="its splits file")
    p.add_argument("--block-folds", type=int, default=None, help="leave-one-subject-out folds in the block part "
                   "(default: every subject)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device of the pipeline (default: cpu)")
    p.add_argument("--index", nargs="+", default=None, metavar="REPORT_DIR",
                   help="only write OUT/README.md indexing these report folders")
    p.add_argument("--rerender", action="store_true", help="only rewrite OUT/report.md from OUT/metrics.json and "
                   "the figures there (nothing is recomputed)")
    return p


PART_KEYS = ("reconstruction", "baselines", "block_design")  # the parts' keys in metrics.json
# The checkpoint components our rows of the baselines part run (the semantic readout, the encoder probe, the
# pipeline's decoded class).
BASELINE_COMPONENTS = ("eeg_encoder", "semantic_decoder", "caption_bank", "class_decoder")


def _keep_earlier_parts(metrics: dict, out: Path) -> None:
    """Keep the parts this run did not compute from ``out/metrics.json``, when it is for the same data and,
    when this run has a checkpoint, for the same weights (by digest: a retrained stage keeps its folder's path).

    So a report can be built in steps (``--parts baselines`` now, ``--parts reconstruction`` later): each kept
    part's command stays listed in ``earlier_commands`` and in the report. A part measured on other weights (or on
    weights that cannot be identified) is not kept; the caveats say so and give the command that reruns it.
    """
    metrics["part_commands"] = {k: metrics["command"] for k in PART_KEYS if k in metrics}
    f = out / "metrics.json"
    if not f.is_file():
        return
    prior = json.loads(f.read_text())
    if (prior.get("data"), prior.get("splits")) != (metrics.get("data"), metrics.get("splits")):
        return
    kept = [k for k in PART_KEYS if k not in metrics and k in prior]
    if "weights" in metrics:
        stale = [k for k in kept if not same_weights(part_weights(prior, k), metrics["weights"],
                                                     complete=k == "reconstruction")]
        for k in stale:
            part = PARTS[PART_KEYS.index(k)]
            why = "other weights" if part_weights(prior, k) is not None else "weights it did not record"
            metrics["caveats"].append(f"The earlier {k} part was measured on {why}, not on {metrics['checkpoint']} "
                                      f"as it is now, so it was not kept: rerun it with --parts {part}.")
            logger.info(f"not keeping the earlier {k} part (measured on {why}): rerun it with --parts {part}")
        kept = [k for k in kept if k not in stale]
    for k in kept:
        metrics.setdefault("part_weights", {})[k] = part_weights(prior, k)
    if not kept:
        return
    made_by = prior.get("part_commands") or {}
    # A report from before part_commands only lists all its commands: a kept part of it may come from any of
    # them but this run's own. That list is then stored as the part's commands, so it does not grow later.
    legacy = [c for c in dict.fromkeys([*prior.get("earlier_commands", []), prior["command"]]) if c != metrics["command"]]
    for k in kept:
        metrics[k] = prior[k]
        metrics["part_commands"][k] = made_by.get(k) or legacy
    # The commands that made the kept parts, each once: a part recomputed now drops its old command.
    earlier = [c for k in kept for c in ([metrics["part_commands"][k]] if isinstance(metrics["part_commands"][k], str)
                                         else metrics["part_commands"][k])]
    metrics["earlier_commands"] = [c for c in dict.fromkeys(earlier) if c != metrics["command"]]
    if prior.get("checkpoint") != metrics.get("checkpoint"):
        metrics["caveats"].append(f"Kept from an earlier run with checkpoint {prior.get('checkpoint')}: {', '.join(kept)}.")


def _versions() -> dict:
    import diffusers
    import sklearn
    import torch

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "scikit-learn": sklearn.__version__}
    try:
        import pyriemann

        out["pyriemann"] = pyriemann.__version__
    except ImportError:  # only the xDAWN baseline needs it
        pass
    return out


def _rows(spec: str) -> dict[str, tuple]:
    if spec == "paper":
        return dict(ROWS)
    known = {**ROWS, **EXTRA_ROWS}
    if spec == "all":
        return known
    # A comma separates names, but some names have one ("L* + I, no layout prior", beside "L* + I"): at each
    # place take the longest run of pieces that is a known name, else the single piece (an unknown name).
    pieces, names, i = spec.split(","), [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i, -1) if ",".join(pieces[i:j]).strip() in known), i + 1)
        name = ",".join(pieces[i:j]).strip()
        if name:
            names.append(name)
        i = j
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"Unknown ablation rows {unknown}: allowed 'paper', 'all' or names among {list(known)}.")
    return {n: known[n] for n in names}


def load_classifier(path: str | Path, device: str = "cpu"):
    """The evaluation classifier (:class:`~neuroimagen.models.ImageClassifier` folder), in eval mode."""
    from .models import ImageClassifier

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"No evaluation classifier at {path}: pass --classifier DIR (an ImageClassifier "
                                f"folder, made by 'python -m neuroimagen.train classifier').")
    return ImageClassifier.from_pretrained(path).to(device).eval()


def _robust_classifier_dir(args: argparse.Namespace) -> str | None:
    """The robust classifier's folder: ``--robust-classifier``, else the checkpoint's ``eval_classifier_robust`` when
    it has one, else None (and None for ``--robust-classifier none``)."""
    if args.robust_classifier == "none":
        return None
    if args.robust_classifier:
        return args.robust_classifier
    default = Path(args.checkpoint) / "eval_classifier_robust"
    return str(default) if default.is_dir() else None


def _paper_metrics(args: argparse.Namespace):
    """The paper's protocol on real images (``--imagenet-classifier``, ``--inception``), or None."""
    if args.imagenet_classifier is None:
        if args.inception is not None:
            raise SystemExit("--inception needs --imagenet-classifier: the paper's protocol scores ACC with an "
                             "ImageNet classifier and IS with Inception v3 together.")
        return None
    from .evaluation.paper_metrics import ImageNetClassifier, PaperMetrics, load_inception

    inception = None if args.inception is None else load_inception(args.inception, args.device)
    return PaperMetrics(ImageNetClassifier(args.imagenet_classifier, args.device, min_classes=args.paper_n_way),
                        inception, n_way=args.paper_n_way, n_trials=args.paper_trials, ssim_size=args.paper_ssim_size,
                        seed=args.seed)


def _recon_metrics(args: argparse.Namespace):
    """The field's reconstruction metrics with the networks of ``--recon-metrics``, or None."""
    if not args.recon_metrics:
        return None
    from .evaluation.recon_metrics import ReconMetrics, load_feature_net, parse_network_args

    try:
        specs = {} if args.recon_metrics == ["none"] else parse_network_args(args.recon_metrics)
    except ValueError as err:
        raise SystemExit(f"--recon-metrics: {err}") from err
    return ReconMetrics({name: load_feature_net(name, src, args.device) for name, src in specs.items()},
                        pix_size=args.recon_pix_size)


@verbose
def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run the parts the arguments ask for and write the report; return the metrics (progress lines: the
    ``neuroimagen`` logger, see :func:`~neuroimagen._logging.verbose`)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    # numpy's BLAS too: many threads on small matrices (xDAWN, tangent space) thrash a shared machine.
    with threadpool_limits(args.threads):
        return _run(args, argv)


def _ms(ms: float, name: str) -> float:
    if not ms > 0:
        raise SystemExit(f"--{name} must be a positive number of ms, got {ms}.")
    return ms


def _run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    import torch

    t0 = time.perf_counter()
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    bad = parts - set(PARTS)
    if bad:
        raise SystemExit(f"Unknown parts {sorted(bad)}: allowed {', '.join(PARTS)}.")
    if ("reconstruction" in parts or "baselines" in parts) and not (args.data and args.splits):
        raise SystemExit("--data and --splits are needed (or restrict --parts to 'block').")
    preset = args.preset or (Path(args.data).stem if args.data else "data")
    pipe = None
    if args.checkpoint is not None:
        if not Path(args.checkpoint).is_dir():
            raise SystemExit(f"No checkpoint folder at {args.checkpoint}.")
        from .pipelines import NeuroImagenPipeline

        pipe = NeuroImagenPipeline.from_pretrained(args.checkpoint, sd_model=args.sd_model).to(args.device)
        pipe.set_progress_bar_config(disable=True)
    metrics: dict = {"command": "python -m neuroimagen.evaluate " + shlex.join(argv or sys.argv[1:]),
                     "preset": preset, "checkpoint": args.checkpoint, "data": args.data, "splits": args.splits,
                     "stimuli": args.stimuli, "threads": torch.get_num_threads(), "versions": _versions(),
                     "caveats": []}
    if pipe is not None:  # what each part is measured on, so that a later run keeps it only for the same weights
        metrics["weights"] = weights_digest(args.checkpoint)
        if args.classifier:
            metrics["weights"]["classifier"] = weights_digest(args.classifier).get(".", "")
        if args.robust_classifier not in (None, "none"):
            metrics["weights"]["robust_classifier"] = weights_digest(args.robust_classifier).get(".", "")
        for key in ("imagenet_classifier", "inception"):  # the paper's protocol: local folders are digested
            if getattr(args, key) and Path(getattr(args, key)).is_dir():
                metrics["weights"][key] = weights_digest(getattr(args, key)).get(".", "")
        for item in args.recon_metrics or []:  # the field's suite: local networks are digested
            name, _, src = item.partition("=")
            if src and Path(src.strip()).exists():
                metrics["weights"][f"recon_{name.strip()}"] = network_digest(src.strip())
    measured_on = {}  # part -> the digests of the weights it runs
    arrays = None

    # 1. Reconstructions and the ablation
    if "reconstruction" in parts and pipe is not None:
        if not args.stimuli:
            raise SystemExit("--stimuli is needed for the reconstruction part.")
        clf_dir = args.classifier or str(Path(args.checkpoint) / "eval_classifier")
        metrics["classifier"] = clf_dir
        robust_dir = _robust_classifier_dir(args)
        if robust_dir is not None:
            metrics["robust_classifier"] = robust_dir
        paper = _paper_metrics(args)
        rec, arrays = run_reconstruction_eval(
            pipe, load_classifier(clf_dir, args.device), args.data, args.splits, args.stimuli, rows=_rows(args.rows),
            limit=args.limit, seed=args.seed, samples_per_trial=args.samples_per_trial, batch_size=args.batch_size,
            num_inference_steps=args.steps, strength=args.strength, guidance_scale=args.guidance, paper=paper,
            robust_classifier=None if robust_dir is None else load_classifier(robust_dir, args.device),
            recon=_recon_metrics(args))
        metrics["reconstruction"] = rec
        measured_on["reconstruction"] = metrics["weights"]
        if args.limit and rec["setup"]["n_trials"] < rec["setup"]["n_test_trials"]:
            metrics["caveats"].append(f"Reconstructions were scored on {rec['setup']['n_trials']} of the "
                                      f"{rec['setup']['n_test_trials']} test trials (--limit {args.limit}), for time; "
                                      f"per-subject numbers rest on few trials each.")
    elif "reconstruction" in parts:
        logger.info("no --checkpoint: skipping the reconstruction part")

    # 2. EEG decoding baselines (and ours)
    if "baselines" in parts:
        methods = tuple(m.strip() for m in args.baselines.split(",") if m.strip())
        metrics["baselines"] = run_baselines(args.data, args.splits, pipe=pipe, methods=methods, seed=args.seed,
                                             xdawn_nfilter=args.xdawn_nfilter, eegnet_epochs=args.eegnet_epochs,
                                             lda_bin_ms=_ms(args.lda_bin_ms, "lda-bin-ms"),
                                             xdawn_bin_ms=_ms(args.xdawn_bin_ms, "xdawn-bin-ms"),
                                             log=logger.info)
        if pipe is None:
            metrics["caveats"].append("No checkpoint was given: our decoders are missing from the baseline table.")
        measured_on["baselines"] = {k: v for k, v in metrics.get("weights", {}).items() if k in BASELINE_COMPONENTS}

    # 3. The block-design effect
    if "block" in parts and args.drift_data:
        if not (args.data and args.splits and args.drift_splits):
            raise SystemExit("The block part needs --data/--splits (no drift) and --drift-data/--drift-splits.")
        metrics["block_design"] = block_design_effect(
            {"no drift": (args.data, args.splits), "block drift": (args.drift_data, args.drift_splits)},
            log=logger.info, max_folds=args.block_folds, lda_bin_ms=_ms(args.lda_bin_ms, "lda-bin-ms"))
        measured_on["block_design"] = {}  # data only

    metrics["part_weights"] = measured_on
    _keep_earlier_parts(metrics, Path(args.out))
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    files = write_report(args.out, metrics, arrays)
    logger.info(f"wrote {', '.join(str(f) for f in files)} in {metrics['wall_s']} s")
    return metrics


def write_index(report_dirs: list[str], out: str | Path) -> Path:
    """``OUT/README.md``: each report's command, headline numbers and a link."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Evaluation reports", "", "Each folder holds `report.md` (tables, protocol, caveats), `metrics.json` "
             "(every number) and the figures. Regenerate with the commands below (then this index with "
             "`python -m neuroimagen.evaluate --index " + " ".join(report_dirs) + f" --out {out}`). A report built in steps lists its earlier commands at its top; `bash scripts/make_reports.sh` "
             "rebuilds the shipped reports, data included.", ""]
    for d in report_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        rel = Path(d).resolve().relative_to(out.resolve()) if Path(d).resolve().is_relative_to(out.resolve()) else d
        title = m["preset"] if str(rel) == m["preset"] else f"{rel} ({m['preset']} preset)"  # folders may share a preset
        lines += [f"## [{title}]({rel}/report.md)", "", "```bash", m["command"], "```", ""]
        rec = m.get("reconstruction")
        if rec:
            full = rec["rows"][FULL]
            lines.append(f"- The paper's full model ({FULL}) on {rec['setup']['n_trials']} test trials x {rec['setup']['samples_per_trial']}: "
                         f"ACC {100 * full['acc']:.1f} % ({rec['setup']['n_classes']}-way top-1), IS {full['is']:.2f}, "
                         f"SSIM {full['ssim']['mean']:.3f}, pixel corr. {full['pixcorr']['mean']:.3f}.")
            default = rec["rows"].get(DEFAULT_ROW)
            if default:
                lines.append(f"- Pipeline default ({DEFAULT_ROW}, the decoded caption's exact states): ACC "
                             f"{100 * default['acc']:.1f} %, IS {default['is']:.2f}, SSIM {default['ssim']['mean']:.3f}, "
                             f"pixel corr. {default['pixcorr']['mean']:.3f}.")
        base = m.get("baselines")
        if base:
            lines.append("- EEG decoding top-1 on the whole test split: " + ", ".join(
                f"{k} {100 * v['top1']:.1f} %" for k, v in base["methods"].items()) + ".")
        block = m.get("block_design")
        if block:
            lines.append("- Block design (LDA top-1, by image / held-out blocks): " + ", ".join(
                f"{k} {100 * v['by_image']:.1f} / {100 * v['held_out_blocks']:.1f} %" for k, v in block.items()) + ".")
        lines.append(f"- Wall time {m['wall_s']} s.")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))
    return out / "README.md"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rerender:
        print(rerender_report(args.out))
        return 0
    if args.index:
        print(write_index(args.index, args.out))
        return 0
    run(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
