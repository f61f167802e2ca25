"""Evaluation: the metrics against hand-computed values, and ``python -m neuroimagen.evaluate`` end to end
on a tiny synthetic data set, a tiny stimulus set and the tiny random pipeline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from neuroimagen.evaluation.metrics import (
    classify_images,
    inception_score,
    n_way_accuracy,
    pixel_correlation,
    ssim,
    top_k_accuracy,
)

N_CLASSES = 40


# ------------------------------------------------------------------------------------------------ metrics
def test_ssim_identical_is_one_and_different_is_less():
    rng = np.random.default_rng(0)
    img = rng.random((3, 64, 64, 3))
    np.testing.assert_allclose(ssim(img, img), 1.0)
    other = rng.random((3, 64, 64, 3))
    assert np.all(ssim(img, other) < 0.2)
    # Another size is brought to 64 x 64 first: an upscaled copy still matches its source closely.
    big = np.repeat(np.repeat(img, 4, axis=1), 4, axis=2)
    assert np.all(ssim(big, img) > 0.95)


def test_pixel_correlation_of_self_and_negative():
    rng = np.random.default_rng(1)
    img = rng.random((2, 64, 64, 3))
    np.testing.assert_allclose(pixel_correlation(img, img), 1.0)
    np.testing.assert_allclose(pixel_correlation(img, 1.0 - img), -1.0)
    assert np.isnan(pixel_correlation(np.full((64, 64, 3), 0.5), img[0])).all()  # constant image: undefined


def test_inception_score_bounds():
    assert inception_score(np.full((10, N_CLASSES), 1 / N_CLASSES))[0] == pytest.approx(1.0)
    # Perfectly confident over K evenly used classes: exactly K.
    for k in (2, 7):
        probs = np.eye(N_CLASSES)[np.arange(5 * k) % k]
        assert inception_score(probs)[0] == pytest.approx(k)
    # Confident but all on one class: 1 again (no diversity).
    assert inception_score(np.eye(N_CLASSES)[np.zeros(8, int)])[0] == pytest.approx(1.0)
    # Half the mass confident on 4 classes: exp(KL) by hand.
    p = np.full((4, 4), 0.5 / 3)
    np.fill_diagonal(p, 0.5)
    kl = 0.5 * np.log(0.5 / 0.25) + 3 * (0.5 / 3) * np.log((0.5 / 3) / 0.25)
    assert inception_score(p)[0] == pytest.approx(np.exp(kl))


def test_n_way_accuracy_matches_hand_calculation():
    # One sample per row; scores over 4 classes.
    probs = np.array([[0.1, 0.4, 0.3, 0.2],   # true 0: lowest, three classes above it
                      [0.1, 0.4, 0.3, 0.2],   # true 2: one class (1) above it
                      [0.1, 0.4, 0.3, 0.2]])  # true 1: the highest
    labels = np.array([0, 2, 1])
    # 2-way: one distractor of three. Row 0 never; row 1 unless class 1 drawn (2/3); row 2 always.
    assert n_way_accuracy(probs, labels, 2) == pytest.approx((0 + 2 / 3 + 1) / 3)
    # 3-way: two distractors of three. Row 1 wins only with {0, 3}: 1 of C(3, 2) = 3 draws.
    assert n_way_accuracy(probs, labels, 3) == pytest.approx((0 + 1 / 3 + 1) / 3)
    # 3-way top-2: row 1 is at worst second; row 0 is third whenever two of {1, 2, 3} are drawn (always).
    assert n_way_accuracy(probs, labels, 3, k=2) == pytest.approx((0 + 1 + 1) / 3)
    # N = all classes: plain top-1.
    assert n_way_accuracy(probs, labels, 4) == pytest.approx(1 / 3) == top_k_accuracy(probs, labels, 1)
    # The sampled protocol converges to the exact expectation.
    mc = n_way_accuracy(probs, labels, 2, n_repeats=3000, rng=np.random.default_rng(0))
    assert mc == pytest.approx((2 / 3 + 1) / 3, abs=0.02)
    # Ties are split at random: a uniform classifier is at chance k / N.
    uniform = np.full((6, N_CLASSES), 1 / N_CLASSES)
    for n, k in ((2, 1), (10, 1), (10, 3), (N_CLASSES, 5)):
        assert n_way_accuracy(uniform, np.arange(6), n, k) == pytest.approx(k / n)
    with pytest.raises(ValueError, match="n_way"):
        n_way_accuracy(probs, labels, 5)
    with pytest.raises(ValueError, match="rng"):
        n_way_accuracy(probs, labels, 2, n_repeats=10)


class _ColourOracle(torch.nn.Module):
    """Classifies an image by its mean colour, nearest of a palette: perfect on the palette's solid images."""

    def __init__(self, palette: np.ndarray):
        super().__init__()
        self.palette = torch.nn.Parameter(torch.as_tensor(palette, dtype=torch.float32) * 2 - 1, requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(2, 3))
        return -20 * torch.cdist(mean, self.palette)


