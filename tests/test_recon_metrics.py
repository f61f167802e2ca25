"""The field's reconstruction metrics (``neuroimagen.evaluation.recon_metrics``): MindEye's definitions checked by
hand, tiny random networks of torchvision's layout and a tiny CLIP saved to a folder and loaded by path, and
``python -m neuroimagen.evaluate --recon-metrics ...`` end to end.

torchvision does not install here (its wheel needs CUDA torch), so its architectures are replaced by tiny modules
with the same layer names (``features.4``, ``features.11``, ``avgpool``): everything but torchvision's builder runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from neuroimagen.evaluation import recon_metrics as rm
from neuroimagen.evaluation.recon_metrics import (
    correlation_distance,
    load_feature_net,
    parse_network_args,
    pixcorr,
    recon_metrics,
    ssim_gray,
    two_way_identification,
)


# ------------------------------------------------------------------------------ tiny torchvision-shaped networks
def tiny_alexnet(state=None) -> nn.Module:
    """torchvision's AlexNet layout (features 0..12, avgpool, classifier) with few channels."""
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, 8, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),            # 0 1 2
        nn.Conv2d(8, 12, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),        # 3 4 (AlexNet(2)) 5
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),                           # 6 7
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),                           # 8 9
        nn.Conv2d(16, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))       # 10 11 (AlexNet(5)) 12
    net.avgpool = nn.AdaptiveAvgPool2d(2)
    net.classifier = nn.Linear(48, 10)
    net.forward = lambda x: net.classifier(net.avgpool(net.features(x)).flatten(1))
    return net


class TinyPooled(nn.Module):
    """An Inception / EfficientNet / ResNet stand-in: convolutions, ``avgpool`` (the layer read), ``fc``."""

    def __init__(self, state=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, 2)
        self.layer1 = nn.Conv2d(16, 24, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.avgpool(torch.relu(self.layer1(torch.relu(self.conv1(x))))).flatten(1))


TINY = {"alexnet": tiny_alexnet, "inception": TinyPooled, "effnet": TinyPooled, "swav": TinyPooled}


@pytest.fixture
def tiny_architectures(monkeypatch):
    for name, build in TINY.items():
        monkeypatch.setitem(rm.ARCHITECTURES, name, build)


def _save_tiny(folder, seed: int = 0) -> dict[str, str]:
    """Random tiny networks saved as each format a user has: a .pth, a folder with one .safetensors, SwAV's hub
    checkpoint (``module.`` prefixes, projection head, no fc), a transformers CLIP folder. Returns name -> path."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.save(tiny_alexnet().state_dict(), folder / "alexnet.pth")
        (folder / "inception").mkdir()
        save_file({k: v.contiguous() for k, v in TinyPooled().state_dict().items()},
                  folder / "inception" / "model.safetensors")
        torch.save(TinyPooled().state_dict(), folder / "effnet_b1.pt")
        swav = {f"module.{k}": v for k, v in TinyPooled().state_dict().items() if not k.startswith("fc.")}
        swav["module.projection_head.0.weight"] = torch.randn(4, 24)
        torch.save(swav, folder / "swav_800ep_pretrain.pth.tar")
        config = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                  num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
        CLIPVisionModelWithProjection(config).save_pretrained(folder / "clip")
    return {"alexnet": str(folder / "alexnet.pth"), "inception": str(folder / "inception"),
            "effnet": str(folder / "effnet_b1.pt"), "swav": str(folder / "swav_800ep_pretrain.pth.tar"),
            "clip": str(folder / "clip")}


@pytest.fixture
def tiny_networks(tmp_path, tiny_architectures):
    paths = _save_tiny(tmp_path / "nets")
    return paths, {name: load_feature_net(name, p) for name, p in paths.items()}


def scenes(n: int, seed: int = 0, side: int = 48) -> np.ndarray:
    """n distinct smooth images in [0, 1]: a colour gradient and a blob at random places."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        c0, c1 = rng.random(3), rng.random(3)
        cy, cx, r = rng.random(), rng.random(), 0.1 + 0.3 * rng.random()
        t = (np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy)[..., None]
        img = c0 * t + c1 * (1 - t)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
        out.append(np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1))
    return np.stack(out)


