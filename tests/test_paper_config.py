"""The paper's configuration, ``configs/eeg-imagenet-sd15.json``: what it names, and ``train all`` on its shape.

The real run needs a GPU, the EEG-ImageNet files and SD 1.5; here the same config is run with debug-sized settings
on files in the exact EEG-ImageNet layout (one subject, 1,996 float16 trials of varying length, the published
splits-file layout, a folder of ImageNet-named JPEGs without ``metadata.json``: ``eeg_imagenet_layout.py``), with a
tiny random Stable-Diffusion-shaped model (CLIP text encoder included) in place of SD 1.5, loaded by path; and the
whole chain (issue 23): BLIP captions -> ``train all`` -> ``evaluate`` by the paper's protocol -> the app on the
result, its SD folder from ``$NEUROIMAGEN_SD_MODEL``, called through gradio_client.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eeg_imagenet_layout import N_TRIALS, make_eeg_imagenet_layout
from test_paper_captions import tiny_blip  # noqa: F401 (the tiny BLIP fixture)
from tiny_pipeline import make_tiny_sd

from neuroimagen.train import STAGES, check_config, main, stages_to_run
from neuroimagen.training.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = CONFIGS / "eeg-imagenet-sd15.json"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def debug_paper_config(tmp_path: Path, sd: Path) -> Path:
    """The paper config with debug-sized stages (one epoch each), the tiny SD model ``sd`` in place of SD 1.5 (text
    encoder and assembly), written to ``tmp_path/paper.json``."""
    raw = json.loads(PAPER.read_text())
    debug = json.loads((CONFIGS / "debug.json").read_text())
    for stage in ("encoder", "saliency", "semantic"):  # debug-sized, on the paper config's keys
        raw[stage] = {**raw[stage], **debug[stage], "epochs": 1}
    raw["encoder"]["arch"] = "conv"  # the LSTM is the paper's, and slow on a CPU: the wiring is what is tested
    raw["saliency"]["image_size"] = 32  # the photos (28-47 px, of varying shape) are centre-cropped and resized to it
    raw["semantic"]["text_encoder"] = raw["assemble"]["sd_model"] = str(sd)
    (tmp_path / "paper.json").write_text(json.dumps(raw))
    return tmp_path / "paper.json"


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """(data file, splits file, image folder) in the exact EEG-ImageNet layout (``eeg_imagenet_layout.py``)."""
    return make_eeg_imagenet_layout(tmp_path_factory.mktemp("eeg-imagenet"))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, real_layout, tiny_blip):  # noqa: F811 (the tiny BLIP fixture)
    """The chain's first two steps, once for the module: BLIP captions of the image folder (a tiny random BLIP
    loaded by path), then ``train all`` on the debug-sized paper config reading them, on the EEG-ImageNet-layout
    files. Returns (tiny SD folder, captions file, run folder)."""
    from neuroimagen.data.__main__ import main as data_main

    tmp = tmp_path_factory.mktemp("paper")
    sd = make_tiny_sd(tmp / "sd")
    captions = tmp / "captions.json"
    data, splits, images = real_layout
    assert data_main(["captions", "--images", str(images), "--captioner", str(tiny_blip), "--out",
                      str(captions), "--batch-size", "250", "--max-new-tokens", "4"]) == 0
    run = tmp / "run"
    assert main(["all", "--config", str(debug_paper_config(tmp, sd)), "--data", str(data), "--splits", str(splits),
                 "--stimuli", str(images), "--out", str(run), "--captions", str(captions)]) == 0
    return sd, captions, run


def test_the_paper_config_names_only_known_stages_and_keys():
    import importlib

    paths, cfgs = load_config(PAPER)
    check_config(cfgs, str(PAPER))  # raises on any unknown stage or key
    assert stages_to_run("all", cfgs) == ["encoder", "saliency", "semantic", "assemble"]
    assert not {"vae", "unet", "decoder", "refine", "layout"} & set(cfgs)  # no tiny LDM, no layout prior
    assert cfgs["semantic"]["text_encoder"] == SD15 and cfgs["assemble"]["sd_model"] == SD15
    side = cfgs["saliency"]["image_size"]
    assert 64 <= side <= 512 and 512 % side == 0  # a whole-number upsampling to SD 1.5's 512 x 512 init image
    assert not cfgs["assemble"]["eval_classifier"]
    assert cfgs["mixed_precision"] == "fp16"  # on CUDA; on a CPU it falls back to float32 (the chain below shows it)
    for stage in cfgs["stages"]:  # every entry builds its stage's Config
        importlib.import_module(f"neuroimagen.training.{stage}").Config(**cfgs.get(stage, {}))
    assert paths.out == "runs/eeg-imagenet-sd15"


@pytest.mark.parametrize("change, message", [
    ({"semantic": {"text_encodr": "x"}}, r"Unknown keys in 'semantic' of .*: \['text_encodr'\]; allowed: .*'text_encoder'"),
    ({"stages": ["encoder", "sailency"]}, r"Unknown stages \['sailency'\] in 'stages' of .*allowed: \['vae'"),
    ({"stages": "encoder"}, r"'stages' in .* must be a list of stage names, but got 'encoder'"),
    ({"unet2": {}}, r"Unknown entries \['unet2'\] in .*: expected 'paths', 'stages', 'mixed_precision'"),
    ({"mixed_precision": "fp32"}, r"'mixed_precision' in .* must be one of \['no', 'fp16', 'bf16'\], but got 'fp32'"),
])
def test_a_config_with_an_unknown_stage_or_key_is_refused_before_any_stage_runs(tmp_path, change, message):
    raw = {**json.loads(PAPER.read_text()), **change}
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        main(["all", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_saliency_size_that_is_not_a_power_of_two_is_refused():
    from neuroimagen.training.saliency import Config

    with pytest.raises(ValueError, match="expected 0 .* or a power of two >= 8, but got 100"):
        Config(image_size=100)


def test_configs_without_stages_run_as_before():
    _, cfgs = load_config(CONFIGS / "tiny.json")
    assert "stages" not in cfgs
    assert stages_to_run("all", cfgs) == [s for s in STAGES if s not in ("decoder", "refine")]


def test_train_all_on_the_paper_config_gives_a_pipeline_conditioned_on_the_decoded_clip_states(paper_run):
    """``all`` runs only the listed stages; the assembled folder carries the SD model's components, its decoder
    regresses that model's CLIP states, and a call conditions SD on them directly."""
    from neuroimagen import NeuroImagenPipeline

    sd, _, out = paper_run
    made = {p.name for p in out.iterdir() if p.is_dir()}
    assert {"encoder", "saliency", "semantic", "pipeline"} <= made
    assert not {"vae", "unet", "decoder", "refine", "layout", "classifier"} & made
    folder = out / "pipeline"
    assert not (folder / "eval_classifier").exists() and (folder / "text_encoder").is_dir()
    pipe = NeuroImagenPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.saliency_generator.config.image_size == 32
    assert pipe.text_encoder_mismatch() is None
    out_ = pipe(torch.randn(128, 440, generator=torch.Generator().manual_seed(0)), caption_source="predicted",
                generator=torch.Generator().manual_seed(0), num_inference_steps=2, strength=1.0, output_type="np")
    assert out_.prompt_embeds.shape == (1, 16, 32) and out_.images.shape == (1, 16, 16, 3)
    assert any("condition it directly" in n for n in out_.notes)
    card = (folder / "README.md").read_text()
    assert "| encoder |" in card and "| unet |" not in card and "| classifier |" not in card  # training table
    assert f"from `{sd}`" in card and "simulated" not in card and "eval_classifier" not in card