def test_perfect_reconstruction_scores_perfectly():
    from neuroimagen.evaluation.ablation import score_images

    rng = np.random.default_rng(2)
    palette = rng.random((N_CLASSES, 3))
    labels = np.arange(N_CLASSES)
    stimuli = np.broadcast_to(palette[:, None, None, :], (N_CLASSES, 64, 64, 3)).copy()
    stimuli += rng.normal(0, 0.01, stimuli.shape)  # texture, so the correlation is defined
    oracle = _ColourOracle(palette)
    probs = classify_images(oracle, stimuli)
    assert top_k_accuracy(probs, labels) == 1.0
    # Reconstructions equal to the stimuli, two samples each: ACC, SSIM and pixel correlation 1, IS near 40.
    images = np.repeat(stimuli[:, None], 2, axis=1)
    m = score_images(np.repeat(probs[:, None], 2, axis=1), images, stimuli, labels, probs.argmax(1))
    assert m["acc"] == 1.0 and m["acc_vs_stimulus_class"] == 1.0
    assert all(v == 1.0 for v in m["acc_nway"].values())
    assert m["ssim"]["mean"] == pytest.approx(1.0) and m["pixcorr"]["mean"] == pytest.approx(1.0)
    assert m["is"] > 0.9 * N_CLASSES
    # Reconstructions of the wrong class (shifted by one): ACC 0.
    wrong = score_images(np.repeat(probs[np.roll(labels, 1)][:, None], 2, axis=1), images, stimuli, labels)
    assert wrong["acc"] == 0.0


def test_trial_selection_spreads_over_classes_and_generators_are_reproducible():
    from neuroimagen.evaluation.ablation import select_trials, trial_generators

    labels = np.repeat(np.arange(10), 7)
    pick = select_trials(labels, 20, np.random.default_rng(0))
    assert len(pick) == 20 and np.all(np.bincount(labels[pick], minlength=10) == 2)
    assert np.array_equal(pick, select_trials(labels, 20, np.random.default_rng(0)))
    a = [torch.randn(3, generator=g) for g in trial_generators(0, [5, 9], 0)]
    b = [torch.randn(3, generator=g) for g in trial_generators(0, [5, 9], 0)]
    c = [torch.randn(3, generator=g) for g in trial_generators(0, [5, 9], 1)]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1]) and not torch.equal(a[0], c[0])