# ------------------------------------------------------------------------------------------ the definitions
def mindeye_two_way(recon_feats, gt_feats):
    """The notebook's two_way_identification (return_avg=True), on features already computed."""
    n = len(gt_feats)
    r = np.corrcoef(gt_feats, recon_feats)[:n, n:]
    congruents = np.diag(r)
    return np.mean(np.sum(r < congruents, 0)) / (n - 1)


def test_two_way_identification_is_mindeyes_and_hand_checked():
    rng = np.random.default_rng(1)
    gt = rng.standard_normal((13, 40))
    rec = gt + 1.5 * rng.standard_normal((13, 40))
    ours = two_way_identification(rec, gt)
    assert ours.shape == (13,) and ours.mean() == pytest.approx(mindeye_two_way(rec, gt), abs=1e-12)
    assert 0.5 < ours.mean() < 1  # noisy copies: better than chance, not perfect
    # EffNet-B / SwAV: scipy's correlation distance per pair, as the notebook computes it
    from scipy.spatial.distance import correlation

    assert correlation_distance(rec, gt) == pytest.approx([correlation(gt[i], rec[i]) for i in range(13)], abs=1e-12)
    # By hand. Reconstruction 0 is image 0: r = 1 with it, -1 with image 1, 0 with image 2 -> beats both.
    # Reconstructions 1 and 2 are image 2: r = 0 with images 0 and 1, 1 with image 2. Reconstruction 1's own r is 0:
    # image 0 ties (a tie does not count: strict <) and image 2 beats it -> 0 of 2; reconstruction 2 -> 2 of 2.
    g = np.array([[1, 2, 3, 4.0], [4, 3, 2, 1.0], [1, -1, -1, 1.0]])
    r = np.array([[1, 2, 3, 4.0], [1, -1, -1, 1.0], [1, -1, -1, 1.0]])
    assert two_way_identification(r, g).tolist() == [1.0, 0.0, 1.0]
    # Trials of the same seen image are not each other's distractors: with images 0 and 1 the same (ids 7, 7),
    # reconstruction 0 is compared with image 2 only.
    assert two_way_identification(r, g, image_ids=[7, 7, 8]).tolist() == [1.0, 0.0, 1.0]
    assert np.isnan(two_way_identification(r, g, image_ids=[7, 7, 7])).all()
    with pytest.raises(ValueError, match="at least 2 images"):
        two_way_identification(r[:1], g[:1])
    with pytest.raises(ValueError, match="one reconstruction per seen image"):
        two_way_identification(r[:2], g)


def test_pixcorr_and_ssim_count_every_image():
    images = scenes(7, seed=2)
    assert pixcorr(images, images, size=64) == pytest.approx(np.ones(7))
    assert ssim_gray(images, images, size=64) == pytest.approx(np.ones(7))
    # The notebook's loop runs over a fixed count; ours over the images given: the seventh, a negative, counts.
    recons = images.copy()
    recons[6] = 1 - images[6]
    pc = pixcorr(recons, images, size=64)
    assert pc[6] == pytest.approx(-1) and len(pc) == 7
    assert recon_metrics(recons, images, pix_size=64)["pixcorr"]["mean"] == pytest.approx(5 / 7)
    # any sizes, uint8 or float: brought to the same square
    small = (images[:2] * 255).round().astype(np.uint8)
    assert pixcorr(small, [images[0], images[1][:, :40]], size=64).shape == (2,)
    with pytest.raises(ValueError, match="pair one to one"):
        pixcorr(images[:3], images[:2], size=64)


