"""Reconstructions of held-out trials, scored as the paper: the full model, per subject, and its ablation.

The paper's Table 3 rows map onto the pipeline's arguments (I = saliency map, L = label caption,
B = BLIP caption, here the detailed caption):

=====================  ===================  ==================
row                    ``mode``             ``caption_source``
=====================  ===================  ==================
I only                 ``saliency_only``    (none; ``layout_weight=0``: the generator's map alone)
L only                 ``caption_only``     ``predicted``
B only                 ``caption_only``     ``detailed``
B + I                  ``both``             ``detailed``
L + I (full model)     ``both``             ``predicted``
=====================  ===================  ==================

Every row sees the same trials with the same per-trial, per-sample generators (so the rows differ only
by the ablated part). Each trial gets ``samples_per_trial`` reconstructions; ACC and IS pool them, SSIM
and pixel correlation are averaged over them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .._logging import logger, verbose
from ..data.eeg_imagenet import load_eeg_imagenet
from ..pipelines.pipeline_neuroimagen import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, DEFAULT_STRENGTH
from .baselines import class_order_for
from .metrics import (
    EVAL_SIZE,
    classify_images,
    inception_score,
    mean_sem,
    n_way_accuracy,
    per_class_accuracy,
    pixel_correlation,
    ssim,
    to_eval_images,
)

# Row -> (mode, caption_source[, layout_weight]), in the paper's Table 3 order; FULL is the paper's full model.
# "I only" is the saliency map alone, as in the paper: without the layout prior, whose template is the decoded
# class (semantic information, the L side's) drawn as pixels; "I only + template" below adds it back.
ROWS: dict[str, tuple] = {
    "I only": ("saliency_only", "predicted", 0.0),
    "L only": ("caption_only", "predicted"),
    "B only": ("caption_only", "detailed"),
    "B + I": ("both", "detailed"),
    "L + I": ("both", "predicted"),
}
# Beyond the paper: the label caption snapped to the caption bank's exact states of the decoded class, the default
# call without the layout prior (the generator's map alone), and the saliency row with the prior's template drawn in.
EXTRA_ROWS: dict[str, tuple] = {
    "L* only": ("caption_only", "label"),
    "L* + I": ("both", "label"),
    "L* + I, no layout prior": ("both", "label", 0.0),
    "I only + template": ("saliency_only", "predicted"),
}
# The rows that show what the layout prior adds: run only when the pipeline draws its template by default (with no
# prior, or a default weight of 0, they would repeat "L* + I" and "I only").
PRIOR_ROWS = frozenset({"L* + I, no layout prior", "I only + template"})
FULL = "L + I"
# The row the pipeline's default call makes (caption_source="label"): what the app shows.
DEFAULT_ROW = "L* + I"
N_WAYS = (2, 5, 10)  # the EEG-to-image literature's N-way top-1, besides N = n_classes

# Lan et al. 2023 (arXiv 2308.02510), Table 3: ACC % (50-way top-1, ImageNet classifier), IS (Inception-v3), SSIM;
# then the paper's ACC % per subject.
PAPER_TABLE3 = {
    "I only": (4.5, 16.31, 0.234),
    "L only": (85.9, 34.12, 0.180),
    "B only": (74.1, 29.87, 0.157),
    "B + I": (65.3, 25.86, 0.235),
    "L + I": (85.6, 33.50, 0.249),
}
PAPER_PER_SUBJECT_ACC = (83.84, 84.26, 86.66, 86.48, 87.62, 85.25)


def select_trials(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``limit`` trials, spread over the classes: one of each class in random order, then a
    second of each, and so on (all trials when ``limit`` is None), sorted."""
    labels = np.asarray(labels)
    order = rng.permutation(len(labels))
    if limit is None or limit >= len(labels):
        return np.sort(order)
    rank = np.empty(len(labels), int)  # rank of each trial within its class, in the random order
    seen: dict[int, int] = {}
    for i in order:
        rank[i] = seen.get(int(labels[i]), 0)
        seen[int(labels[i])] = rank[i] + 1
    picked = order[np.argsort(rank[order], kind="stable")][:limit]
    return np.sort(picked)