# ------------------------------------------------------------------------------------------------ end to end
def _synthetic(path, stim_records, n_subjects: int, class_signal: float, drift: float, seed: int):
    """An EEG-ImageNet-format file: per-class evoked topographies (+ optional per-(subject, class) block drift, a
    slow ramp with its own topography) and noise; splits by image (per class: 2 train, 1 val, 1 test images)."""
    from neuroimagen.data.eeg_imagenet import save_eeg_imagenet, save_splits

    rng = np.random.default_rng(seed)
    n_times = 470
    t = np.linspace(0, 1, n_times)
    evoked = np.exp(-0.5 * ((t - 0.3) / 0.1) ** 2)  # one slow component: survives any time binning
    topographies = rng.standard_normal((N_CLASSES, 128, 1))
    classes = np.array([r.class_index for r in stim_records])
    eeg, images, labels, subjects = [], [], [], []
    for s in range(1, n_subjects + 1):
        for c in range(N_CLASSES):
            block = rng.standard_normal((128, 1)) * (t - 0.5)  # one recording block per class and subject
            for i in np.flatnonzero(classes == c):
                x = class_signal * topographies[c] * evoked + drift * block + rng.standard_normal((128, n_times))
                eeg.append(x.astype(np.float32))
                images.append(int(i))
                labels.append(c)
                subjects.append(s)
    save_eeg_imagenet(path, eeg, images, labels, subjects, images=[r.image for r in stim_records])
    rank = np.array([int(r.image.split("_")[-1]) for r in stim_records])  # 1..per_class within a class
    part = {"train": rank <= 2, "val": rank == 3, "test": rank == 4}
    save_splits(path.with_name(path.stem + "_splits.pth"),
                {k: [n for n, i in enumerate(images) if v[i]] for k, v in part.items()})
    return path, path.with_name(path.stem + "_splits.pth")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from tiny_pipeline import make_tiny_pipeline

    from neuroimagen.data.stimuli import load_stimulus_metadata, make_stimulus_set
    from neuroimagen.models import ImageClassifier

    root = tmp_path_factory.mktemp("evaluation")
    make_stimulus_set(root / "stimuli", per_class=4, seed=0)
    recs = load_stimulus_metadata(root / "stimuli")
    data = _synthetic(root / "eeg.pth", recs, n_subjects=3, class_signal=0.3, drift=0.0, seed=0)
    # Drift only, no class signal. Three subjects each, so a held-out subject leaves 4 training trials per class.
    drift = _synthetic(root / "eeg_drift.pth", recs, n_subjects=3, class_signal=0.0, drift=0.5, seed=1)
    make_tiny_pipeline(seed=0).save_pretrained(root / "pipe")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ImageClassifier(n_outputs=N_CLASSES, base_channels=4).save_pretrained(root / "pipe" / "eval_classifier")
    return {"root": root, "data": data, "drift": drift}


