"""The emitted torchrun + FSDP2 launch really starts: 2 processes on CPU (gloo), 2 optimizer steps of
examples/train.py reading the emitted plan.json, for a tiny model built from examples/tiny-llama.yaml.

Needs PyTorch (the engines extra); skipped without it.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emit(tmp_path: Path, pins: list[str], emit: str = "torchrun") -> Path:
    """`planner solve --emit torchrun` for the tiny model on the 2 CPU processes; returns the launch folder."""
    out = tmp_path / "report"
    args = ["solve", "--model", str(ROOT / "examples/tiny-llama.yaml"), "--budget", "2xA100", "--seq-len", "64"]
    args += ["--global-batch", "8", "--engine", "fsdp", "--space", str(ROOT / "tests/data/smoke_space.yaml")]
    result = CliRunner().invoke(main, [*args, *pins, "--out", str(out), "--emit", emit])
    assert result.exit_code == 0, result.output
    return out / "launch-1"


def _run(command: list[str], **extra_env: str) -> str:
    """Runs a torchrun command on CPUs (gloo) and returns its stdout. DTensor's warnings (e.g. a reduction split
    into sequential collectives for want of a flattened mesh) fail the run: they come from the script's layout."""
    env = dict(os.environ, MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **extra_env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the torchrun of this interpreter
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "torch/distributed/tensor/" not in run.stderr, run.stderr
    return run.stdout


def _steps(stdout: str) -> list[float]:
    """Loss and gradient norm of every step rank 0 printed: [loss 1, norm 1, loss 2, norm 2, ...]."""
    found = re.findall(r"^step \d+ loss ([0-9.]+) grad_norm ([0-9.]+)", stdout, re.M)
    return [float(value) for pair in found for value in pair]


@pytest.mark.parametrize(
    "pins, layout",
    [
        (["--zero", "3", "--checkpointing", "selective", "--micro-batch", "2"], "FSDP2 ZeRO-3 on 2 ranks"),
        (["--zero", "0", "--checkpointing", "full", "--micro-batch", "4"], "DDP on 2 ranks"),
    ],
)
def test_emitted_torchrun_launch_trains_two_steps_on_cpu(tmp_path, pins, layout):
    pytest.importorskip("torch")
    pytest.importorskip("torch.distributed.fsdp")
    folder = _emit(tmp_path, ["--tp", "1", *pins])
    plan = json.loads((folder / "plan.json").read_text())["variants"]["fsdp"]["plan"]
    assert (plan["gpus"], plan["global_batch"]) == (2, 8)

    stdout = _run([str(folder / "launch_torchrun.sh"), "--steps", "2"])
    header = (
        f"plan: {layout}, micro-batch {plan['micro_batch']} x accumulation {plan['grad_accum']} x seq 64, "
        f"checkpointing {plan['checkpointing']}, bf16, offload none"
    )
    assert header in stdout
    losses = _steps(stdout)[::2]
    assert len(losses) == 2
    # random tokens over a 256-word vocabulary: cross-entropy near ln(256) = 5.55 at initialisation
    assert all(4.5 < loss < 7.0 for loss in losses), losses


def test_tensor_parallel_launch_computes_what_one_rank_computes(tmp_path):
    """TP 2 over the two processes (dp 1) trains on the same tokens as a single process, so every step's loss
    and gradient norm must equal the single-process run's, with and without sequence parallelism; a rank
    that saw other tokens or missed a TP reduction would change them (a TP group seeded per rank instead of
    per dp rank doubled the gradient norm: 0.79 vs 0.39)."""
    pytest.importorskip("torch")
    pytest.importorskip("torch.distributed.tensor.parallel")
    folder = _emit(tmp_path, ["--tp", "2", "--zero", "3", "--checkpointing", "selective", "--micro-batch", "2"])
    data = json.loads((folder / "plan.json").read_text())
    plan = data["variants"]["fsdp"]["plan"]
    assert (plan["tp"], plan["sequence_parallel"]) == (2, True)
    with_sp = _run([str(folder / "launch_torchrun.sh"), "--steps", "2"])
    assert "plan: FSDP2 ZeRO-3 + TP 2 (sequence parallel) on 2 ranks, micro-batch 2 x accumulation 4" in with_sp

    def rerun(nproc: int, **changes) -> str:
        data["variants"]["fsdp"]["plan"] = {**plan, **changes}
        path = tmp_path / f"plan-{nproc}-{len(changes)}.json"
        path.write_text(json.dumps(data))
        torchrun = ["torchrun", f"--nproc-per-node={nproc}", str(folder / "train.py"), "--plan", str(path)]
        return _run([*torchrun, "--steps", "2"])

    without_sp = rerun(2, sequence_parallel=False, zero=2, checkpointing="full")
    assert "plan: FSDP2 ZeRO-2 + TP 2 on 2 ranks" in without_sp
    one_rank = rerun(1, tp=1, sequence_parallel=False, gpus=1)
    assert "plan: FSDP2 ZeRO-3 on 1 ranks" in one_rank
    reference = _steps(one_rank)
    assert len(reference) == 4
    for run in (with_sp, without_sp):
        assert _steps(run) == pytest.approx(reference, abs=5e-3)


def test_emitted_lora_trainer_launch_trains_only_the_adapters(tmp_path):
    """A LoRA plan's launch_trainer.sh (Trainer + FSDP, as emitted) starts tests/lora_smoke_train.py on 2 CPU
    processes with the emitted peft_config.json; after 2 steps exactly the adapters (lora_A, lora_B of the 7
    linears of both blocks) have changed and no base weight has."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    pins = ["--tp", "1", "--method", "lora", "--zero", "0", "--checkpointing", "none", "--micro-batch", "4"]
    folder = _emit(tmp_path, pins, emit="trainer")
    assert json.loads((folder / "peft_config.json").read_text())["target_modules"] == "all-linear"
    # the CPU has no bf16 GPU and no NCCL: the Trainer's own flags for CPU and gloo, then 2 steps
    extra = ["--launch_folder", str(folder), "--max_steps", "2", "--bf16", "False", "--use_cpu", "True"]
    extra += ["--ddp_backend", "gloo", "--report_to", "none", "--save_strategy", "no"]
    extra += ["--output_dir", str(tmp_path / "out"), "--optim", "adamw_torch"]
    stdout = _run([str(folder / "launch_trainer.sh"), *extra], TRAIN_SCRIPT=str(ROOT / "tests/lora_smoke_train.py"))
    result = json.loads(re.search(r"^lora-smoke (.*)$", stdout, re.M).group(1))
    assert result["changed"] == result["trainable"]
    assert len(result["trainable"]) == 2 * 7 * 2 and all(".lora_" in name for name in result["trainable"])
    assert result["total"] == 49  # 21 base tensors (2 x 9 per block, embedding, final norm, head) + 28 adapters
