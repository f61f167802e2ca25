"""The evaluation's outputs: figures (object-oriented matplotlib, no pyplot state) and a markdown report.

Every function here takes the JSON-ready results of :mod:`~neuroimagen.evaluation.ablation` and
:mod:`~neuroimagen.evaluation.baselines` (and, for the grid, the arrays the reconstruction run kept) and
returns a :class:`matplotlib.figure.Figure` or a markdown string; :func:`write_report` saves them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..viz import plot_reconstruction_grid
from .ablation import DEFAULT_ROW, FULL, N_WAYS, PAPER_PER_SUBJECT_ACC, PAPER_TABLE3
from .baselines import METHOD_NAMES
from .metrics import confusion_matrix
from .provenance import part_weights


def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _short(names: Sequence[str], width: int = 18) -> list[str]:
    return [n if len(n) <= width else n[:width - 1] + "…" for n in names]


# ----------------------------------------------------------------------------------------------
# Figures
def plot_grid(arrays: dict, n: int = 8):
    """Stimulus / saliency map / reconstruction for the first ``n`` evaluated test trials (full model, sample 0)."""
    k = min(n, len(arrays["full_images"]))
    names = arrays["class_names"]
    titles = [f"{names[int(arrays['labels'][i])]}\n→ {arrays['captions'][i][:40]}" for i in range(k)]
    return plot_reconstruction_grid(arrays["stimuli_full"][:k], arrays["full_saliency"][:k],
                                    arrays["full_images"][:k], titles=titles)


def plot_per_class(series: dict[str, Sequence[float]], class_names: Sequence[str], chance: float | None = None):
    """Grouped bars of per-class accuracy, one group per class, one bar per series."""
    n = len(class_names)
    fig, ax = _figure((max(8.0, 0.32 * n + 2), 4.6))
    ax = ax[0, 0]
    w = 0.8 / max(1, len(series))
    x = np.arange(n)
    for j, (label, vals) in enumerate(series.items()):
        ax.bar(x - 0.4 + w * (j + 0.5), np.nan_to_num(np.asarray(vals, float)), width=w, label=label)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(x, _short(class_names), fontsize=7, rotation=90)
    ax.set(ylim=(0, 1.05), xlim=(-0.6, n - 0.4), ylabel="top-1 accuracy", title="Per-class accuracy (test split)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_confusions(matrices: dict[str, np.ndarray], class_names: Sequence[str]):
    """Row-normalised confusion matrices side by side (row = true class, column = predicted class)."""
    fig, axes = _figure((6.2 * len(matrices), 6.0), 1, len(matrices))
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
        im = ax.imshow(norm, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(class_names) <= 50:
            ax.set_yticks(range(len(class_names)), _short(class_names, 14), fontsize=5)
            ax.set_xticks(range(len(class_names)), _short(class_names, 14), fontsize=5, rotation=90)
        fig.colorbar(im, ax=ax, shrink=0.7, label="fraction of the true class")
    return fig


def plot_ablation(rows: dict[str, dict], paper: dict[str, tuple[float, float, float]] = PAPER_TABLE3):
    """ACC, IS and SSIM per ablation row, ours beside the paper's Table 3."""
    fig, axes = _figure((12, 3.6), 1, 3)
    names = list(rows)
    x = np.arange(len(names))
    ours = {"ACC (%)": [100 * rows[r]["acc"] for r in names], "IS": [rows[r]["is"] for r in names],
            "SSIM": [rows[r]["ssim"]["mean"] for r in names]}
    err = {"ACC (%)": None, "IS": None, "SSIM": [rows[r]["ssim"]["sem"] for r in names]}
    for j, (ax, metric) in enumerate(zip(axes[0], ours)):
        theirs = [paper[r][j] if r in paper else np.nan for r in names]
        ax.bar(x - 0.2, ours[metric], 0.4, yerr=err[metric], label="ours", color="tab:blue")
        ax.bar(x + 0.2, theirs, 0.4, label="paper (Lan et al. 2023)", color="tab:gray")
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.set_title(metric)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Ablation (Table 3): I = saliency map, L = label caption, B = detailed (BLIP) caption")
    return fig