def test_evaluate_end_to_end(tiny_setup):
    from neuroimagen.evaluate import main

    s = tiny_setup
    out = s["root"] / "report"
    argv = ["--checkpoint", str(s["root"] / "pipe"), "--data", str(s["data"][0]), "--splits", str(s["data"][1]),
            "--stimuli", str(s["root"] / "stimuli"), "--out", str(out), "--preset", "tiny", "--limit", "6",
            "--samples-per-trial", "2", "--steps", "2", "--batch-size", "4", "--eegnet-epochs", "2",
            "--lda-bin-ms", "100", "--xdawn-bin-ms", "40",
            "--drift-data", str(s["drift"][0]), "--drift-splits", str(s["drift"][1]), "--block-folds", "1"]
    assert main(argv) == 0
    for f in ("metrics.json", "report.md", "reconstructions.png", "ablation.png", "per_class_accuracy.png",
              "confusion.png", "baselines.png", "block_design.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    rec = m["reconstruction"]
    # the paper's five rows, then the snapped-label rows: L* + I is what the pipeline's default call makes
    assert list(rec["rows"]) == ["I only", "L only", "B only", "B + I", "L + I", "L* only", "L* + I"]  # no prior here
    assert rec["setup"]["rows"]["L* + I"] == {"mode": "both", "caption_source": "label"}
    assert "| L* + I (pipeline default) |" in (out / "report.md").read_text()
    assert rec["setup"]["n_trials"] == 6 and rec["setup"]["samples_per_trial"] == 2
    for row in rec["rows"].values():
        assert {"acc", "acc_top5", "acc_nway", "is", "ssim", "pixcorr"} <= set(row)
        assert row["n_images"] == 12 and 1 - 1e-6 <= row["is"] <= N_CLASSES
        # Fewer distractors, more often right: N-way top-1 falls with N, down to the 40-way ACC.
        nway = row["acc_nway"]
        assert nway["2"] >= nway["5"] >= nway["10"] >= row["acc"] and nway["2"] > row["acc"]
    assert set(rec["per_subject"]) <= {"1", "2", "3"} and sum(v["n_trials"] for v in rec["per_subject"].values()) == 6
    # The stimuli themselves are the SSIM / correlation ceiling.
    assert rec["references"]["stimuli"]["ssim"]["mean"] == pytest.approx(1.0)
    base = m["baselines"]
    assert set(base["methods"]) == {"lda", "xdawn", "eegnet", "ours_semantic", "ours_probe"}
    assert base["sizes"] == {"train": 240, "val": 120, "test": 120}
    # The synthetic classes are separable: LDA must decode them far above chance (2.5 %).
    assert base["methods"]["lda"]["top1"] > 0.5
    for r in base["methods"].values():
        assert 0 <= r["top1"] <= r["top5"] <= 1 and len(r["confusion"]) == N_CLASSES
    # Drift-only data: the block is the only class information, so the by-image split is fooled and the
    # held-out-blocks split is not.
    block = m["block_design"]
    assert block["block drift"]["by_image"] > 0.5 > 0.15 > block["block drift"]["held_out_blocks"]
    assert block["no drift"]["by_image"] > 0.5 and block["no drift"]["held_out_blocks"] > 0.5
    report = (out / "report.md").read_text()
    for heading in ("the paper's metrics", "Ablation (the paper's Table 3)", "baselines beside our models",
                    "block-design effect", "N-way top-1"):
        assert heading in report
    # The 2-, 5- and 10-way columns hold the numbers of metrics.json (whose keys JSON made strings) ...
    full = next(line for line in report.splitlines() if line.startswith("| **Full model (L + I), all subjects** |"))
    cells = [c.strip() for c in full.split("|")[1:-1]]
    assert cells[4:7] == [f"{100 * rec['rows']['L + I']['acc_nway'][n]:.1f}" for n in ("2", "5", "10")]
    # ... and the report rendered again from metrics.json alone is the same report.
    assert main(["--rerender", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    assert m["part_weights"]["reconstruction"] == m["weights"] and m["part_weights"]["block_design"] == {}
    assert set(m["part_weights"]["baselines"]) == {"eeg_encoder", "semantic_decoder", "caption_bank"}
    # The index of reports.
    assert main(["--index", str(out), "--out", str(s["root"])]) == 0
    assert "tiny" in (s["root"] / "README.md").read_text()


def test_the_layout_prior_gets_its_own_ablation_row(tiny_setup):
    """With a layout prior, "all" rows add the default call without it (layout_weight=0); the report names the
    weight in the row's call. Without a prior the row would repeat the default row, so it is skipped."""
    from tiny_pipeline import make_tiny_pipeline

    from neuroimagen.evaluate import load_classifier
    from neuroimagen.evaluation.ablation import EXTRA_ROWS, ROWS, run_reconstruction_eval
    from neuroimagen.evaluation.report import reconstruction_markdown

    s = tiny_setup
    clf = load_classifier(s["root"] / "pipe" / "eval_classifier")
    rows = {r: spec for r, spec in {**ROWS, **EXTRA_ROWS}.items()
            if r in ("I only", "L + I", "L* + I", "L* + I, no layout prior", "I only + template")}
    kw = dict(limit=4, samples_per_trial=1, num_inference_steps=2, batch_size=4, verbose=False)
    with_prior, _ = run_reconstruction_eval(make_tiny_pipeline(seed=0, layout_prior=True), clf, *s["data"],
                                            s["root"] / "stimuli", rows=rows, **kw)
    assert list(with_prior["rows"]) == ["I only", "L + I", "L* + I", "L* + I, no layout prior", "I only + template"]
    assert with_prior["setup"]["rows"]["L* + I, no layout prior"]["layout_weight"] == 0.0
    assert with_prior["setup"]["rows"]["I only"]["layout_weight"] == 0.0  # the paper's I: the saliency map alone
    a, b = with_prior["rows"]["L* + I"], with_prior["rows"]["L* + I, no layout prior"]
    assert a["ssim"]["mean"] != b["ssim"]["mean"]  # the template changed the images
    i, i_template = with_prior["rows"]["I only"], with_prior["rows"]["I only + template"]
    assert i["ssim"]["mean"] != i_template["ssim"]["mean"]
    report = reconstruction_markdown(with_prior)
    assert "`mode=both`, `label`, `layout_weight=0`" in report and "layout prior's templates drawn in" in report
    assert "| I only | `mode=saliency_only`, `layout_weight=0` |" in report
    plain, _ = run_reconstruction_eval(make_tiny_pipeline(seed=0), clf, *s["data"], s["root"] / "stimuli",
                                       rows=rows, **kw)
    assert list(plain["rows"]) == ["I only", "L + I", "L* + I"]  # the others would repeat these without a prior
    assert plain["rows"]["L* + I"]["ssim"] == b["ssim"]  # weight 0 is the pipeline without a prior
    assert plain["rows"]["I only"]["ssim"] == i["ssim"]
    # In any order, and with a prior whose default weight is 0, the rows that show the prior are the ones left out.
    odd = {r: rows[r] for r in ("I only + template", "L* + I, no layout prior", "L + I", "L* + I", "I only")}
    off = make_tiny_pipeline(seed=0, layout_prior=True)
    off.layout_prior.register_to_config(default_weight=0.0)
    for pipe in (make_tiny_pipeline(seed=0), off):
        res, _ = run_reconstruction_eval(pipe, clf, *s["data"], s["root"] / "stimuli", rows=odd, **kw)
        assert list(res["rows"]) == ["L + I", "L* + I", "I only"]


def test_the_baselines_score_the_class_the_pipeline_decodes(tiny_setup):
    """With a class decoder the table gets the pipeline's own decoded class (``ours_class``) beside the readout: a
    decoder that always names class 5 is right exactly on class 5's test trials, whatever the readout says."""
    from tiny_pipeline import make_tiny_pipeline

    from neuroimagen.data.classes import SYNSETS
    from neuroimagen.evaluation.baselines import load_split, run_baselines
    from neuroimagen.models import ClassDecoder

    pipe = make_tiny_pipeline(seed=0)
    dec = ClassDecoder(ch_names=pipe.eeg_ch_names, labels=list(SYNSETS)).eval()
    with torch.no_grad():
        dec.final_layer.weight.zero_()
        dec.final_layer.bias.zero_()
        dec.final_layer.bias[5] = 20.0
    pipe.register_modules(class_decoder=dec)
    data, splits = tiny_setup["data"]
    res = run_baselines(data, splits, pipe=pipe, methods=("lda",), log=lambda msg: None)
    assert list(res["methods"]) == ["lda", "ours_class", "ours_semantic", "ours_probe"]
    labels = load_split(data, splits, "test").labels
    ours = res["methods"]["ours_class"]
    assert ours["top1"] == pytest.approx(float((labels == 5).mean()))
    assert ours["per_class_top1"][5] == 1.0 and sum(ours["per_class_top1"]) == 1.0
    assert res["methods"]["ours_semantic"]["top1"] != ours["top1"] or ours["per_class_top1"] != res["methods"][
        "ours_semantic"]["per_class_top1"]


def test_evaluate_refuses_a_classifier_of_other_classes(tiny_setup, tmp_path):
    from neuroimagen.evaluate import main
    from neuroimagen.models import ImageClassifier

    ImageClassifier(n_outputs=10, base_channels=4).save_pretrained(tmp_path / "clf10")
    s = tiny_setup
    with pytest.raises(ValueError, match="10 outputs but the data file has 40 classes"):
        main(["--checkpoint", str(s["root"] / "pipe"), "--data", str(s["data"][0]), "--splits", str(s["data"][1]),
              "--stimuli", str(s["root"] / "stimuli"), "--out", str(tmp_path / "r"), "--limit", "2",
              "--samples-per-trial", "1", "--steps", "2", "--parts", "reconstruction",
              "--classifier", str(tmp_path / "clf10")])


def test_a_report_built_in_steps_keeps_the_earlier_parts_for_the_same_data(tmp_path):
    import json

    from neuroimagen.evaluate import _keep_earlier_parts

    earlier = {"command": "python -m neuroimagen.evaluate --parts baselines", "data": "d.pth", "splits": "s.pth",
               "checkpoint": "ckpt", "baselines": {"methods": {"lda": {"top1": 0.3}}}, "caveats": []}
    (tmp_path / "metrics.json").write_text(json.dumps(earlier))
    now = {"command": "python -m neuroimagen.evaluate --parts reconstruction", "data": "d.pth", "splits": "s.pth",
           "checkpoint": "ckpt", "reconstruction": {"x": 1}, "caveats": []}
    _keep_earlier_parts(now, tmp_path)
    assert now["baselines"] == earlier["baselines"] and now["reconstruction"] == {"x": 1}
    assert now["earlier_commands"] == [earlier["command"]] and now["caveats"] == []
    other = {"command": "c", "data": "other.pth", "splits": "s.pth", "checkpoint": "ckpt", "caveats": []}
    _keep_earlier_parts(other, tmp_path)
    assert "baselines" not in other  # another data set: nothing kept


def test_an_earlier_part_is_kept_only_for_the_same_weights(tmp_path):
    """The checkpoint's path does not identify its weights (a stage retrained into the same folder keeps it): an
    earlier part is kept only when the digests it recorded are this run's, and a part whose weights were not
    recorded is not kept either (unless it runs none: the LDA-only baselines, the block design)."""
    import json

    from neuroimagen.evaluate import _keep_earlier_parts

    base = {"data": "d.pth", "splits": "s.pth", "checkpoint": "ckpt"}
    ours = {"methods": {"lda": {"top1": 0.3}, "ours_probe": {"top1": 0.5}}}
    cases = [  # (earlier part_weights, earlier baselines, kept?)
        ({"baselines": {"eeg_encoder": "a", "semantic_decoder": "b"}}, ours, True),
        ({"baselines": {"eeg_encoder": "retrained", "semantic_decoder": "b"}}, ours, False),
        (None, ours, False),  # written before digests: cannot be told apart
        (None, {"methods": {"lda": {"top1": 0.3}}}, True),  # no weights run
    ]
    for recorded, baselines, kept in cases:
        earlier = {**base, "command": "b", "baselines": baselines, "caveats": [],
                   **({"part_weights": recorded} if recorded is not None else {})}
        (tmp_path / "metrics.json").write_text(json.dumps(earlier))
        now = {**base, "command": "r", "reconstruction": {"x": 1}, "caveats": [],
               "weights": {"eeg_encoder": "a", "semantic_decoder": "b", "unet": "c"}}
        _keep_earlier_parts(now, tmp_path)
        assert ("baselines" in now) == kept, (recorded, baselines)
        assert any("rerun it with --parts baselines" in c for c in now["caveats"]) == (not kept)


def test_a_reconstruction_part_is_not_kept_once_a_component_was_added(tmp_path):
    """Reconstructions measured the whole pipeline: a component added since (a class decoder changes the decoded
    class, hence the caption and the picture) makes them stale; an output-neutral one (the decoding check) does not,
    and the baselines part, which records only the components it ran, stays."""
    import json

    from neuroimagen.evaluate import _keep_earlier_parts

    recorded = {"eeg_encoder": "a", "semantic_decoder": "b", "unet": "c"}
    for added, kept in (({}, True), ({"decoding_check": "d"}, True), ({"class_decoder": "e"}, False)):
        earlier = {"data": "d.pth", "splits": "s.pth", "checkpoint": "ckpt", "command": "r", "caveats": [],
                   "reconstruction": {"x": 1}, "baselines": {"methods": {"ours_probe": {"top1": 0.5}}},
                   "part_weights": {"reconstruction": recorded, "baselines": {"eeg_encoder": "a"}}}
        (tmp_path / "metrics.json").write_text(json.dumps(earlier))
        now = {"data": "d.pth", "splits": "s.pth", "checkpoint": "ckpt", "command": "b2", "caveats": [],
               "block_design": {}, "weights": {**recorded, **added}}
        _keep_earlier_parts(now, tmp_path)
        assert ("reconstruction" in now) == kept, added
        assert "baselines" in now


def test_a_part_recomputed_drops_its_old_command(tmp_path):
    """Rebuilding the reconstruction part of a report lists the baselines' command once, not every earlier run."""
    import json

    from neuroimagen.evaluate import _keep_earlier_parts

    base = {"data": "d.pth", "splits": "s.pth", "checkpoint": "ckpt", "caveats": []}
    b_cmd, r_cmd = "evaluate --parts baselines", "evaluate --parts reconstruction"
    first = {**base, "command": b_cmd, "baselines": {"b": 1}}
    _keep_earlier_parts(first, tmp_path)
    assert first["part_commands"] == {"baselines": b_cmd} and "earlier_commands" not in first
    (tmp_path / "metrics.json").write_text(json.dumps(first))
    for run in range(3):  # the reconstruction part, rebuilt three times (e.g. after more training)
        now = {**base, "command": r_cmd, "reconstruction": {"r": run}}
        _keep_earlier_parts(now, tmp_path)
        assert now["earlier_commands"] == [b_cmd] and now["baselines"] == {"b": 1}
        assert now["part_commands"] == {"baselines": b_cmd, "reconstruction": r_cmd}
        (tmp_path / "metrics.json").write_text(json.dumps(now))
    # A report written before part_commands existed: its listed commands, once each, without this run's own.
    legacy = {**base, "command": r_cmd, "baselines": {"b": 1}, "reconstruction": {"r": 0},
              "earlier_commands": [b_cmd, r_cmd, r_cmd]}
    (tmp_path / "metrics.json").write_text(json.dumps(legacy))
    now = {**base, "command": r_cmd, "reconstruction": {"r": 1}}
    _keep_earlier_parts(now, tmp_path)
    assert now["earlier_commands"] == [b_cmd] and now["part_commands"]["baselines"] == [b_cmd]
    for run in range(2, 5):  # then rebuilt with other commands: the legacy part's list does not grow
        (tmp_path / "metrics.json").write_text(json.dumps(now))
        now = {**base, "command": f"{r_cmd} --limit {run}", "reconstruction": {"r": run}}
        _keep_earlier_parts(now, tmp_path)
        assert now["earlier_commands"] == [b_cmd]


def test_rows_by_name_including_names_with_a_comma():
    from neuroimagen.evaluate import _rows

    assert list(_rows("L + I,L* + I, no layout prior")) == ["L + I", "L* + I, no layout prior"]
    assert list(_rows("L* + I, no layout prior, I only")) == ["L* + I, no layout prior", "I only"]
    assert list(_rows("L* + I,L* + I, no layout prior")) == ["L* + I", "L* + I, no layout prior"]
    assert _rows("L* + I, no layout prior")["L* + I, no layout prior"] == ("both", "label", 0.0)
    with pytest.raises(SystemExit, match=re.escape("Unknown ablation rows ['L + X']")):
        _rows("L + I,L + X")


def test_evaluate_scores_with_the_robust_classifier_beside_the_old_one(tiny_setup, tmp_path):
    """A checkpoint with ``eval_classifier_robust`` gets the robust classifier's numbers under ``robust`` beside the
    evaluation classifier's, which stay exactly as they are without it (or with ``--robust-classifier none``)."""
    import shutil

    from neuroimagen.evaluate import main
    from neuroimagen.models import ImageClassifier

    s = tiny_setup
    both = tmp_path / "pipe"
    shutil.copytree(s["root"] / "pipe", both)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        ImageClassifier(n_outputs=N_CLASSES, base_channels=4).save_pretrained(both / "eval_classifier_robust")
    common = ["--data", str(s["data"][0]), "--splits", str(s["data"][1]), "--stimuli", str(s["root"] / "stimuli"),
              "--limit", "3", "--samples-per-trial", "1", "--steps", "2", "--parts", "reconstruction", "--rows",
              "L + I"]
    runs = {}
    for name, ckpt, extra in (("old", s["root"] / "pipe", []), ("both", both, []),
                              ("none", both, ["--robust-classifier", "none"])):
        assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / name), *common, *extra]) == 0
        runs[name] = (json.loads((tmp_path / name / "metrics.json").read_text()),
                      (tmp_path / name / "report.md").read_text())
    (old, old_md), (new, new_md), (none, none_md) = runs["old"], runs["both"], runs["none"]
    rec = new["reconstruction"]
    for part in (rec["rows"]["L + I"], rec["references"]["stimuli"], rec["references"]["saliency_maps"]):
        assert {"acc", "acc_top5", "acc_nway", "is"} <= set(part["robust"])
    assert new["robust_classifier"] == str(both / "eval_classifier_robust") and "eval_classifier_robust" in new["weights"]
    assert "### Both classifiers" in new_md and "robust classifier" in new_md
    table = new_md.split("### Both classifiers")[1]
    assert "| L + I |" in table and "| *the stimuli themselves* |" in table
    # The old classifier's numbers are the same with or without the robust one.
    assert {k: v for k, v in rec["rows"]["L + I"].items() if k != "robust"} == old["reconstruction"]["rows"]["L + I"]
    for m, md in ((old, old_md), (none, none_md)):
        assert "robust_classifier" not in m and "Both classifiers" not in md
        assert "robust" not in m["reconstruction"]["rows"]["L + I"]
        assert "robust" not in m["reconstruction"]["references"]["stimuli"]
    assert none["reconstruction"]["rows"] == old["reconstruction"]["rows"]


