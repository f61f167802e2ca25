"""The paper's evaluation on real images (``neuroimagen.evaluation.paper_metrics``): the 50-way protocol against
hand-computed values, IS and SSIM at 512 px, ImageNet-shaped classifiers saved to a folder and loaded by path,
and ``python -m neuroimagen.evaluate --imagenet-classifier ... --inception ...`` end to end."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
import torch

from neuroimagen.evaluation.paper_metrics import ImageNetClassifier, PaperMetrics, load_inception


class LookupClassifier:
    """A classifier whose output is set by hand: a solid image of grey level g gets the probability row ``table[g]``."""

    def __init__(self, table: dict[int, np.ndarray]):
        self.table, self.name = table, "lookup"

    def __call__(self, images):
        return np.stack([self.table[int(np.asarray(img)[0, 0, 0])] for img in images])


def solid(level: int, side: int = 40) -> np.ndarray:
    return np.full((side, side, 3), level, np.uint8)


def peaked(order: list[int], n_classes: int = 1000) -> np.ndarray:
    """Probabilities over ``n_classes`` where ``order[0]`` is the most likely class, ``order[1]`` the next, ...;
    every other class shares the rest equally, below them."""
    p = np.full(n_classes, 1e-6)
    for rank, c in enumerate(order):
        p[c] = 0.5 / (rank + 1)
    return p / p.sum()


def test_fifty_way_top1_is_exactly_the_hand_computed_value():
    # Seen images 0, 1, 2: the classifier's classes 10, 20, 30 are the ground truth (not any data-set label).
    table = {0: peaked([10]), 1: peaked([20]), 2: peaked([30]),
             # reconstruction of image 0: class 10 first -> always correct
             3: peaked([10, 5]),
             # of image 1: one class (7) above 20 -> wrong only when 7 is among the 49 drawn of 999
             4: peaked([7, 20]),
             # of image 2: two classes above 30 -> right when neither is drawn
             5: peaked([8, 9, 30])}
    pm = PaperMetrics(LookupClassifier(table), n_way=50, ssim_size=32)
    assert pm.set_stimuli([solid(0), solid(1), solid(2)]).tolist() == [10, 20, 30]
    pm.new_row("L + I", samples_per_trial=1)
    pm.add("L + I", slice(0, 3), 0, [solid(3), solid(4), solid(5)])
    expected = (1 + comb(998, 49) / comb(999, 49) + comb(997, 49) / comb(999, 49)) / 3
    assert expected == pytest.approx((1 + 950 / 999 + 950 * 949 / (999 * 998)) / 3)
    res = pm.result("L + I")
    assert res["acc"] == pytest.approx(expected, abs=1e-12)
    assert res["n_images"] == 3 and "is" not in res  # no Inception network given: no IS
    # BrainVis / DreamDiffusion sample the 49 others (50 draws each): the same number up to Monte Carlo noise.
    sampled = PaperMetrics(LookupClassifier(table), n_way=50, n_trials=4000, ssim_size=32)
    sampled.set_stimuli([solid(0), solid(1), solid(2)])
    sampled.new_row("r", 1)
    sampled.add("r", [0, 1, 2], 0, [solid(3), solid(4), solid(5)])
    assert sampled.result("r")["acc"] == pytest.approx(expected, abs=0.01)
    # per subject: a mask of trials
    assert pm.result("L + I", mask=[True, False, False])["acc"] == 1.0


def test_inception_score_and_ssim_at_the_papers_size():
    # Four seen images, each reconstructed twice: once exactly, once as its negative.
    levels = [0, 60, 120, 180]
    table = {g: peaked([g]) for g in range(256)}
    inception = LookupClassifier({g: np.eye(1000)[g] for g in range(256)})  # one-hot, a different class each
    pm = PaperMetrics(LookupClassifier(table), inception, ssim_size=512)
    rng = np.random.default_rng(0)
    stimuli = [np.clip(solid(g, 100).astype(int) + rng.integers(0, 60, (100, 100, 3)), 0, 255).astype(np.uint8)
               for g in levels]
    for s, g in zip(stimuli, levels):
        s[0, 0, 0] = g  # the lookup key
    pm.set_stimuli(stimuli)
    pm.new_row("row", samples_per_trial=2)
    pm.add("row", slice(None), 0, stimuli)
    pm.add("row", slice(None), 1, [255 - s for s in stimuli])
    res = pm.result("row")
    # 8 one-hot distributions over 8 distinct classes: IS 8 in one split; the default 10 splits are capped at
    # the 8 images, and a split of one image has IS 1.
    assert res["is_splits"] == 8 and res["is"] == pytest.approx(1.0)
    one_split = PaperMetrics(LookupClassifier(table), inception, ssim_size=512, is_splits=1)
    one_split.set_stimuli(stimuli)
    one_split.new_row("row", 2)
    one_split.add("row", slice(None), 0, stimuli)
    one_split.add("row", slice(None), 1, [255 - s for s in stimuli])
    assert one_split.result("row")["is"] == pytest.approx(8.0)
    # SSIM at 512 x 512: identical reconstructions score 1, the negatives below; mean over a trial's two
    from neuroimagen.evaluation.metrics import ssim

    neg = ssim([255 - s for s in stimuli], stimuli, size=512)
    assert np.all(neg < 0.5)
    assert res["ssim"]["mean"] == pytest.approx(np.mean((1 + neg) / 2), abs=1e-9)
    assert one_split.stimuli_reference()["n_images"] == 4


def test_bad_input_is_refused_with_what_was_expected():
    pm = PaperMetrics(LookupClassifier({0: peaked([1], 30)}))
    with pytest.raises(ValueError, match="has 30 classes: the 50-way protocol needs at least 50"):
        pm.set_stimuli([solid(0)])
    with pytest.raises(ValueError, match="'n_way' parameter: expected a number in \\[2, inf\\], got 1"):
        PaperMetrics(LookupClassifier({}), n_way=1)
    pm = PaperMetrics(LookupClassifier({0: peaked([1])}), ssim_size=16)
    with pytest.raises(RuntimeError, match="set_stimuli"):
        pm.new_row("r", 1)
    pm.set_stimuli([solid(0), solid(0)])
    pm.new_row("r", 1)
    with pytest.raises(ValueError, match="Got 1 images for 2 trials"):
        pm.add("r", slice(None), 0, [solid(0)])
    with pytest.raises(ValueError, match=r"Expected RGB images of shape \(H, W, 3\), got \(4, 4\)"):
        pm.add("r", slice(0, 1), 0, [np.zeros((4, 4))])
    pm.add("r", [0], 0, [solid(0)])
    with pytest.raises(ValueError, match="missing reconstructions"):
        pm.result("r")


# ------------------------------------------------------------------------------ classifiers loaded by path
def _tiny_vit(path, num_labels: int = 1000, seed: int = 0):
    """A randomly initialised ViTForImageClassification with ImageNet's 1,000 outputs, and its image processor."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_vit import ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37, num_labels=num_labels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_imagenet_classifier(tmp_path_factory):
    return _tiny_vit(tmp_path_factory.mktemp("vit"))