# ------------------------------------------------------------------------------------- networks by path
def test_identical_pairs_score_perfectly_with_every_network(tiny_networks):
    paths, nets = tiny_networks
    images = scenes(7, seed=3)  # 7: no batch size or hard-coded count divides it
    res = recon_metrics(images, images, nets, pix_size=64)
    assert res["pixcorr"]["mean"] == pytest.approx(1) and res["ssim"]["mean"] == pytest.approx(1)
    for m in ("alexnet2", "alexnet5", "inception", "clip"):
        assert res[m] == pytest.approx(1.0), m  # 2-way: 100 %
    for m in ("effnet", "swav"):
        assert res[m] == pytest.approx(0.0, abs=1e-5), m  # correlation distance 0
    assert res["n_images"] == 7


def test_shuffled_pairs_are_near_chance(tiny_networks):
    _, nets = tiny_networks
    images = scenes(41, seed=4)
    shuffled = np.roll(images, 1, axis=0)  # every reconstruction is another trial's image
    res = recon_metrics(shuffled, images, nets, pix_size=32)
    for m in ("alexnet2", "alexnet5", "inception", "clip"):
        assert 0.3 < res[m] < 0.7, (m, res[m])
    assert abs(res["pixcorr"]["mean"]) < 0.3
    own = recon_metrics(images + 0.02 * np.random.default_rng(0).standard_normal(images.shape), images, nets,
                        pix_size=32)
    for m in ("alexnet2", "alexnet5", "inception", "clip"):
        assert own[m] > 0.9, (m, own[m])  # slightly noisy copies: identified
    assert own["effnet"] < res["effnet"] and own["swav"] < res["swav"]


def test_each_format_loads_and_bad_input_is_refused(tmp_path, tiny_architectures):
    paths = _save_tiny(tmp_path / "nets")
    alex = load_feature_net("alexnet", paths["alexnet"])
    feats = alex(scenes(3))
    assert set(feats) == {"alexnet2", "alexnet5"} and feats["alexnet2"].shape[0] == 3
    assert alex.spec.size == 256 and load_feature_net("inception", paths["inception"]).spec.size == 342
    assert load_feature_net("clip", paths["clip"]).spec.size == 32  # the model's own side (ViT-L/14: 224)
    # the same weights load the same network, whatever the file
    again = load_feature_net("alexnet", paths["alexnet"])(scenes(3))
    assert np.array_equal(again["alexnet5"], feats["alexnet5"])
    with pytest.raises(ValueError, match="not a state dict of torchvision's alexnet"):
        load_feature_net("alexnet", paths["effnet"])
    torch.save({"module.fc.weight": torch.zeros(10, 24)}, tmp_path / "bad_swav.pth")
    with pytest.raises(ValueError, match="not a SwAV ResNet-50 state dict"):
        load_feature_net("swav", tmp_path / "bad_swav.pth")
    (tmp_path / "two").mkdir()
    for f in ("a.pth", "b.pth"):
        torch.save({}, tmp_path / "two" / f)
    with pytest.raises(ValueError, match="Expected one state-dict file"):
        load_feature_net("effnet", tmp_path / "two")
    with pytest.raises(ValueError, match="not a torchvision weights name"):
        load_feature_net("inception", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="SwAV's weights are not torchvision's"):
        load_feature_net("swav", "DEFAULT")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Could not load CLIP from .*empty"):
        load_feature_net("clip", tmp_path / "empty")
    with pytest.raises(ValueError, match="Allowed values are 'alexnet'"):
        load_feature_net("vgg", paths["alexnet"])
    assert parse_network_args(["alexnet=a.pth", "clip=openai/clip-vit-large-patch14"]) == {
        "alexnet": "a.pth", "clip": "openai/clip-vit-large-patch14"}
    with pytest.raises(ValueError, match="Expected NAME=ID_OR_PATH"):
        parse_network_args(["alexnet"])
    with pytest.raises(ValueError, match="given twice"):
        parse_network_args(["clip=a", "clip=b"])