def trial_generators(seed: int, trial_ids, sample: int) -> list[torch.Generator]:
    """One generator per trial for reconstruction number ``sample``, seeded by (seed, trial, sample).

    The same trial and sample get the same noise in every row of the ablation and in every run.
    """
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, int(t), sample]).generate_state(1)[0]))
            for t in trial_ids]


def reconstruct(pipe, eeg: torch.Tensor, trial_ids, mode: str, caption_source: str, samples_per_trial: int = 3,
                seed: int = 0, batch_size: int = 16, keep_full: int = 0, on_batch: Callable | None = None,
                **call_kwargs) -> dict:
    """Run the pipeline ``samples_per_trial`` times over the trials, in batches.

    Parameters
    ----------
    pipe : NeuroImagenPipeline
    eeg : Tensor, shape (n, n_chans, n_times)
    trial_ids : array-like of int, shape (n,)
        Stable ids of the trials (their indices into the data file), for the generators.
    mode, caption_source : str
        As :class:`~neuroimagen.pipelines.NeuroImagenPipeline`.
    keep_full : int
        Keep the first ``keep_full`` trials' sample-0 outputs at full resolution (for figures).
    on_batch : callable | None
        Called as ``on_batch(trials, sample, images)`` with each batch's full-resolution images (a slice of the
        trials, the sample number, float (b, H, W, 3)): what scores them at their own size
        (:class:`~neuroimagen.evaluation.paper_metrics.PaperMetrics`).
    **call_kwargs
        ``strength``, ``guidance_scale``, ``num_inference_steps``.

    Returns
    -------
    out : dict
        ``images`` (n, K, 64, 64, 3) and ``start`` (n, K, 64, 64, 3), the start images img2img began from (the
        pipeline's ``start_images``), float in [0, 1] at the evaluation size; ``class_probs`` (n, n_classes) of the
        semantic readout; ``captions`` (n,) sample 0's caption; ``full_images`` / ``full_saliency`` (keep_full,
        H, W, 3), the latter the generator's saliency maps (``saliency_maps``); ``seconds``.
    """
    n = len(eeg)
    t0 = time.perf_counter()
    images = np.empty((n, samples_per_trial, EVAL_SIZE, EVAL_SIZE, 3), np.float32)
    start_images = np.empty_like(images)
    class_probs, captions, full_images, full_saliency = None, [""] * n, [], []
    for k in range(samples_per_trial):
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            out = pipe(eeg[sl], generator=trial_generators(seed, trial_ids[sl], k), mode=mode,
                       caption_source=caption_source, output_type="np", **call_kwargs)
            images[sl, k] = to_eval_images(out.images)
            if on_batch is not None:
                on_batch(sl, k, out.images)
            start_images[sl, k] = to_eval_images(out.start_images)
            if class_probs is None:
                class_probs = np.empty((n, out.class_probs.shape[1]), np.float32)
            class_probs[sl] = out.class_probs
            if k == 0:
                captions[sl] = out.caption_used
                for j in range(max(0, min(keep_full, sl.stop) - sl.start)):
                    full_images.append(out.images[j])
                    full_saliency.append(out.saliency_maps[j])
    return {"images": images, "start": start_images, "class_probs": class_probs, "captions": captions,
            "full_images": full_images, "full_saliency": full_saliency,
            "seconds": round(time.perf_counter() - t0, 1)}