@pytest.mark.parametrize("sfreq,loaded_hz", [(1000.0, 250.0), (100.0, 100.0)])
def test_the_baselines_bin_time_in_the_files_own_milliseconds(tmp_path, sfreq, loaded_hz):
    """A file recorded at 100 Hz is not averaged as if it were 1 kHz: it loads at 100 Hz, and a 40 ms LDA bin is 4 of
    its samples (the 1 kHz file: 250 Hz, 10 samples of 4 ms). The class sits in a 30 ms burst on 8 channels, which
    both decode."""
    from neuroimagen.data.eeg_imagenet import save_eeg_imagenet, save_splits
    from neuroimagen.evaluation.baselines import block_design_effect, load_split, run_baselines

    rng = np.random.default_rng(0)
    n_times, n = int(0.5 * sfreq), 160
    labels = [k % 4 for k in range(n)]
    eeg = []
    for y in labels:
        x = rng.standard_normal((8, n_times)).astype(np.float32)
        t0 = int((0.1 + 0.05 * y) * sfreq)
        x[:, t0:t0 + max(1, int(0.03 * sfreq))] += 3.0  # the burst's latency says the class
        eeg.append(x)
    data, splits = tmp_path / "d.pth", tmp_path / "s.pth"
    save_eeg_imagenet(data, eeg, list(range(n)), labels, [1 + k % 2 for k in range(n)],
                      images=[f"img_{k}" for k in range(n)], ch_names=[f"E{i}" for i in range(8)], sfreq=sfreq,
                      window=(0, n_times))
    save_splits(splits, {"train": list(range(120)), "val": list(range(120, 140)), "test": list(range(140, n))})
    loaded = load_split(data, splits, "test")
    assert loaded.sfreq == loaded_hz and loaded.x.shape[-1] == int(n_times * loaded_hz / sfreq)
    res = run_baselines(data, splits, methods=("lda",), log=lambda msg: None)
    assert res["loaded_hz"] == loaded_hz and res["methods"]["lda"]["bin_ms"] == pytest.approx(40.0)
    assert res["methods"]["lda"]["top1"] > 0.9
    block = block_design_effect({"c": (data, splits)}, log=lambda msg: None, lda_bin_ms=20)
    assert block["c"]["bin_ms"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="positive bin width in ms, got 0"):
        run_baselines(data, splits, methods=("lda",), lda_bin_ms=0, log=lambda msg: None)