def plot_baselines(runs: dict[str, dict]):
    """Top-1 and top-5 test accuracy of each EEG decoder, one panel per data file (noise preset)."""
    fig, axes = _figure((6.0 * len(runs), 3.8), 1, len(runs))
    for ax, (preset, res) in zip(axes[0], runs.items()):
        methods = list(res["methods"])
        x = np.arange(len(methods))
        ax.bar(x - 0.2, [res["methods"][m]["top1"] for m in methods], 0.4, label="top-1")
        ax.bar(x + 0.2, [res["methods"][m]["top5"] for m in methods], 0.4, label="top-5")
        ax.axhline(1 / res["n_classes"], color="k", ls=":", lw=1, label="chance top-1")
        ax.set_xticks(x, methods, rotation=20, fontsize=8)
        ax.set(ylim=(0, 1), title=f"EEG class decoding, {preset} (n_test = {res['sizes']['test']})")
        ax.legend(fontsize=7)
    return fig


def plot_block_design(block: dict):
    """LDA top-1 with and without block drift, by-image split vs held-out blocks."""
    fig, ax = _figure((6.0, 3.6))
    ax = ax[0, 0]
    conds = list(block)
    x = np.arange(len(conds))
    ax.bar(x - 0.2, [block[c]["by_image"] for c in conds], 0.4, label="split by image (test blocks seen in training)")
    ax.bar(x + 0.2, [block[c]["held_out_blocks"] for c in conds], 0.4, label="held-out blocks (leave one subject out)")
    ax.set_xticks(x, conds)
    ax.set(ylabel="LDA top-1", title="Block design (Li et al. 2020)", ylim=(0, 1))
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------
# Markdown
def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _ms(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['sem']:.3f}" if np.isfinite(d.get("sem", np.nan)) else f"{d['mean']:.3f}"


def _nway(m: dict, n: int) -> float | None:
    """The N-way top-1 of a row: keyed by the int N in memory, by its string once read back from metrics.json."""
    d = m.get("acc_nway") or {}
    return d.get(n, d.get(str(n)))


def _metric_row(name: str, m: dict, paper: str = "") -> str:
    nway = " | ".join(_pct(_nway(m, w)) for w in N_WAYS)
    return (f"| {name} | {m['n_trials']} | {_pct(m['acc'])} | {_pct(m['acc_top5'])} | {nway} | {m['is']:.2f} | "
            f"{_ms(m['ssim'])} | {_ms(m['pixcorr'])} | {paper} |")


METRIC_HEADER = ("| | trials | ACC % (N-way top-1, N = all) | top-5 % | 2-way % | 5-way % | 10-way % | IS | SSIM | "
                 "pixel corr. | paper (ACC / IS / SSIM) |\n|---|---|---|---|---|---|---|---|---|---|---|")