def class_scores(probs: np.ndarray, labels: np.ndarray, stimulus_pred: np.ndarray | None = None) -> dict:
    """A classifier's metrics of K images per trial: ACC (N-way top-1, N = all classes), top-5, 2/5/10-way, IS.

    Parameters
    ----------
    probs : ndarray, shape (n, K, n_classes)
        The classifier's probabilities of each image.
    labels : ndarray, shape (n,)
        Each trial's class.
    stimulus_pred : ndarray, shape (n,) | None
        The classifier's class for each stimulus (the paper's ACC target); adds ``acc_vs_stimulus_class``.
    """
    n, k, n_classes = probs.shape
    flat = probs.reshape(n * k, n_classes)
    y = np.repeat(labels, k)
    out = {
        "acc": n_way_accuracy(flat, y, n_classes, 1),
        "acc_top5": n_way_accuracy(flat, y, n_classes, min(5, n_classes)),
        "acc_nway": {int(w): n_way_accuracy(flat, y, w, 1) for w in N_WAYS if w < n_classes},
        "n_trials": int(n), "n_images": int(n * k),
    }
    out["is"], out["is_std"] = inception_score(flat)
    if stimulus_pred is not None:
        out["acc_vs_stimulus_class"] = n_way_accuracy(flat, np.repeat(stimulus_pred, k), n_classes, 1)
    return out


def score_images(probs: np.ndarray, images: np.ndarray, stimuli: np.ndarray, labels: np.ndarray,
                 stimulus_pred: np.ndarray | None = None) -> dict:
    """The paper's metrics for images (n, K, 64, 64, 3) of trials with stimuli (n, 64, 64, 3) and classes (n,).

    Parameters
    ----------
    probs : ndarray, shape (n, K, n_classes)
        The evaluation classifier's probabilities of each image.
    stimulus_pred : ndarray, shape (n,) | None
        The classifier's class for each stimulus (the paper's ACC target); adds ``acc_vs_stimulus_class``.

    Returns
    -------
    metrics : dict
        :func:`class_scores` (``acc``, ``acc_top5``, ``acc_nway``, ``is`` / ``is_std``, ``n_trials``,
        ``n_images``) and ``ssim`` / ``pixcorr`` as ``{"mean", "sem", "n"}`` (means over each trial's samples,
        then over trials).
    """
    n, k = probs.shape[:2]
    out = class_scores(probs, labels, stimulus_pred)
    pairs_a = images.reshape(n * k, *images.shape[2:])
    pairs_b = np.repeat(stimuli, k, axis=0)
    out["ssim"] = mean_sem(ssim(pairs_a, pairs_b).reshape(n, k).mean(1))
    out["pixcorr"] = mean_sem(np.nanmean(pixel_correlation(pairs_a, pairs_b).reshape(n, k), axis=1))
    return out


def shuffled_reference(images: np.ndarray, stimuli: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                       ) -> dict:
    """SSIM and pixel correlation of each reconstruction against another trial's stimulus of another class.

    The level that layout-free similarity (shared backgrounds, a centred blob) reaches by itself: the
    paper reports SSIM without it.
    """
    n, k = images.shape[:2]
    other = np.empty(n, int)
    for i in range(n):
        candidates = np.flatnonzero(labels != labels[i])
        other[i] = rng.choice(candidates) if len(candidates) else (i + 1) % n
    a = images.reshape(n * k, *images.shape[2:])
    b = np.repeat(stimuli[other], k, axis=0)
    return {"ssim": mean_sem(ssim(a, b).reshape(n, k).mean(1)),
            "pixcorr": mean_sem(np.nanmean(pixel_correlation(a, b).reshape(n, k), axis=1))}


def _pick_test_trials(ds, limit: int | None, rng: np.random.Generator) -> tuple:
    """The trials of the test set ``ds`` that :func:`select_trials` picks: their EEG (a tensor), labels, subjects,
    trial ids in the data file, stimuli (a list of (H, W, 3) arrays in [0, 1]) and the stimuli's image indices."""
    eeg_all, labels_all, images_all, subjects_all = ds.arrays()
    pick = select_trials(labels_all, limit, rng)
    eeg = torch.from_numpy(eeg_all[pick])
    del eeg_all
    # A list: real photos differ in size (to_eval_images brings them to one).
    ds.check_stimuli(images_all[pick])  # every missing image named at once, before any is read
    stim = [(ds.stimulus(int(i)).permute(1, 2, 0).numpy() + 1) / 2 for i in images_all[pick]]
    return eeg, labels_all[pick], subjects_all[pick], ds.indices[pick], stim, images_all[pick]


