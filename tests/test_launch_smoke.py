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
    out = tmp_path / "report"
    args = ["solve", "--model", str(ROOT / "examples/tiny-llama.yaml"), "--budget", "2xA100", "--seq-len", "64"]
    args += ["--global-batch", "8", "--engine", "fsdp", "--space", str(ROOT / "tests/data/smoke_space.yaml")]
    result = CliRunner().invoke(main, [*args, *pins, "--out", str(out), "--emit", "torchrun"])
    assert result.exit_code == 0, result.output
    folder = out / "launch-1"
    plan = json.loads((folder / "plan.json").read_text())["variants"]["fsdp"]["plan"]
    assert (plan["gpus"], plan["global_batch"]) == (2, 8)

    env = dict(os.environ, MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the torchrun of this interpreter
    run = subprocess.run(
        [str(folder / "launch_torchrun.sh"), "--steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    header = (
        f"plan: {layout}, micro-batch {plan['micro_batch']} x accumulation {plan['grad_accum']} x seq 64, "
        f"checkpointing {plan['checkpointing']}, bf16, offload none"
    )
    assert header in run.stdout
    losses = [float(v) for v in re.findall(r"^step \d+ loss ([0-9.]+)", run.stdout, re.M)]
    assert len(losses) == 2
    # random tokens over a 256-word vocabulary: cross-entropy near ln(256) = 5.55 at initialisation
    assert all(4.5 < loss < 7.0 for loss in losses), losses