def test_imagenet_classifier_by_path(tiny_imagenet_classifier, tmp_path):
    clf = ImageNetClassifier(tiny_imagenet_classifier)
    rng = np.random.default_rng(0)
    # images of any size, uint8 or float
    images = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.random((512, 512, 3))]
    p = clf(images)
    assert p.shape == (2, 1000) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert clf.n_classes == 1000
    # as the IS network too (any transformers classifier, e.g. a timm Inception v3 on the hub)
    assert load_inception(tiny_imagenet_classifier)(images).shape == (2, 1000)
    with pytest.raises(ValueError, match="has 10 classes: expected an ImageNet classifier"):
        ImageNetClassifier(_tiny_vit(tmp_path / "ten", num_labels=10))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Could not load an image classifier from .*empty"):
        ImageNetClassifier(tmp_path / "empty")


def test_torchvision_inception_state_dict_with_random_weights(tmp_path):
    tv = pytest.importorskip("torchvision")
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = tv.models.inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict()
    torch.save(state, tmp_path / "inception_v3.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "inception_v3.safetensors")
    images = np.random.default_rng(0).random((2, 64, 80, 3))
    p = load_inception(tmp_path / "inception_v3.pth")(images)
    assert p.shape == (2, 1000) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.allclose(load_inception(tmp_path / "inception_v3.safetensors")(images), p, atol=1e-6)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a state dict of torchvision's inception_v3"):
        load_inception(tmp_path / "other.pth")


# ------------------------------------------------------------------------------------------ end to end
def tiny_evaluation_setup(tmp_path) -> tuple:
    """A stimulus set, a 2-subject synthetic data file and a tiny pipeline with an evaluation classifier under
    ``tmp_path``: (data, splits) paths, for ``python -m neuroimagen.evaluate --parts reconstruction``."""
    from test_evaluation import N_CLASSES, _synthetic
    from tiny_pipeline import make_tiny_pipeline

    from neuroimagen.data.stimuli import load_stimulus_metadata, make_stimulus_set
    from neuroimagen.models import ImageClassifier

    make_stimulus_set(tmp_path / "stimuli", per_class=4, seed=0)
    data, splits = _synthetic(tmp_path / "eeg.pth", load_stimulus_metadata(tmp_path / "stimuli"), n_subjects=2,
                              class_signal=0.3, drift=0.0, seed=0)
    make_tiny_pipeline(seed=0).save_pretrained(tmp_path / "pipe")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ImageClassifier(n_outputs=N_CLASSES, base_channels=4).save_pretrained(tmp_path / "pipe" / "eval_classifier")
    return data, splits


def test_evaluate_with_the_papers_protocol(tmp_path, tiny_imagenet_classifier):
    from neuroimagen.evaluate import main

    data, splits = tiny_evaluation_setup(tmp_path)
    out = tmp_path / "report"
    inception = _tiny_vit(tmp_path / "inception", seed=1)  # an Inception-shaped stand-in: 1,000 ImageNet outputs
    argv = ["--checkpoint", str(tmp_path / "pipe"), "--data", str(data), "--splits", str(splits),
            "--stimuli", str(tmp_path / "stimuli"), "--out", str(out), "--parts", "reconstruction", "--rows", "paper",
            "--limit", "3", "--samples-per-trial", "2", "--steps", "2", "--batch-size", "4",
            "--imagenet-classifier", str(tiny_imagenet_classifier), "--inception", str(inception),
            "--paper-ssim-size", "64"]
    assert main(argv) == 0
    rec = json.loads((out / "metrics.json").read_text())["reconstruction"]
    proto = rec["paper_protocol"]
    assert proto["n_way"] == 50 and proto["top_k"] == 1 and proto["n_trials"] == "exact expectation"
    assert proto["ground_truth"] == "the classifier's top class of the seen image"
    assert proto["imagenet_classifier"] == str(tiny_imagenet_classifier) and proto["inception"] == str(inception)
    for row in ("I only", "L only", "B only", "B + I", "L + I"):
        paper = rec["rows"][row]["paper"]
        assert paper["n_images"] == 6 and 0 <= paper["acc"] <= 1
        assert 1 - 1e-6 <= paper["is"] <= 6 and paper["is_splits"] == 6
        assert -1 <= paper["ssim"]["mean"] <= 1
        assert rec["rows"][row]["acc"] is not None  # the data set's own 40-class ACC stays beside it
    assert sum(v["paper"]["n_trials"] for v in rec["per_subject"].values()) == 3
    report = (out / "report.md").read_text()
    assert "the paper's protocol (ImageNet classifier, Inception v3)" in report
    assert "50-way top-1 with the ImageNet classifier" in report
    # the report renders again from metrics.json alone
    assert main(["--rerender", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    with pytest.raises(SystemExit, match="--inception needs --imagenet-classifier"):
        main([*argv[:argv.index("--imagenet-classifier")], "--inception", str(inception)])