def _probs_of(classifier, images: np.ndarray) -> np.ndarray:
    """A classifier's probabilities (n, K, n_classes) of images (n, K, H, W, 3)."""
    n, k = images.shape[:2]
    return classify_images(classifier, images.reshape(n * k, *images.shape[2:])).reshape(n, k, -1)


def reference_scores(classifier, full: dict, stimuli: np.ndarray, stim_probs: np.ndarray, labels: np.ndarray,
                     stimulus_pred: np.ndarray, rng: np.random.Generator) -> dict:
    """The levels to read the rows against: the stimuli themselves, the full model's start images without any
    diffusion (the saliency maps with the layout prior's templates drawn in, or the maps alone without a prior; key
    ``"saliency_maps"``, as in the reports already written), its reconstructions against other classes' stimuli
    (:func:`shuffled_reference`) and chance."""
    sal = full["start"]
    sal_probs = _probs_of(classifier, sal)
    return {
        "stimuli": score_images(stim_probs[:, None], stimuli[:, None], stimuli, labels),
        "saliency_maps": score_images(sal_probs, sal, stimuli, labels, stimulus_pred),
        "shuffled_pairs": shuffled_reference(full["images"], stimuli, labels, rng),
        "chance_acc": 1.0 / stim_probs.shape[1],
    }


