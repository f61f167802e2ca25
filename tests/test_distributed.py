"""Several processes share the work: ``accelerate launch`` with 2 CPU processes (gloo) on the debug config.

accelerate's ``--cpu`` launcher starts one process (several only through MPI, ``--mpirun_hostfile``), so the
processes are started by its torchrun launcher (``--multi_gpu``, which on CPU needs ``ACCELERATE_USE_CPU=1``).
Each process records the indices of its batches (``NEUROIMAGEN_RECORD_BATCHES``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.json"


def _train(stage, config, out, sim_files, stimuli_dir, record, processes=1, extra=()):
    """Run ``neuroimagen.train STAGE`` (with the ``extra`` arguments) in 1 process (python -m) or several
    (accelerate launch); its stdout."""
    data, splits = sim_files
    args = ["-m", "neuroimagen.train", stage, "--config", str(config), "--data", str(data), "--splits", str(splits),
            "--stimuli", str(stimuli_dir), "--out", str(out), *extra]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())] if processes > 1 else [sys.executable]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "NEUROIMAGEN_RECORD_BATCHES": str(record), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _free_port() -> int:
    with socket.socket() as s:  # a CI run of other tests may hold accelerate's default port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epochs(record, stage, rank):
    """Each epoch's batches (lists of training-trial indices) that process ``rank`` trained on."""
    lines = (Path(record) / f"{stage}-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line)["batches"] for line in lines]


def _one_set_of_files(stdout, out, stage):
    """The main process alone printed the stage's result line and wrote its metrics."""
    assert [json.loads(line)["stage"] for line in stdout.splitlines() if line.startswith("{")] == [stage]
    return json.loads((out / stage / "metrics.json").read_text())


def test_two_processes_train_the_encoder_on_disjoint_trials(tmp_path, stimuli_dir, sim_files):
    out, record = tmp_path / "run", tmp_path / "batches"
    stdout = _train("encoder", CONFIG, out, sim_files, stimuli_dir, record, processes=2)
    metrics = _one_set_of_files(stdout, out, "encoder")
    assert len(metrics["history"]) == 3 and (out / "encoder" / "config.json").is_file()
    rank0, rank1 = _epochs(record, "encoder", 0), _epochs(record, "encoder", 1)
    assert len(rank0) == len(rank1) == 3
    for b0, b1 in zip(rank0, rank1):
        # 640 training trials / (8 classes x 4 trials x 2 processes) batches each, on the same classes
        assert len(b0) == len(b1) == 10 and all(len(b) == 32 for b in b0 + b1)
        assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_two_processes_take_the_steps_of_one_with_the_doubled_batch(tmp_path, stimuli_dir, sim_files):
    """Semantic (an MSE, a mean over trials; no dropout, no augmentation): 2 processes x 16 trials per step follow
    one process x 32. DDP averages the two halves' gradients, which is the full batch's gradient; what is left is
    batch norm (each process normalises its 16 trials by their own statistics, and the running statistics are rank
    0's) and float rounding. Measured: the epochs' losses agree to 1.5e-4 relative, the trained weights to 0.3 %
    (L2, batch-norm running statistics left out); the test allows 2e-3 and 2 %."""
    config = json.loads(CONFIG.read_text())
    config["semantic"].update(dropout=0.0, epochs=2, batch_size=32)
    (tmp_path / "one.json").write_text(json.dumps(config))
    config["semantic"]["batch_size"] = 16  # per process
    (tmp_path / "two.json").write_text(json.dumps(config))
    one, two = tmp_path / "one", tmp_path / "two"
    _train("semantic", tmp_path / "one.json", one, sim_files, stimuli_dir, tmp_path / "rec1")
    stdout = _train("semantic", tmp_path / "two.json", two, sim_files, stimuli_dir, tmp_path / "rec2", processes=2)
    h2 = _one_set_of_files(stdout, two, "semantic")["history"]
    assert not (tmp_path / "rec1" / "semantic-rank1.jsonl").exists()

    # The same global batches: each is the one-process batch cut in two, one half per process.
    solo, rank0, rank1 = (_epochs(tmp_path / "rec1", "semantic", 0), _epochs(tmp_path / "rec2", "semantic", 0),
                          _epochs(tmp_path / "rec2", "semantic", 1))
    for s, b0, b1 in zip(solo, rank0, rank1, strict=True):
        assert [x + y for x, y in zip(b0, b1, strict=True)] == s
        assert sorted(i for b in b0 + b1 for i in b) == list(range(640))

    h1 = json.loads((one / "semantic" / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in h2] == pytest.approx([h["loss"] for h in h1], rel=2e-3)
    w1, w2 = (load_file(run / "semantic" / "decoder" / "diffusion_pytorch_model.safetensors") for run in (one, two))
    keys = [k for k in w1 if "running_" not in k and "num_batches" not in k]
    diff = torch.cat([(w1[k] - w2[k]).flatten() for k in keys]).norm() / torch.cat([w1[k].flatten() for k in keys]).norm()
    assert diff < 0.02


def test_processes_that_accelerate_did_not_join_are_refused(monkeypatch):
    """torchrun started 2 processes, but without a GPU and ACCELERATE_USE_CPU accelerate sets up one each: each
    would train alone on every batch and write the same files. The stage says how to launch instead."""
    from neuroimagen.training.common import make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1"):
        make_accelerator(0)


def test_mixed_precision_bf16_autocasts_on_a_cpu_and_fp16_falls_back_to_float32_with_a_warning(
        tmp_path, stimuli_dir, sim_files, capfd):
    """accelerate autocasts to bfloat16 on a CPU, and to float16 on CUDA only (on a CPU its Accelerator takes
    mixed_precision='fp16' and sets up neither autocast nor a grad scaler: float32, silently). So on this CPU: fp16
    falls back to float32 with a warning and trains exactly the float32 weights; bf16 (in the same process, after the
    float32 runs: accelerate keeps one precision per process unless a stage clears it, as the finetune stage's bf16
    autoencoder phases need) really autocasts, so the weights differ from float32's by bfloat16 rounding, and stay
    finite. Each run's metrics.json records the precision it trained with."""
    from neuroimagen.train import main

    config = json.loads(CONFIG.read_text())
    config["encoder"]["epochs"] = 1
    (tmp_path / "c.json").write_text(json.dumps(config))
    data, splits = sim_files
    runs = {mp: tmp_path / mp for mp in ("no", "fp16", "bf16")}
    warning = "mixed_precision 'fp16' needs a CUDA GPU; this stage runs on the CPU, so it trains in float32"
    for mp in ("no", "fp16", "bf16"):
        assert main(["encoder", "--config", str(tmp_path / "c.json"), "--data", str(data), "--splits", str(splits),
                     "--stimuli", str(stimuli_dir), "--out", str(runs[mp]), "--mixed-precision", mp]) == 0
        assert (warning in capfd.readouterr().err) == (mp == "fp16")  # the log line, on stderr
    metrics = {mp: json.loads((out / "encoder" / "metrics.json").read_text()) for mp, out in runs.items()}
    assert {mp: m["mixed_precision"] for mp, m in metrics.items()} == {"no": "no", "fp16": "no", "bf16": "bf16"}
    w = {mp: load_file(out / "encoder" / "diffusion_pytorch_model.safetensors") for mp, out in runs.items()}
    assert all(torch.equal(w["no"][k], w["fp16"][k]) for k in w["no"])
    diff = max(float((w["bf16"][k] - w["no"][k]).abs().max()) for k in w["no"] if w["no"][k].is_floating_point())
    assert diff > 1e-4 and all(torch.isfinite(v).all() for v in w["bf16"].values())


def test_two_processes_share_the_unet_steps_and_follow_one_process_with_the_doubled_batch(
        tmp_path, stimuli_dir, sim_files, monkeypatch):
    """The step-counted ``unet``: every process draws each step's global batch alike and trains on its own block of
    it, so 2 processes x 2 latents take the steps of 1 process x 4 on the same draws (DDP averages the blocks'
    gradients: the global batch's gradient; the UNet has group norms, no batch norm, so only float rounding is left).
    The test allows 1e-4 relative on the losses and 1e-3 (L2) on the EMA weights."""
    from neuroimagen.train import main
    from neuroimagen.training.common import RECORD_BATCHES

    config = json.loads(CONFIG.read_text())
    config["unet"]["batch_size"] = 4
    (tmp_path / "one.json").write_text(json.dumps(config))
    config["unet"]["batch_size"] = 2  # per process
    (tmp_path / "two.json").write_text(json.dumps(config))
    data, splits = sim_files
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--data", str(data), "--splits", str(splits), "--stimuli", str(stimuli_dir)]
    assert main(["vae", "--config", str(tmp_path / "one.json"), "--out", str(one), *common]) == 0
    shutil.copytree(one / "vae", two / "vae")  # the same VAE (its latents) for both runs
    monkeypatch.setenv(RECORD_BATCHES, str(tmp_path / "rec1"))
    assert main(["unet", "--config", str(tmp_path / "one.json"), "--out", str(one), *common]) == 0
    stdout = _train("unet", tmp_path / "two.json", two, sim_files, stimuli_dir, tmp_path / "rec2", processes=2)
    metrics = _one_set_of_files(stdout, two, "unet")

    steps = {k: [json.loads(line)["batches"][0] for line in (tmp_path / f).read_text().splitlines()]
             for k, f in (("one", "rec1/unet-rank0.jsonl"), ("r0", "rec2/unet-rank0.jsonl"),
                          ("r1", "rec2/unet-rank1.jsonl"))}
    assert len(steps["one"]) == len(steps["r0"]) == len(steps["r1"]) == 4
    for b, b0, b1 in zip(steps["one"], steps["r0"], steps["r1"]):
        assert len(b0) == len(b1) == 2 and b0 + b1 == b  # each process its block of the one-process batch
    ref = json.loads((one / "unet" / "metrics.json").read_text())
    for h1, h2 in zip(ref["history"], metrics["history"], strict=True):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-4)
    w1, w2 = (load_file(run / "unet" / "diffusion_pytorch_model.safetensors") for run in (one, two))
    num = sum(float((w1[k].float() - w2[k].float()).square().sum()) for k in w1)
    den = sum(float(w1[k].float().square().sum()) for k in w1)
    assert (num / den) ** 0.5 < 1e-3
