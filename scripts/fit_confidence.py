"""Fit and measure the pipeline's confidence and in-distribution check (``neuroimagen.models.DecodingCheck``).

    nice -n 5 python scripts/fit_confidence.py --pipeline runs/tiny-caps/pipeline --preset demo \\
        --report reports/confidence/demo [--out runs/tiny-caps/pipeline]

1. The checkpoint's EEG encoder, semantic decoder and caption bank embed trials of the data set's splits.
   Every trial reaches the model the way a user's file does: the stored trial (500 samples from onset) as
   volts through the steps of ``neuroimagen.data.preprocess`` (band-pass, crop, z-score; checked against
   ``preprocess`` itself on a few trials). Training trials are shown, as the encoder saw them in training,
   half of them as another cap gives them (``training.augment.CapAugment``), so uploads from smaller caps
   are not foreign; so are the validation trials the threshold and the temperature are set on.
2. Foreign inputs, made as raw volts through the same steps: white noise, pink (1/f) noise, channel-shuffled
   and time-reversed trials, trials of the other noise preset and trials of new people (subjects 7-10,
   simulated for held-out images); plus in-distribution uploads simulated for held-out images (subjects
   1-6, the model's cap and smaller caps), which should be accepted.
3. Candidates (max softmax probability, energy, Mahalanobis distance of the features, of the signal
   statistics, and their combination) are compared on **validation** trials and validation-made foreign
   inputs; the component is fitted on training trials, its threshold (``--accept-rate`` of validation trials)
   and temperature on validation trials; the **test** trials and test-made foreign inputs are only measured.
   Trials shorter than 500 samples (the simulator's variable lengths, as the published file's) are left out.
4. ``--report``: ``metrics.json``, ``README.md`` (tables, command, weight SHA-256) and ``reliability.png``;
   the fitted component is saved to ``<report>/decoding_check/`` and, with ``--out``, into that pipeline
   folder (``<out>/decoding_check/``, registered in ``model_index.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOLTS = 10e-6  # the stored trials are z-scored: scaled to a typical EEG amplitude to make them "recordings"
FOREIGN = ("white noise", "pink noise", "channel-shuffled", "time-reversed", "other preset", "new subjects")
GARBAGE = FOREIGN[:-1]  # new subjects are people the model should accept: not used to pick the design
CANDIDATES = ("max softmax", "energy", "features", "signal", "features + signal")
OTHER_CAPS = ("10-10 64", "10-20 32", "10-20 19")


def to_model_space(volts: np.ndarray) -> np.ndarray:
    """(n, 128, n_times) volts on the model's channels at 1 kHz -> model-space trials, as ``preprocess`` makes them."""
    from neuroimagen.data import bandpass, standardize
    from neuroimagen.data.montage import CROP

    out = np.empty((len(volts), volts.shape[1], CROP[1] - CROP[0]), np.float32)
    for k in range(0, len(volts), 256):
        x = bandpass(np.asarray(volts[k:k + 256], np.float32), 1000.0)
        out[k:k + 256] = standardize(x[..., CROP[0]:CROP[1]])
    return out


def check_against_preprocess(volts: np.ndarray, model_space: np.ndarray) -> float:
    """Largest difference between :func:`to_model_space` and ``preprocess`` on the same trials."""
    from neuroimagen.data import EEGTrial, preprocess
    from neuroimagen.data.montage import model_ch_names

    names = list(model_ch_names())
    return max(float(np.abs(preprocess(EEGTrial(v, 1000.0, names)).data - m).max())
               for v, m in zip(volts, model_space))


def load_split(data: Path, splits: Path, split: str, n: int | None, rng: np.random.Generator) -> dict:
    """Stored trials of a split (at most ``n``, drawn at random) as volts, with labels and subjects."""
    import torch

    obj = torch.load(data, weights_only=True, mmap=True)
    idx = np.asarray(torch.load(splits, weights_only=True)["splits"][0][split], int)
    idx = idx[[500 <= obj["dataset"][int(i)]["eeg"].shape[1] <= 600 for i in idx]]
    if n is not None and n < len(idx):
        idx = np.sort(rng.choice(idx, n, replace=False))
    items = [obj["dataset"][int(i)] for i in idx]
    return {"volts": np.stack([t["eeg"][:, :500].numpy() for t in items]).astype(np.float32) * VOLTS,
            "labels": np.array([int(t["label"]) for t in items]), "subjects": np.array([int(t["subject"]) for t in items])}