@verbose
def run_reconstruction_eval(pipe, classifier, data: str | Path, splits: str | Path, stimuli_dir: str | Path,
                            rows: dict[str, tuple] | None = None, limit: int | None = None, seed: int = 0,
                            samples_per_trial: int = 3, batch_size: int = 16, num_inference_steps: int = DEFAULT_STEPS,
                            strength: float = DEFAULT_STRENGTH, guidance_scale: float = DEFAULT_GUIDANCE_SCALE, n_figure_trials: int = 8,
                            paper=None, robust_classifier=None, recon=None) -> tuple[dict, dict]:
    """Reconstruct test trials under every ablation row and score them.

    With ``robust_classifier`` (an :class:`~neuroimagen.models.ImageClassifier` trained to be robust to blur, noise
    and low resolution), every row and the stimuli and saliency-map references are also scored by it, under the key
    ``"robust"`` (:func:`class_scores`); the evaluation classifier's keys stay as they are.

    With ``paper``, a :class:`~neuroimagen.evaluation.paper_metrics.PaperMetrics`, every row (and the full model
    per subject) is scored by the paper's protocol on real images too: its key ``"paper"``, the protocol in
    ``results["paper_protocol"]``. With ``recon``, a :class:`~neuroimagen.evaluation.recon_metrics.ReconMetrics`,
    likewise by the field's suite (PixCorr, SSIM, 2-way identification, feature distances): key ``"recon"``, the
    networks in ``results["recon_protocol"]``. Decorated with :func:`~neuroimagen._logging.verbose`: ``verbose=False`` hides
    the per-row progress lines.

    Returns
    -------
    results : dict
        JSON-ready: the setup, ``rows`` (metrics per row), ``per_subject`` (the full model per subject),
        ``references`` (the stimuli themselves, the raw saliency maps, shuffled pairs, chance),
        ``per_class_acc`` of the full model and ``timing``.
    arrays : dict
        For figures: ``stimuli``, ``labels``, per-row ``images``, ``full_images``/``full_saliency`` of the
        first trials, ``captions``, ``class_names``, per-row classifier ``pred``.
    """
    rows = dict(ROWS if rows is None else rows)
    if FULL not in rows:
        raise ValueError(f"The rows must include the full model {FULL!r}: got {list(rows)}.")
    if getattr(pipe, "layout_prior", None) is None or not pipe.default_layout_weight > 0:
        skipped = [r for r in rows if r in PRIOR_ROWS]
        if skipped:
            logger.info(f"Skipping {skipped}: the pipeline draws no layout template by default, so they would "
                        "repeat other rows.")
        rows = {r: spec for r, spec in rows.items() if r not in PRIOR_ROWS}
    rng = np.random.default_rng([seed, 5])
    t0 = time.perf_counter()

    # 1. The test trials, their stimuli and the evaluation classifier's view of the stimuli
    ds = load_eeg_imagenet(data, splits, split="test", stimuli_dir=stimuli_dir)
    n_test = len(ds)
    eeg, labels, subjects, trial_ids, stim, image_ids = _pick_test_trials(ds, limit, rng)
    stimuli = to_eval_images(stim)
    n_classes = len(ds.labels)
    stim_probs = classify_images(classifier, stimuli)
    if stim_probs.shape[1] != n_classes:
        raise ValueError(f"The evaluation classifier has {stim_probs.shape[1]} outputs but the data file has "
                         f"{n_classes} classes: pass a classifier trained on these classes (--classifier).")
    stimulus_pred = stim_probs.argmax(1)
    logger.info(f"{len(labels)} of {n_test} test trials; the classifier gets "
                f"{np.mean(stimulus_pred == labels):.3f} of their stimuli right")
    if robust_classifier is not None:
        robust_stim_probs = classify_images(robust_classifier, stimuli)
        if robust_stim_probs.shape[1] != n_classes:
            raise ValueError(f"The robust classifier has {robust_stim_probs.shape[1]} outputs but the data file has "
                             f"{n_classes} classes: pass one trained on these classes (--robust-classifier).")
        robust_pred = robust_stim_probs.argmax(1)
        logger.info(f"the robust classifier gets {np.mean(robust_pred == labels):.3f} of the stimuli right")
    if paper is not None:
        gt = paper.set_stimuli(stim)
        logger.info(f"the ImageNet classifier puts the seen images in {len(np.unique(gt))} of its classes")
    if recon is not None:
        recon.set_stimuli(stim, image_ids)
    call = {"num_inference_steps": num_inference_steps, "strength": strength, "guidance_scale": guidance_scale}
    order = class_order_for(pipe, ds.labels)  # the readout's columns in the file's label order

    # 2. Every row: reconstruct and score
    results: dict = {
        "setup": {"data": str(data), "splits": str(splits), "stimuli": str(stimuli_dir), "limit": limit,
                  "n_test_trials": int(n_test), "n_trials": int(len(labels)), "seed": seed,
                  "samples_per_trial": samples_per_trial, **call, "eval_size": EVAL_SIZE, "n_classes": n_classes,
                  "class_names": ds.class_names, "layout_prior": pipe.default_layout_weight > 0,
                  "default_layout_weight": pipe.default_layout_weight,
                  "rows": {r: {"mode": spec[0], "caption_source": spec[1],
                               **({"layout_weight": spec[2]} if len(spec) > 2 else {})} for r, spec in rows.items()}},
        "rows": {}, "timing": {},
    }
    arrays: dict = {"stimuli": stimuli, "labels": labels, "subjects": subjects, "class_names": ds.class_names,
                    "stimuli_full": list(stim[:n_figure_trials]), "images": {}, "pred": {}}
    for row, (mode, source, *layout) in rows.items():
        scorers = [s for s in (paper, recon) if s is not None]  # each scores the full-size images batch by batch
        for scorer in scorers:
            scorer.new_row(row, samples_per_trial)
        on_batch = None if not scorers else (
            lambda sl, k, imgs, row=row, scorers=scorers: [scorer.add(row, sl, k, imgs) for scorer in scorers])
        rec = reconstruct(pipe, eeg, trial_ids, mode, source, samples_per_trial, seed, batch_size,
                          keep_full=n_figure_trials if row == FULL else 0, on_batch=on_batch, **call,
                          **({"layout_weight": layout[0]} if layout else {}))
        n, k = rec["images"].shape[:2]
        probs = _probs_of(classifier, rec["images"])
        results["rows"][row] = score_images(probs, rec["images"], stimuli, labels, stimulus_pred)
        if robust_classifier is not None:
            results["rows"][row]["robust"] = class_scores(_probs_of(robust_classifier, rec["images"]), labels,
                                                          robust_pred)
        if paper is not None:
            results["rows"][row]["paper"] = paper.result(row)
        if recon is not None:
            results["rows"][row]["recon"] = recon.result(row)
        results["timing"][row] = {"seconds": rec["seconds"], "seconds_per_image": round(rec["seconds"] / (n * k), 3)}
        arrays["images"][row] = rec["images"]
        arrays["pred"][row] = probs.argmax(-1)
        if row == FULL:
            full, full_probs = rec, probs
        m = results["rows"][row]
        logger.info(f"{row}: ACC {m['acc']:.3f} IS {m['is']:.2f} SSIM {m['ssim']['mean']:.3f} pixcorr "
                    f"{m['pixcorr']['mean']:.3f} ({rec['seconds']} s)")
        if paper is not None:
            pm = m["paper"]
            logger.info(f"{row}, the paper's protocol: ACC {pm['acc']:.3f} ({paper.n_way}-way top-1, ImageNet "
                        f"classifier), IS {pm.get('is', float('nan')):.2f}, SSIM {pm['ssim']['mean']:.3f} at "
                        f"{paper.ssim_size} px")
        if recon is not None:
            logger.info(f"{row}, the field's suite: " + ", ".join(
                f"{k} {v['mean'] if isinstance(v, dict) else v:.3f}" for k, v in m["recon"].items() if k in recon.metrics))

    # 3. The full model per subject, per class; references
    results["per_subject"] = {
        int(s): score_images(full_probs[subjects == s], full["images"][subjects == s], stimuli[subjects == s],
                             labels[subjects == s], stimulus_pred[subjects == s]) for s in np.unique(subjects)}
    if paper is not None:
        for s in np.unique(subjects):
            results["per_subject"][int(s)]["paper"] = paper.result(FULL, subjects == s)
        results["paper_protocol"] = paper.protocol()
    if recon is not None:
        for s in np.unique(subjects):
            results["per_subject"][int(s)]["recon"] = recon.result(FULL, subjects == s)
        results["recon_protocol"] = recon.protocol()
    kf = full_probs.shape[1]
    results["per_class_acc"] = per_class_accuracy(full_probs.argmax(-1).ravel(), np.repeat(labels, kf),
                                                  n_classes).tolist()
    results["references"] = reference_scores(classifier, full, stimuli, stim_probs, labels, stimulus_pred, rng)
    if robust_classifier is not None:
        results["references"]["stimuli"]["robust"] = class_scores(robust_stim_probs[:, None], labels)
        results["references"]["saliency_maps"]["robust"] = class_scores(
            _probs_of(robust_classifier, full["start"]), labels, robust_pred)
    if paper is not None and paper.inception is not None:
        results["references"]["stimuli_paper"] = paper.stimuli_reference()
    decoded = full["class_probs"] if order is None else full["class_probs"][:, order]
    # The pipeline's decoded class (the semantic readout's until checkpoints had a class decoder: hence the name).
    results["semantic_readout_top1_on_these_trials"] = float(np.mean(decoded.argmax(1) == labels))
    results["timing"]["total_s"] = round(time.perf_counter() - t0, 1)
    arrays.update(full_images=full["full_images"], full_saliency=full["full_saliency"], captions=full["captions"],
                  readout_pred=decoded.argmax(1))
    return results, arrays