def test_blind_naming_scores_each_grid_and_lists_the_examples_missed():
    """``scripts/blind_naming.py score``: per grid, how many tiles the judges named right; with two grids, the trials
    named in one only; with the shipped examples' key, each missed example and seed with what the judges said."""
    from conftest import load_script

    from neuroimagen.data.classes import CLASSES

    score = load_script("blind_naming").score
    names = [c.name for c in CLASSES]
    key = {"set0/img00.png": {"class": 3, "grid": "a", "trial": 0}, "set0/img01.png": {"class": 3, "grid": "b", "trial": 0},
           "set0/img02.png": {"class": 5, "grid": "a", "trial": 1}, "set0/img03.png": {"class": 5, "grid": "b", "trial": 1}}
    answers = [{"img00.png": {"class": names[3]}, "img01.png": {"class": names[4]},
                "img02.png": {"class": names[5]}, "img03.png": {"class": names[5]}}]
    assert score(key, answers) == {"a": {"named": 2, "of": 2, "rate": 1.0}, "b": {"named": 1, "of": 2, "rate": 0.5},
                                   "only_a": 1, "only_b": 0}
    ex = {f"set{s}/img00.png": {"class": 7, "grid": "examples", "trial": 0, "file": "x.npz", "seed": 1} for s in (0, 1)}
    out = score(ex, [{"img00.png": {"class": names[7]}}, {"img00.png": {"class": names[8]}}])
    assert out["examples"] == {"named": 1, "of": 2, "rate": 0.5} and out["missed"] == {"x.npz seed 1": [names[8]]}
