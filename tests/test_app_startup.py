"""How the app starts on a Space (``demo.startup``): the checkpoint and SD model from ``$NEUROIMAGEN_CHECKPOINT`` and
``$NEUROIMAGEN_SD_MODEL`` as well as flags (a flag wins), clear errors for values that name nothing, and ZeroGPU's
``@spaces.GPU`` on the reconstruction where ``spaces`` is installed (a fake module stands in for it here).
No server: the argument resolution and the handlers are called directly.
"""

from __future__ import annotations

import functools
import sys
import types

import pytest
from app_server import write_examples

from demo.startup import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, GPU_DURATION, SD_MODEL_ENV, parse_args


def _folder(path):
    """A folder that passes for a diffusers checkpoint (``parse_args`` only looks for model_index.json)."""
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


@pytest.fixture
def folders(tmp_path):
    return {name: _folder(tmp_path / name) for name in ("env_ckpt", "flag_ckpt", "env_sd", "flag_sd")}


def test_the_environment_variables_name_the_checkpoint_and_sd_model(folders):
    args = parse_args([], {CHECKPOINT_ENV: str(folders["env_ckpt"]), SD_MODEL_ENV: str(folders["env_sd"])})
    assert args.checkpoint == folders["env_ckpt"]
    assert args.sd_model == str(folders["env_sd"])


def test_flags_win_over_the_environment_variables(folders):
    env = {CHECKPOINT_ENV: str(folders["env_ckpt"]), SD_MODEL_ENV: str(folders["env_sd"])}
    args = parse_args(["--checkpoint", str(folders["flag_ckpt"]), "--sd-model", str(folders["flag_sd"])], env)
    assert args.checkpoint == folders["flag_ckpt"]
    assert args.sd_model == str(folders["flag_sd"])
    # one flag, one variable: each decided on its own
    args = parse_args(["--sd-model", "owner/some-sd-model"], env)
    assert (args.checkpoint, args.sd_model) == (folders["env_ckpt"], "owner/some-sd-model")


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model_index.json").is_file(), reason="no embedded checkpoint")
def test_without_flags_or_variables_the_embedded_model_runs_alone():
    args = parse_args([], {CHECKPOINT_ENV: "", SD_MODEL_ENV: ""})  # a Space's empty variables count as unset
    assert args.checkpoint == DEFAULT_CHECKPOINT and args.sd_model is None