def split_images(stimuli: Path, split: str, per_class: int, seed: int):
    """``per_class`` images per class of the stimulus set's ``split`` (the data set's image split) and their labels."""
    from neuroimagen.data.simulate import make_image_splits
    from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata

    records = load_stimulus_metadata(stimuli)
    classes = np.array([r.class_index for r in records])
    part = make_image_splits(classes, seed)[split]
    keep = np.concatenate([part[classes[part] == c][:per_class] for c in np.unique(classes)])
    return load_stimulus_images(stimuli, [records[i] for i in keep]), classes[keep]


def pink_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Independent 1/f noise per row (power spectrum ~ 1/f along the last axis), unit RMS."""
    n = shape[-1]
    spec = rng.standard_normal((*shape[:-1], n // 2 + 1)) + 1j * rng.standard_normal((*shape[:-1], n // 2 + 1))
    f = np.fft.rfftfreq(n, 1e-3)
    f[0] = f[1]
    x = np.fft.irfft(spec / np.sqrt(f), n=n, axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def foreign_inputs(split: str, trials: dict, args, rng: np.random.Generator) -> dict[str, dict]:
    """Each foreign kind (and the in-distribution uploads) as model-space trials (+ labels where known)."""
    from neuroimagen.data.simulate import EEGSimulator

    n = args.n_foreign
    pick = rng.choice(len(trials["volts"]), n, replace=False)
    base = trials["volts"][pick]
    shape = (n, base.shape[1], base.shape[2])
    kinds = {
        "white noise": {"volts": VOLTS * rng.standard_normal(shape)},
        "pink noise": {"volts": VOLTS * pink_noise(rng, shape)},
        "channel-shuffled": {"volts": np.stack([v[rng.permutation(len(v))] for v in base])},
        "time-reversed": {"volts": base[..., ::-1].copy()},
    }
    images, labels = split_images(Path(args.stimuli), split, args.per_class, args.seed)
    other = "realistic" if args.preset == "demo" else "demo"
    sims = {"other preset": (other, [1, 6]), "new subjects": (args.preset, [7, 10])}
    if split == "test":  # in-distribution uploads: measured, not used to pick
        sims["uploads, subjects 1-6"] = (args.preset, [1, 6])
    for kind, (preset, (lo, hi)) in sims.items():
        sim = EEGSimulator(preset, seed=0)
        subjects = rng.integers(lo, hi + 1, len(images))
        kinds[kind] = {"volts": sim.simulate(images, labels, subjects, rng, raw=True), "labels": labels}
    out = {k: {"eeg": to_model_space(v["volts"]), "labels": v.get("labels")} for k, v in kinds.items()}
    out["_check"] = check_against_preprocess(kinds["white noise"]["volts"][:3], out["white noise"]["eeg"][:3])
    return out


def cap_uploads(split: str, args, rng: np.random.Generator) -> dict[str, dict]:
    """In-distribution uploads besides the model's cap: trials recorded on smaller caps, read as uploads
    (``preprocess`` interpolates the 128), and averages of trials."""
    from neuroimagen.data import EEGTrial, preprocess
    from neuroimagen.data.caps import cap_info
    from neuroimagen.data.simulate import EEGSimulator

    images, labels = split_images(Path(args.stimuli), split, 1, args.seed)
    out = {}
    for cap in OTHER_CAPS:
        info = cap_info(cap)
        volts = EEGSimulator(args.preset, seed=0, montage=info).simulate(images, labels, rng.integers(1, 7, len(images)),
                                                                         rng, raw=True)
        eeg = np.stack([preprocess(EEGTrial(v, 1000.0, list(info.ch_names))).data for v in volts])
        out[f"uploads, {cap}"] = {"eeg": eeg, "labels": labels}
    # Averages of n trials of one image and person (an ERP: the app's "average all occurrences"), cleaner than
    # any training trial
    sim = EEGSimulator(args.preset, seed=0)
    for n, n_images in ((10, 40), (40, 10)):
        keep = np.arange(0, len(images), len(images) // n_images)[:n_images]
        subjects = np.repeat(rng.integers(1, 7, n_images), n)
        volts = sim.simulate(np.repeat(images[keep], n, 0), np.repeat(labels[keep], n), subjects, rng, raw=True)
        out[f"averages of {n} trials, subjects 1-6"] = {
            "eeg": to_model_space(volts.reshape(n_images, n, *volts.shape[1:]).mean(1)), "labels": labels[keep]}
    return out


def embed(pipe, eeg: np.ndarray) -> dict[str, np.ndarray]:
    """Encoder features, the decoded class probabilities (``pipe.decode_class``: what the pipeline reports) and the
    caption readout's logits (cosine / temperature)."""
    import torch

    feats, probs, logits = [], [], []
    targets = list(pipe.semantic_decoder.config.targets)
    with torch.no_grad():
        for k in range(0, len(eeg), 256):
            x = torch.from_numpy(np.ascontiguousarray(eeg[k:k + 256])).float()
            feats.append(pipe.eeg_encoder(x))
            states = pipe.semantic_decoder(x).float()
            logit = pipe.caption_bank.class_logits(states[:, targets.index("label")])
            logits.append(logit / pipe.caption_bank.config.temperature)
            probs.append(pipe.decode_class(x, states, k=1)["class_probs"])
    return {"eeg": eeg, "features": torch.cat(feats).numpy(), "probs": torch.cat(probs).numpy(),
            "logits": torch.cat(logits).numpy()}