def reconstruction_markdown(rec: dict) -> str:
    """The main table (all subjects, per subject, references) and the ablation table."""
    s = rec["setup"]
    n_cls = s["n_classes"]
    lines = ["## Reconstructions: the paper's metrics", "",
             f"{s['n_trials']} of the {s['n_test_trials']} held-out test trials"
             + (f" (`--limit {s['limit']}`: trials spread over the classes, one per class first, seeded)"
                if s["limit"] else "")
             + f", {s['samples_per_trial']} reconstructions per trial (seeded per trial and sample), "
             f"{s['num_inference_steps']} steps, strength {s['strength']}, guidance {s['guidance_scale']}.", "",
             "**Protocol.** ACC is the paper's N-way top-1: a reconstruction is counted correct when the evaluation "
             "classifier scores its true class above N - 1 other classes drawn at random; the number is the exact "
             "expectation over the draws (ties split at random). The paper used N = 50 of ImageNet's 1,000 "
             f"classes; with the data set's {n_cls} classes N = {n_cls} is plain {n_cls}-way top-1 (chance "
             f"{100 / n_cls:.1f} %). The 2-, 5- and 10-way columns are the EEG-to-image literature's. The target is "
             "the trial's true class (the paper compared with the classifier's class of the stimulus: see "
             "`acc_vs_stimulus_class` in metrics.json). IS = exp(E KL(p(y|x) || p(y))) with the same classifier "
             f"over all reconstructions (1 to {n_cls}; the paper's Inception-v3 scale goes to 1,000, so the "
             "values are not comparable; the paper's own protocol, with an ImageNet classifier and Inception v3, is "
             "the section below when `--imagenet-classifier` was given). SSIM: skimage `structural_similarity` on 64 x 64 RGB "
             "(`channel_axis`, data range 1) against the true stimulus; pixel correlation: Pearson over all "
             "pixels and channels; both as mean ± SEM over trials.", "",
             METRIC_HEADER]
    paper_full = PAPER_TABLE3[FULL]
    lines.append(_metric_row("**Full model (L + I), all subjects**", rec["rows"][FULL],
                             f"{paper_full[0]} / {paper_full[1]} / {paper_full[2]}"))
    for subj, m in rec["per_subject"].items():
        paper = f"{PAPER_PER_SUBJECT_ACC[int(subj) - 1]} / - / -" if 1 <= int(subj) <= 6 else ""
        lines.append(_metric_row(f"subject {subj}", m, paper))
    if DEFAULT_ROW in rec["rows"]:
        lines.append(_metric_row(f"**Pipeline default ({DEFAULT_ROW}: the decoded caption's exact states), all "
                                 "subjects**", rec["rows"][DEFAULT_ROW]))
    ref = rec["references"]
    lines += [_metric_row("*reference: the stimuli themselves*", ref["stimuli"]),
              _metric_row("*reference: the start images alone (saliency maps with the layout prior's templates drawn "
                          "in), no diffusion*" if s.get("layout_prior") else
                          "*reference: saliency maps alone (no diffusion)*", ref["saliency_maps"]), "",
              f"Shuffled pairs (each full-model reconstruction against a stimulus of another class): SSIM "
              f"{_ms(ref['shuffled_pairs']['ssim'])}, pixel correlation {_ms(ref['shuffled_pairs']['pixcorr'])}: the "
              f"level reached without any trial-specific layout. The decoded class's top-1 on these trials (the "
              f"pipeline's `class_probs`: the class decoder's when the checkpoint has one, else the semantic readout's): "
              f"{_pct(rec['semantic_readout_top1_on_these_trials'])} %.", ""]
    lines += robust_markdown(rec)
    lines += ["## Ablation (the paper's Table 3)", "",
              "| row | pipeline call | ACC % | IS | SSIM | pixel corr. | paper ACC % | paper IS | paper SSIM |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row, m in rec["rows"].items():
        cfg = s["rows"][row]
        call = f"`mode={cfg['mode']}`" + ("" if cfg["mode"] == "saliency_only" else f", `{cfg['caption_source']}`") + (
            f", `layout_weight={cfg['layout_weight']:g}`" if "layout_weight" in cfg else "")
        p = PAPER_TABLE3.get(row, ("-", "-", "-"))
        tag = " (full)" if row == FULL else " (pipeline default)" if row == DEFAULT_ROW else ""
        lines.append(f"| {row}{tag} | {call} | {_pct(m['acc'])} | {m['is']:.2f} | "
                     f"{_ms(m['ssim'])} | {_ms(m['pixcorr'])} | {p[0]} | {p[1]} | {p[2]} |")
    lines += ["", "I = saliency map; L = label caption (`predicted`: the semantic decoder's label-caption states; "
              "L* = `label`: the exact states of the decoded class's caption); B = the detailed caption standing in "
              "for BLIP's. "
              + ("Every row but `layout_weight=0` draws the decoded class's template into the saliency map at the "
                 "decoded object box (the checkpoint's layout prior, at its default weight); `mode=caption_only` "
                 "starts from noise and does not use it. " if s.get("layout_prior") else "")
              + "Timing per row (s): " + ", ".join(
                  f"{r} {t['seconds']} ({t['seconds_per_image']} per image)" for r, t in rec["timing"].items()
                  if isinstance(t, dict)) + ".", ""]
    return "\n".join(lines)


def baselines_markdown(runs: dict[str, dict]) -> str:
    """Top-1 / top-5 of every EEG decoder, one column pair per data file."""
    presets = list(runs)
    methods = list(dict.fromkeys(m for r in runs.values() for m in r["methods"]))
    head = "| method | " + " | ".join(f"{p} top-1 % | {p} top-5 % | fit (s)" for p in presets) + " |"
    lines = ["## EEG decoding: baselines beside our models (same split)", "",
             "All fit on the train split (the CNN early-stopped on val) and scored on the whole test split: "
             + "; ".join(f"{p}: {r['sizes']['test']} test trials, {r['n_classes']} classes "
                         f"(chance top-1 {100 / r['n_classes']:.1f} %, top-5 {500 / r['n_classes']:.1f} %)"
                         for p, r in runs.items()) + ".", "", head,
             "|---|" + "---|---|---|" * len(presets)]
    for m in methods:
        cells = []
        for p in presets:
            r = runs[p]["methods"].get(m)
            cells.append(f"{_pct(r['top1'])} | {_pct(r['top5'])} | {r['fit_s']}" if r else "n/a | n/a | n/a")
        lines.append(f"| {METHOD_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
    for p, r in runs.items():
        if "eegnet" in r["methods"]:
            e = r["methods"]["eegnet"]
            lines.append(f"\n{p}: the CNN ran {e['epochs']} epochs (best validation top-1 {_pct(e['best_val_top1'])} %).")
        if r.get("notes"):
            lines += ["", *[f"- {p}: {n}" for n in r["notes"]]]
        lines.append(_verdict(p, r["methods"]))
    return "\n".join(lines) + "\n"


WHY_BASELINE_WINS = (
    "Why: the baselines are trained for the class label alone (the CNN with cross-entropy), while our encoder is "
    "trained with the triplet loss plus a stimulus-thumbnail read-out (its features must also carry layout and "
    "colour for the saliency map) and the semantic decoder regresses caption states with MSE, as the paper; "
    "neither is a classifier fitted to the label, and top-1 scores only the label.")


WHY_CLASS_DECODER_LOSES = (
    "The class decoder is the same kind of CNN as the EEGNet-style baseline, but trained with channel-subset "
    "augmentation (half its training trials shown as other caps give them, for uploads from other caps), which "
    "costs a little accuracy on full-cap trials; its weight against the readout was chosen on validation trials.")


def _verdict(preset: str, methods: dict) -> str:
    """One sentence: does our best decoder beat every baseline on top-1, and if not, which and why."""
    ours = {m: r["top1"] for m, r in methods.items() if m.startswith("ours")}
    base = {m: r["top1"] for m, r in methods.items() if not m.startswith("ours")}
    if not ours or not base:
        return ""
    best_ours = max(ours, key=ours.get)
    beaten_by = [m for m, v in sorted(base.items(), key=lambda kv: -kv[1]) if v >= ours[best_ours]]
    head = f"\n{preset}: our best decoder ({METHOD_NAMES.get(best_ours, best_ours)}) reaches {_pct(ours[best_ours])} % top-1"
    if not beaten_by:
        return head + f"; it beats every baseline (best: {METHOD_NAMES.get(max(base, key=base.get))}, " \
                      f"{_pct(max(base.values()))} %)."
    names = ", ".join(f"{METHOD_NAMES.get(m, m)} ({_pct(base[m])} %)" for m in beaten_by)
    return head + f"; it does **not** beat {names}. " + (WHY_CLASS_DECODER_LOSES if "ours_class" in ours
                                                        else WHY_BASELINE_WINS)


def block_markdown(block: dict) -> str:
    """The block-design comparison and what it means for the real data set."""
    lines = ["## The block-design effect (Li et al. 2020)", "",
             "| data | LDA top-1 %, split by image (test blocks seen in training) | LDA top-1 %, held-out blocks "
             "(leave one subject out) |", "|---|---|---|"]
    for cond, r in block.items():
        lines.append(f"| {cond} (`{Path(r['data']).name}`) | {_pct(r['by_image'])} | {_pct(r['held_out_blocks'])} |")
    conds = list(block)
    if len(conds) == 2:
        a, b = (block[c] for c in conds)
        lines += ["", f"Drift adds {100 * (b['by_image'] - a['by_image']):+.1f} points on the by-image split and "
                  f"{100 * (b['held_out_blocks'] - a['held_out_blocks']):+.1f} points when the test blocks are held "
                  "out."]
    lines += ["", "EEG-ImageNet showed the 50 images of each class in one block per subject. The published split is by "
              "image, so every test trial shares its recording block (and the block's slow drifts: electrode "
              "impedance, arousal, temperature) with training trials of the same class, and a classifier can learn "
              "the block instead of the image. On the drift data the by-image split therefore rewards reading the "
              "recording time; with the blocks held out, the drift carries no class information and the gain "
              "disappears. Here blocks can only be held out by holding a subject out (one block per class and "
              "subject), which also costs the between-subject differences: compare each split with and without "
              "drift, not the two splits with each other. For the real files, any accuracy on the by-image split "
              "is an upper bound that may be mostly block signal (Li et al., TPAMI 2020, found chance-level "
              "accuracy when the same stimuli were shown in a randomised, rapid-event design).", ""]
    return "\n".join(lines)


def write_report(out: str | Path, metrics: dict, arrays: dict | None = None) -> list[Path]:
    """Write ``metrics.json``, ``report.md`` and the figures (PNG) into ``out``; return the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, figures = [], []
    for name, fig in report_figures(metrics, arrays).items():
        fig.savefig(out / name, dpi=110)
        written.append(out / name)
        figures.append(f"![{name}]({name})")
    (out / "report.md").write_text(report_markdown(metrics, figures))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
    return [out / "report.md", out / "metrics.json", *written]


def report_figures(metrics: dict, arrays: dict | None = None) -> dict:
    """The report's figures by file name, in the order of ``FIGURES``: those the parts in ``metrics`` (and, for the
    reconstructions' grid and confusion matrix, the ``arrays`` of the run) allow."""
    rec, base, block = metrics.get("reconstruction"), metrics.get("baselines"), metrics.get("block_design")
    names = (rec or {}).get("setup", {}).get("class_names") or (base or {}).get("class_names", [])
    series, confusions = _per_class_results(rec, base, arrays, len(names))
    figs = {}
    if rec is not None and arrays is not None and arrays.get("full_images"):
        figs["reconstructions.png"] = plot_grid(arrays)
    if rec is not None:
        figs["ablation.png"] = plot_ablation(rec["rows"])
    if base is not None:
        figs["baselines.png"] = plot_baselines({metrics.get("preset", "data"): base})
    if series:
        figs["per_class_accuracy.png"] = plot_per_class(series, names, 1 / len(names))
    if confusions:
        figs["confusion.png"] = plot_confusions(confusions, names)
    if block is not None:
        figs["block_design.png"] = plot_block_design(block)
    return figs


def _per_class_results(rec: dict | None, base: dict | None, arrays: dict | None,
                       n_classes: int) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """Per-class accuracies and confusion matrices to plot, by title: the full model's reconstructions (the
    matrix needs the run's ``arrays``) and the EEG decoders our semantic readout and LDA."""
    series, confusions = {}, {}
    if rec is not None:
        series["reconstructions, full model (classifier)"] = rec["per_class_acc"]
        if arrays is not None:
            k = arrays["pred"][FULL].shape[1]
            confusions["reconstructions (full model), evaluation classifier"] = confusion_matrix(
                arrays["pred"][FULL].ravel(), np.repeat(arrays["labels"], k), n_classes)
    if base is not None:
        for m in ("ours_class", "ours_semantic", "lda"):
            if m in base["methods"]:
                series[f"EEG: {METHOD_NAMES[m]} (whole test split)"] = base["methods"][m]["per_class_top1"]
                confusions[f"EEG decoding: {METHOD_NAMES[m]}"] = np.asarray(base["methods"][m]["confusion"])
    return series, confusions


UNVERIFIED_PARTS = (
    "**Provenance.** The parts of this report come from different commands and at least one was written before "
    "reports recorded the digests of the weights they measured (`weights`, `part_weights` in metrics.json), so "
    "nothing here shows that they measured the same weights. A run now keeps an earlier part only when its "
    "digests match.")

# The figures write_report can make, in the order the report shows them.
FIGURES = ("reconstructions.png", "ablation.png", "baselines.png", "per_class_accuracy.png", "confusion.png",
           "block_design.png")


def robust_markdown(rec: dict) -> list[str]:
    """Lines of the table that puts the robust classifier's numbers beside the evaluation classifier's (none when the
    reconstructions were not scored by a robust classifier)."""
    if "robust" not in rec["references"]["stimuli"]:
        return []
    ref = rec["references"]
    lines = ["### Both classifiers", "",
             "The evaluation classifier (the columns above, kept for continuity) and the robust classifier (trained "
             "with blur, noise, colour, down-up and JPEG degradation and crops, `--robust-classifier`): ACC % (N-way "
             "top-1, N = all), 10-way % and IS of each; `robust` in metrics.json. ACC relative to the stimuli: the "
             "row's ACC as a share of the same classifier's ACC on the stimuli themselves.", "",
             "| | ACC % | robust ACC % | 10-way % | robust 10-way % | IS | robust IS | ACC relative to stimuli % | "
             "robust, relative % |", "|---|---|---|---|---|---|---|---|---|"]
    items = [*rec["rows"].items(), ("*the stimuli themselves*", ref["stimuli"]),
             ("*saliency maps / start images alone*", ref["saliency_maps"])]
    def relative(acc: float, of_stimuli: float) -> float:
        return acc / of_stimuli if of_stimuli > 0 else float("nan")

    for name, m in items:
        r = m["robust"]
        lines.append(f"| {name} | {_pct(m['acc'])} | {_pct(r['acc'])} | {_pct(_nway(m, 10))} | {_pct(_nway(r, 10))} | "
                     f"{m['is']:.2f} | {r['is']:.2f} | {_pct(relative(m['acc'], ref['stimuli']['acc']))} | "
                     f"{_pct(relative(r['acc'], ref['stimuli']['robust']['acc']))} |")
    return lines + [""]


def report_markdown(metrics: dict, figures: Sequence[str]) -> str:
    """``report.md`` from the metrics (as computed, or as read back from metrics.json) and the figures' markdown."""
    rec, base, block = metrics.get("reconstruction"), metrics.get("baselines"), metrics.get("block_design")
    md = [f"# NeuroImagen evaluation: {metrics.get('preset', '')}", "",
          f"Command: `{metrics['command']}`", "",
          *[f"Parts kept from an earlier command (same data; same weights when their digests are recorded): `{c}`\n" for c in metrics.get("earlier_commands", [])],
          f"Checkpoint `{metrics.get('checkpoint')}`, evaluation classifier `{metrics.get('classifier')}`"
          + (f" (and the robust classifier `{metrics['robust_classifier']}`)" if metrics.get("robust_classifier") else "")
          + ", data "
          f"`{metrics.get('data')}` with splits `{metrics.get('splits')}`. Wall time {metrics.get('wall_s')} s on "
          f"{metrics.get('threads')} torch thread(s); versions {metrics.get('versions')}.", "",
          *(["Weights (SHA-256, first 16 hex digits, `neuroimagen.evaluation.provenance`): "
             + ", ".join(f"{k} `{v}`" for k, v in metrics["weights"].items()) + ".", ""]
            if metrics.get("weights") else []),
          *([UNVERIFIED_PARTS, ""] if metrics.get("earlier_commands") and any(
              part_weights(metrics, k) is None for k in ("reconstruction", "baselines", "block_design") if k in metrics)
            else [])]
    if rec is not None:
        md.append(reconstruction_markdown(rec))
        if "paper_protocol" in rec:
            from .paper_metrics import paper_markdown

            md.append(paper_markdown(rec))
        if "recon_protocol" in rec:
            from .recon_metrics import recon_markdown

            md.append(recon_markdown(rec))
    if base is not None:
        md.append(baselines_markdown({metrics.get("preset", "data"): base}))
    if block is not None:
        md.append(block_markdown(block))
    if metrics.get("caveats"):
        md += ["## Caveats", "", *[f"- {c}" for c in metrics["caveats"]], ""]
    md += ["## Figures", "", *figures, ""]
    return "\n".join(md)


def rerender_report(out: str | Path) -> Path:
    """Rewrite ``out/report.md`` from ``out/metrics.json`` and the figures already there (nothing is recomputed).

    For reports written by an earlier version of this module: the text follows the current renderer, the numbers
    stay those of metrics.json.
    """
    out = Path(out)
    f = out / "metrics.json"
    if not f.is_file():
        raise FileNotFoundError(f"No metrics.json in {out}: rerendering needs a report folder written by "
                                "'python -m neuroimagen.evaluate'.")
    metrics = json.loads(f.read_text())
    figures = [f"![{name}]({name})" for name in FIGURES if (out / name).is_file()]
    (out / "report.md").write_text(report_markdown(metrics, figures))
    return out / "report.md"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