def test_the_paper_chain_on_the_eeg_imagenet_layout_captions_train_evaluate_and_the_app(tmp_path, real_layout,
                                                                                         paper_run):
    """Issue 23's chain, every model a tiny random one saved to a temporary folder and loaded by path, on files in the
    exact EEG-ImageNet layout with a folder of ImageNet-named JPEGs (no metadata.json): BLIP captions of the folder
    -> ``train all`` on the paper config (debug-sized) reading them -> ``evaluate`` by the paper's protocol (an
    ImageNet-shaped classifier, an Inception stand-in) with ``--sd-model`` -> ``python app.py`` on the result with
    the SD folder in ``$NEUROIMAGEN_SD_MODEL``, reconstructing through gradio_client."""
    from app_server import start_app, write_examples
    from gradio_client import Client
    from PIL import Image
    from test_paper_metrics import _tiny_vit

    from demo.startup import SD_MODEL_ENV
    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data.image_captions import read_captions
    from neuroimagen.evaluate import main as evaluate
    from neuroimagen.models import ImageClassifier

    data, splits, images = real_layout
    raw = torch.load(data, weights_only=True)
    lengths = [t["eeg"].shape[1] for t in raw["dataset"]]
    assert len(raw["dataset"]) == N_TRIALS and {t["subject"] for t in raw["dataset"]} == {4}
    assert raw["dataset"][0]["eeg"].dtype == torch.float16 and min(lengths) < 450 <= max(lengths) <= 500
    assert not (images / "metadata.json").exists()
    # 1., 2. captions, then train all reading them (``paper_run``): one detailed caption per shown image, BLIP's
    sd, captions, run = paper_run
    folder = run / "pipeline"
    bank = NeuroImagenPipeline.from_pretrained(folder).caption_bank
    blip = read_captions(captions)
    shown = sorted({t["image"] for t in raw["dataset"]})
    names = [raw["images"][i] for i in shown]
    assert bank.config.detailed_texts == [blip[f"{n.split('_')[0]}/{n}.JPEG"] for n in names]
    assert bank.config.label_texts[0] == "an image of a sorrel horse"  # from the synset n02389026
    # the reference filter on L: the stages trained on the split's trials with 450 <= L <= 600 only
    train_idx = torch.load(splits, weights_only=True)["splits"][0]["train"]
    kept = sum(450 <= lengths[i] <= 600 for i in train_idx)
    for stage in ("encoder", "saliency", "semantic"):  # the config's fp16, on this CPU: float32, said in a warning
        assert json.loads((run / stage / "metrics.json").read_text())["mixed_precision"] == "no"
    assert kept < len(train_idx)
    assert len(np.load(next((run / "eeg_cache").glob("*_train_s*")) / "labels.npy")) == kept
    # 3. evaluate by the paper's protocol
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ImageClassifier(n_outputs=40, base_channels=4).save_pretrained(tmp_path / "classifier")
    report = tmp_path / "report"
    assert evaluate(["--checkpoint", str(folder), "--data", str(data), "--splits", str(splits), "--stimuli",
                     str(images), "--out", str(report), "--parts", "reconstruction", "--rows", "paper",
                     "--limit", "2", "--samples-per-trial", "1", "--steps", "2", "--batch-size", "4",
                     "--classifier", str(tmp_path / "classifier"), "--sd-model", str(sd),
                     "--imagenet-classifier", str(_tiny_vit(tmp_path / "vit")),
                     "--inception", str(_tiny_vit(tmp_path / "inception", seed=1)), "--paper-ssim-size", "64"]) == 0
    rows = json.loads((report / "metrics.json").read_text())["reconstruction"]["rows"]
    assert 0 <= rows["L + I"]["paper"]["acc"] <= 1 and rows["L + I"]["paper"]["n_images"] == 2
    # 4. the app on the result, Stable Diffusion named by the Space variable
    examples = write_examples(tmp_path / "examples", classes=(8,))
    server = start_app(checkpoint=folder, examples=examples, env={SD_MODEL_ENV: str(sd)})
    try:
        client = Client(server.url, verbose=False, download_files=str(tmp_path / "downloads"))
        recon, *_, notes, title, _start = client.predict(
            source="example", example=next(examples.glob("*.npz")).stem, seed=1, num_inference_steps=2,
            caption_source="predicted", api_name="/reconstruct")
    finally:
        server.stop()
    with Image.open(recon) as image:
        assert image.size == (16, 16)  # the tiny SD's 8 x 8 latents
    assert "condition it directly" in notes  # the decoded CLIP states fed to SD: the paper's L + I