def candidate_scores(check, e: dict) -> dict[str, np.ndarray]:
    """Every candidate's out-of-distribution score (higher: more foreign)."""
    import torch

    z = check.distances(torch.from_numpy(e["features"]), torch.from_numpy(e["eeg"]))
    logits = torch.from_numpy(e["logits"]).double()
    return {"max softmax": -e["probs"].max(1), "energy": -torch.logsumexp(logits, 1).numpy(),
            "features": z["features"].numpy(), "signal": z["signal"].numpy(),
            "features + signal": torch.maximum(z["features"], z["signal"]).numpy()}


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside])), 4)


def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict]:
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return [{"bin": f"{b / n_bins:.1f}-{(b + 1) / n_bins:.1f}", "trials": int((bins == b).sum()),
             "confidence": round(float(conf[bins == b].mean()), 4), "accuracy": round(float(correct[bins == b].mean()), 4)}
            for b in range(n_bins) if (bins == b).any()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_component(check, folder: Path) -> Path:
    check.save_pretrained(folder)
    return next(folder.glob("*.safetensors"))


def install(check, pipeline_dir: Path) -> Path:
    """Save ``check`` as the ``decoding_check`` component of a pipeline folder and register it."""
    weights = save_component(check, pipeline_dir / "decoding_check")
    index_path = pipeline_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    index["decoding_check"] = ["neuroimagen.models.decoding_check", "DecodingCheck"]
    index_path.write_text(json.dumps(dict(sorted(index.items(), key=lambda kv: (not kv[0].startswith("_"), kv[0]))),
                                     indent=2) + "\n")
    return weights


def write_report(m: dict, out: Path) -> None:
    test, cal = m["test"], m["calibration"]
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    lines = [f"# Confidence and in-distribution check ({m['preset']} preset)", "",
             f"Checkpoint `{m['pipeline']}` (EEG encoder SHA-256 `{m['encoder_sha256'][:16]}...`); component "
             f"`decoding_check` (weights SHA-256 `{m['component_sha256']}`). Made by `{m['command']}` in "
             f"{m['seconds']:.0f} s.", "",
             f"**Design**: `ood_score` = the robust z-score (against validation trials) of the Mahalanobis distance of "
             f"the {' and of the '.join(m['scores'])}{' (the larger)' if len(m['scores']) > 1 else ''} "
             f"(`neuroimagen.models.DecodingCheck`); a trial is in distribution when `ood_score <= "
             f"{m['threshold']}`, the threshold that accepts {pct(m['accept_rate'])} of the validation trials. "
             f"`confidence` = the top class's probability after temperature scaling (T = {m['temperature']}, fitted "
             f"on the same validation trials). Every input was made as volts and read through the preprocessing "
             f"(largest difference to `preprocess` itself: {m['preprocess_check']:.1e}).", "",
             "## Candidates on validation trials (AUROC: validation trials against validation-made foreign inputs)", "",
             "| candidate | " + " | ".join(FOREIGN) + " | worst of the garbage kinds |",
             "|---|" + "---|" * (len(FOREIGN) + 1)]
    for name, row in m["candidates_val"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in FOREIGN) + f" | {row['worst']:.3f} |")
    lines += ["", f"Picked: **{m['picked']}** (the best worst-case AUROC over the garbage kinds; new subjects "
              "are people to accept, not garbage, and do not count).", "",
              f"## Held-out test trials ({test['n_test']} trials of the test split)", "",
              f"Test trials flagged (false positive rate at the threshold): **{pct(test['fpr'])}**.", "",
              "| input | trials | AUROC against test trials | flagged at the threshold | goal |",
              "|---|---|---|---|---|"]
    for k, row in test["kinds"].items():
        goal = "AUROC >= 0.95" if k in GARBAGE else "accepted (not foreign)"
        auc = "-" if row["auroc"] is None else f"{row['auroc']:.3f}"
        lines.append(f"| {k} | {row['n']} | {auc} | {pct(row['flagged'])} | {goal} |")
    lines += ["", "New subjects (7-10) are new people of the training population, i.e. every user: the model "
              "should accept them, and a high AUROC there would be a failure, not a success. Their row shows "
              "how far the check tells a new person from the trained ones; 'flagged' is the share the app would "
              "label as foreign. The upload rows are in-distribution trials simulated for held-out images and read "
              "as files (on the model's cap and on smaller caps, interpolated): they should be accepted like the "
              "test trials. Averages of several trials of one image (an ERP, the app's 'average all occurrences') "
              "are cleaner than any single training trial.", "",
              f"'Other preset' are trials of the {'realistic' if m['preset'] == 'demo' else 'demo'} noise preset "
              "(same people and images, other noise), simulated directly. A table for a model trained on the other "
              "preset comes from the same script on that model and its data (`--preset`, `--pipeline`, `--data`, "
              "`--splits`).", "",
              "## Calibration of the class confidence", "",
              f"Temperature T = {m['temperature']}, fitted by NLL on the validation trials the threshold is set on "
              "(half shown as smaller caps give them: users bring other caps), on the decoded class probabilities "
              "(`decode_class`: the class decoder mixed with the readout, whose own temperature the semantic stage "
              "fitted). ECE (15 bins) of the top class's probability, before (`class_probs`) and after "
              "(`confidence`); last column: the "
              f"temperature fitted on the full-cap validation trials instead (T = {cal['temperature_full_cap']}; "
              "measured, not shipped):", "",
              "| trials | top-1 | ECE before | ECE after | ECE, T from full-cap validation trials |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {pct(v['top1'])} | {v['ece_before']:.4f} | {v['ece_after']:.4f} | {v['ece_full_cap_t']:.4f} |"
              for k, v in cal["sets"].items()]
    lines += ["", "Reliability on the test trials (after):", "",
              "| confidence | trials | mean confidence | accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['bin']} | {r['trials']} | {r['confidence']:.3f} | {r['accuracy']:.3f} |" for r in cal["reliability_test"]]
    lines += ["", "![reliability](reliability.png)", ""]
    (out / "README.md").write_text("\n".join(lines))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    rel = cal["reliability_test"]
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect")
    ax.plot([r["confidence"] for r in rel], [r["accuracy"] for r in rel], marker="o", label="test trials")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability ({m['preset']})")
    ax.legend()
    fig.savefig(out / "reliability.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default=str(ROOT / "checkpoints" / "neuroimagen-tiny"), help="pipeline folder")
    p.add_argument("--data", default=str(ROOT / "data" / "sim_demo.pth"))
    p.add_argument("--splits", default=str(ROOT / "data" / "sim_demo_splits.pth"))
    p.add_argument("--stimuli", default=str(ROOT / "data" / "stimuli"))
    p.add_argument("--preset", default="demo", choices=["demo", "realistic"], help="the data's noise preset")
    p.add_argument("--train-trials", type=int, default=3000, help="training trials the Gaussians are fitted on")
    p.add_argument("--n-foreign", type=int, default=300, help="trials of each noise / scrambled kind")
    p.add_argument("--per-class", type=int, default=5, help="simulated images per class (new subjects, presets)")
    p.add_argument("--cap-augment", type=float, default=0.5, help="share of training/validation trials shown as "
                   "another cap (as the encoder was trained; 0: full caps only)")
    p.add_argument("--cache-dir", default=None, help="folder of the cap pool (e.g. the encoder's run folder, which "
                   "has it: cap_augment_32_<seed>.npy); None: computed (about a minute)")
    p.add_argument("--accept-rate", type=float, default=0.95, help="share of validation trials accepted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default=str(ROOT / "reports" / "confidence" / "demo"))
    p.add_argument("--out", default=None, help="pipeline folder to install the component into")
    args = p.parse_args(argv)
    import torch

    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data import standardize
    from neuroimagen.data.montage import CROP
    from neuroimagen.models.decoding_check import (
        DecodingCheck,
        calibrate_decoding_check,
        expected_calibration_error,
        fit_decoding_check,
        fit_temperature,
    )
    from neuroimagen.training.augment import CapAugment

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    pipe = NeuroImagenPipeline.from_pretrained(args.pipeline)
    gen = torch.Generator().manual_seed(args.seed)

    def stage(msg):
        print(f"[confidence] {time.perf_counter() - t0:6.0f} s  {msg}", file=sys.stderr)

    # 1. Training, validation and test trials, as uploads. The Gaussians, the threshold and the temperature see half
    #    of the trials as another cap gives them (as the encoder was trained, as users bring them).
    sets = {}
    for split, n in (("train", args.train_trials), ("val", None), ("test", None)):
        trials = load_split(Path(args.data), Path(args.splits), split, n, rng)
        eeg = to_model_space(trials["volts"])
        sets[split] = {**embed(pipe, eeg), "labels": trials["labels"]}
        if split != "train":  # the foreign inputs are made from them
            sets[split]["volts"] = trials["volts"]
        mixed = {"train": args.cap_augment, "val": args.cap_augment, "test": 1.0}[split]
        if mixed:
            aug = CapAugment(mixed, seed=args.seed, cache_dir=args.cache_dir)
            sets[f"{split} caps"] = {**embed(pipe, aug(torch.from_numpy(eeg), gen).numpy()), "labels": trials["labels"]}
        stage(f"{split}: {len(eeg)} trials embedded")

    # 2. Foreign inputs made from validation trials (to pick) and from test trials (to report)
    foreign = {}
    for split in ("val", "test"):
        made = foreign_inputs(split, sets[split], args, rng)
        check_err = made.pop("_check")
        if split == "test":
            made.update(cap_uploads(split, args, rng))
        foreign[split] = {k: {**embed(pipe, v["eeg"]), "labels": v["labels"]} for k, v in made.items()}
        stage(f"{split}: foreign inputs made ({', '.join(made)})")

    # 3. Fit on training trials, calibrate on validation trials; compare the candidates on validation
    check = DecodingCheck(n_classes=pipe.caption_bank.n_classes, feature_dim=sets["train"]["features"].shape[1],
                          n_chans=pipe.eeg_shape[0], n_times=pipe.eeg_shape[1], sfreq=pipe.eeg_sfreq)
    T = torch.from_numpy
    tr = sets["train caps" if args.cap_augment else "train"]
    va = sets["val caps" if args.cap_augment else "val"]
    te = sets["test"]
    fit_decoding_check(check, T(tr["features"]), T(tr["eeg"]), T(tr["labels"]))
    calibrate_decoding_check(check, T(va["features"]), T(va["eeg"]), accept_rate=args.accept_rate)
    val_scores = candidate_scores(check, va)
    foreign_scores = {k: candidate_scores(check, foreign["val"][k]) for k in FOREIGN}
    candidates = {}
    for name in CANDIDATES:
        row = {k: auroc(val_scores[name], foreign_scores[k][name]) for k in FOREIGN}
        candidates[name] = {**row, "worst": min(row[k] for k in GARBAGE)}
    picked = max(("features", "signal", "features + signal"), key=lambda c: candidates[c]["worst"])
    scores = {"features": ("features",), "signal": ("signal",), "features + signal": ("features", "signal")}[picked]
    calibrate_decoding_check(check, T(va["features"]), T(va["eeg"]), accept_rate=args.accept_rate, scores=scores)
    # The temperature on the same validation trials as the threshold: users bring smaller caps (the full-cap fit is
    # measured as the alternative below)
    check.register_to_config(temperature=round(fit_temperature(T(va["probs"]), T(va["labels"])), 4))
    stage(f"picked {picked}: threshold {check.config.threshold}, temperature {check.config.temperature}")

    # 4. Measure on test trials
    def run(e):
        return check(T(e["features"]), T(e["eeg"]), T(e["probs"]))

    def flagged(r) -> float:
        return round(float((~r["in_distribution"]).float().mean()), 4)

    r_test = run(te)
    kinds = {}
    for k, e in foreign["test"].items():
        r = run(e)
        kinds[k] = {"n": len(e["eeg"]), "auroc": auroc(r_test["ood_score"].numpy(), r["ood_score"].numpy()),
                    "flagged": flagged(r)}
    arrays = standardize(te["volts"][..., CROP[0]:CROP[1]]).astype(np.float32)  # as the training loader reads them
    kinds["test trials as smaller caps give them"] = {"n": len(te["eeg"]), "auroc": None,
                                                      "flagged": flagged(run(sets["test caps"]))}
    kinds["test trials as stored arrays"] = {"n": len(te["eeg"]), "auroc": None, "flagged": flagged(run(embed(pipe, arrays)))}

    # The alternative, measured and not shipped: the temperature fitted on the full-cap validation trials
    t_full = round(fit_temperature(T(sets["val"]["probs"]), T(sets["val"]["labels"])), 4)

    def ece_pair(e):
        before, after = e["probs"], check.calibrate(T(e["probs"])).numpy()
        full = torch.softmax(T(before).clamp_min(1e-30).log() / t_full, -1).numpy()
        correct = before.argmax(1) == e["labels"]
        return {"top1": round(float(correct.mean()), 4), **{k: round(expected_calibration_error(p.max(1), correct), 4)
                for k, p in (("ece_before", before), ("ece_after", after), ("ece_full_cap_t", full))},
                "correct": correct, "confidence": after.max(1)}

    ece = {"validation trials, half as smaller caps (fitted on)": ece_pair(va),
           "validation trials, full cap": ece_pair(sets["val"]), "test trials": ece_pair(te),
           "test trials as smaller caps give them": ece_pair(sets["test caps"]),
           "new subjects": ece_pair(foreign["test"]["new subjects"]),
           "other preset (foreign)": ece_pair(foreign["test"]["other preset"])}
    rel = reliability(ece["test trials"]["confidence"], ece["test trials"]["correct"])
    ece = {k: {kk: vv for kk, vv in v.items() if kk not in ("correct", "confidence")} for k, v in ece.items()}
    weights = save_component(check, Path(args.report) / "decoding_check")
    if args.out:
        install(check, Path(args.out))
    command = "python scripts/fit_confidence.py " + " ".join(sys.argv[1:] if argv is None else argv)
    m = {"preset": args.preset, "pipeline": args.pipeline, "command": command.strip(),
         "encoder_sha256": sha256(next((Path(args.pipeline) / "eeg_encoder").glob("*.safetensors"))),
         "component_sha256": sha256(weights), "scores": list(scores), "picked": picked,
         "threshold": check.config.threshold, "accept_rate": args.accept_rate, "temperature": check.config.temperature,
         "preprocess_check": check_err, "n_train": len(tr["eeg"]), "n_val": len(va["eeg"]),
         "candidates_val": candidates,
         "test": {"n_test": len(te["eeg"]), "fpr": round(float((~r_test["in_distribution"]).float().mean()), 4),
                  "kinds": kinds},
         "calibration": {"sets": ece, "reliability_test": rel, "temperature_full_cap": t_full},
         "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    write_report(m, out)
    print(json.dumps({"picked": picked, "fpr": m["test"]["fpr"],
                      "auroc": {k: v["auroc"] for k, v in kinds.items()}, "ece": ece["test trials"]}))


if __name__ == "__main__":
    main()