def test_torchvision_name_without_torchvision_says_what_to_install():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torchvision"):
            load_feature_net("alexnet", "IMAGENET1K_V1")
    else:
        pytest.skip("torchvision is installed: a weights name would be fetched")


def test_real_torchvision_alexnet_layout(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.save(tv.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    f = load_feature_net("alexnet", tmp_path / "alexnet.pth")(scenes(2))
    assert f["alexnet2"].shape == (2, 192 * 15 * 15) and f["alexnet5"].shape == (2, 256 * 15 * 15)


# ------------------------------------------------------------------------------------------ end to end
def test_evaluate_with_the_fields_metrics(tmp_path, tiny_architectures):
    from test_paper_metrics import tiny_evaluation_setup

    from neuroimagen.evaluate import main

    paths = _save_tiny(tmp_path / "nets")
    data, splits = tiny_evaluation_setup(tmp_path)
    out = tmp_path / "report"
    argv = ["--checkpoint", str(tmp_path / "pipe"), "--data", str(data), "--splits", str(splits),
            "--stimuli", str(tmp_path / "stimuli"), "--out", str(out), "--parts", "reconstruction",
            "--rows", "L + I", "--limit", "5", "--samples-per-trial", "2", "--steps", "2", "--batch-size", "3",
            "--recon-metrics", f"alexnet={paths['alexnet']}", f"clip={paths['clip']}", "--recon-pix-size", "64"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rec = metrics["reconstruction"]
    proto = rec["recon_protocol"]
    # which network produced each number
    assert proto["metrics"]["alexnet2"] == {"network": paths["alexnet"], "layer": "features.4", "size": 256,
                                            "score": "2-way identification"}
    assert proto["metrics"]["clip"]["network"] == paths["clip"]
    assert proto["missing"] == ["inception", "effnet", "swav"]  # only the networks given
    got = rec["rows"]["L + I"]["recon"]
    assert set(got) == {"pixcorr", "ssim", "alexnet2", "alexnet5", "clip", "n_trials", "n_images"}
    assert got["n_trials"] == 5 and got["n_images"] == 10
    assert all(0 <= got[m] <= 1 for m in ("alexnet2", "alexnet5", "clip"))
    assert sum(v["recon"]["n_trials"] for v in rec["per_subject"].values()) == 5
    assert metrics["weights"]["recon_alexnet"] and metrics["weights"]["recon_clip"]
    report = (out / "report.md").read_text()
    assert "the field's metrics (MindEye's suite, as ATM)" in report
    assert f"| alexnet2 | {paths['alexnet']} | features.4 | 256 | higher |" in report
    assert "Not computed (no network given: `--recon-metrics NAME=ID_OR_PATH`): inception, effnet, swav." in report
    assert main(["--rerender", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    with pytest.raises(SystemExit, match="--recon-metrics: Invalid value for the 'network name'"):
        main([*argv[:argv.index("--recon-metrics")], "--recon-metrics", "vgg=x.pth"])


def test_a_blank_reconstruction_scores_zero_pixcorr_and_does_not_break_the_row():
    """A constant image (a collapsed model's black square) has PixCorr 0, not NaN, and the row's result is computed:
    only a trial that was never added is reported as missing."""
    rng = np.random.default_rng(0)
    seen = rng.random((4, 16, 16, 3))
    recons = seen.copy()
    recons[2] = 0.0
    assert list(pixcorr(recons, seen, size=16)) == pytest.approx([1, 1, 0, 1])
    metrics = rm.ReconMetrics(pix_size=16)
    metrics.set_stimuli(list(seen))
    metrics.new_row("r", samples_per_trial=1)
    metrics.add("r", slice(0, 3), 0, recons[:3])
    with pytest.raises(ValueError, match="missing reconstructions"):
        metrics.result("r")
    metrics.add("r", [3], 0, recons[3:])
    assert metrics.result("r")["pixcorr"]["mean"] == pytest.approx(0.75)