@pytest.mark.parametrize("argv, env, says", [
    ([], {CHECKPOINT_ENV: "{tmp}/no-such-folder"},
     "$NEUROIMAGEN_CHECKPOINT must be a NeuroImagen checkpoint folder (with model_index.json, as save_pretrained "
     "writes it), but got '{tmp}/no-such-folder': no such folder."),
    (["--checkpoint", "{tmp}"], {},
     "--checkpoint must be a NeuroImagen checkpoint folder (with model_index.json, as save_pretrained writes it), "
     "but got '{tmp}': a folder without model_index.json."),
    ([], {SD_MODEL_ENV: "{tmp}/sd-v1-5"},
     "$NEUROIMAGEN_SD_MODEL must be a Stable Diffusion folder (with model_index.json) or a hub id such as "
     "'stable-diffusion-v1-5/stable-diffusion-v1-5', but got '{tmp}/sd-v1-5': no such folder, and not a hub id."),
])
def test_a_value_that_names_nothing_exits_saying_what_was_expected_and_what_came(
        tmp_path, capsys, folders, argv, env, says):
    env = {CHECKPOINT_ENV: str(folders["env_ckpt"]), **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    with pytest.raises(SystemExit) as exit_:
        parse_args([a.format(tmp=tmp_path) for a in argv], env)
    assert exit_.value.code == 2  # argparse's usage error, before anything loads
    assert says.format(tmp=tmp_path) in capsys.readouterr().err


# ---- ZeroGPU
@pytest.fixture(scope="module")
def handlers_parts(tmp_path_factory):
    from tiny_pipeline import make_tiny_pipeline

    examples = write_examples(tmp_path_factory.mktemp("examples"), classes=(8,))
    return make_tiny_pipeline(seed=0), examples, next(examples.glob("*.npz")).name


def fake_spaces() -> types.ModuleType:
    """A stand-in for the ``spaces`` package: ``GPU(duration=...)`` records each allocation (its duration) and
    whether a GPU is held; like the real one it keeps the function's signature (Gradio reads it)."""
    module = types.ModuleType("spaces")
    module.allocations, module.held = [], False

    def GPU(fn=None, duration=None):  # noqa: N802 (the package's name)
        def decorate(fn):
            @functools.wraps(fn)
            def run(*args, **kwargs):
                module.allocations.append(duration)
                module.held = True
                try:
                    return fn(*args, **kwargs)
                finally:
                    module.held = False
            return run
        return decorate if fn is None else decorate(fn)

    module.GPU = GPU
    return module


class RecordingPipeline:
    """The pipeline, recording for each call whether the (fake) GPU was held during it."""

    def __init__(self, pipe, spaces):
        self.pipe, self.spaces, self.held = pipe, spaces, []

    def __call__(self, *args, **kwargs):
        self.held.append(self.spaces.held)
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def _reconstruct(handler, example, **kwargs):
    return handler(source="example", example=example, num_inference_steps=2, seed=3, **kwargs)


def test_without_spaces_nothing_is_decorated(monkeypatch, handlers_parts):
    from demo.handlers import Handlers

    pipe, examples, example = handlers_parts
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` fails, installed or not
    h = Handlers(pipe, examples_dir=examples)
    assert h.reconstruct.__func__ is Handlers.reconstruct  # the plain method: the app runs as it always has


def test_with_spaces_reconstruct_holds_a_zerogpu_while_the_pipeline_runs(monkeypatch, handlers_parts):
    from demo.handlers import Handlers

    pipe, examples, example = handlers_parts
    spaces = fake_spaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    h = Handlers(pipe, examples_dir=examples)
    h.pipe = recording = RecordingPipeline(pipe, spaces)

    image, saliency, caption, probs, seed, *_ = _reconstruct(h.reconstruct, example)
    assert image is not None and seed == 3
    assert spaces.allocations == [GPU_DURATION] and recording.held == [True]
    # The ablation box's run: its three pipeline calls within one allocation
    _reconstruct(h.reconstruct_if_ablation(), example, ablation=True)
    assert spaces.allocations == [GPU_DURATION] * 2 and recording.held == [True] * 4
    # Every other handler (trial loads, topomaps) runs without a GPU
    h.load_example(example)
    assert len(spaces.allocations) == 2


def test_the_reconstruct_api_is_the_same_with_spaces(monkeypatch, handlers_parts):
    """Gradio reads the API's parameters from the handler's signature: decorating it changes none of them."""
    from demo import build_demo

    pipe, examples, example = handlers_parts

    def api(module):
        monkeypatch.setitem(sys.modules, "spaces", module)
        info = build_demo(pipe, examples_dir=examples).get_api_info()["named_endpoints"]["/reconstruct"]
        return [(p["parameter_name"], p["parameter_default"]) for p in info["parameters"]]

    plain = api(None)
    assert len(plain) > 10 and plain == api(fake_spaces())


# ---- float16 on CUDA
def test_the_cuda_dtypes_load_the_diffusion_stage_in_float16_and_keep_the_eeg_models_in_float32(tmp_path,
                                                                                                 handlers_parts):
    """What ``load_pipeline`` asks for on CUDA, loaded and run here on CPU: Stable Diffusion's unet, vae and text
    encoder in float16, the EEG models in float32, and a finite image close to the float32 one."""
    import numpy as np
    import torch
    from tiny_pipeline import make_tiny_sd

    from demo.startup import CUDA_DTYPES
    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data import preprocess, read_trial

    pipe, examples, example = handlers_parts
    pipe.save_pretrained(tmp_path / "ckpt")
    sd = make_tiny_sd(tmp_path)
    half = NeuroImagenPipeline.from_pretrained(tmp_path / "ckpt", sd_model=sd, torch_dtype=CUDA_DTYPES)
    assert {half.unet.dtype, half.vae.dtype, half.text_encoder.dtype} == {torch.float16}
    assert {half.eeg_encoder.dtype, half.semantic_decoder.dtype, half.saliency_generator.dtype} == {torch.float32}

    full = NeuroImagenPipeline.from_pretrained(tmp_path / "ckpt", sd_model=sd)
    trial = preprocess(read_trial(examples / example))
    images = [p(trial, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
              for p in (half, full)]
    assert np.isfinite(images[0]).all()
    assert np.abs(images[0] - images[1]).max() < 0.05  # float16 rounding, not another picture
