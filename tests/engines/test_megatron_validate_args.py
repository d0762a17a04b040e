"""Opt-in: Megatron-LM's real parser and validate_args on the emitted megatron_args.txt.

Needs a Megatron-LM checkout and a Python >= 3.12 with torch (Megatron-LM main's requirement):
    MEGATRON_LM=/path/to/Megatron-LM MEGATRON_PYTHON=/path/to/python3.12 pytest tests/engines
Skipped otherwise (the default CI checks flag names and megatron-core's dataclasses instead).
"""

import os
import subprocess
from pathlib import Path

import pytest
from tests.launch_plans import hand_estimate, top_folder

from planner.launch.megatron import flag_lines, megatron_arguments

pytestmark = pytest.mark.engines
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "megatron_validate_args.py"


def _cases():
    out = [(n, hand_estimate(n)) for n in ("megatron-tp-pp", "megatron-cp-full", "megatron-uneven-pp")]
    return out + [
        (f"{n}:megatron", top_folder(n).variants["megatron"].estimate) for n in ("13b-16xA100", "70b-64xH100")
    ]


@pytest.mark.parametrize("label, est", _cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_megatron_lm_validate_args(tmp_path, label, est):
    checkout, python = os.environ.get("MEGATRON_LM"), os.environ.get("MEGATRON_PYTHON")
    if not checkout or not python:
        pytest.skip("set MEGATRON_LM and MEGATRON_PYTHON to run Megatron-LM's own validate_args")
    args_file = tmp_path / "megatron_args.txt"
    args_file.write_text("\n".join(flag_lines(megatron_arguments(est.model, est.plan))) + "\n")
    run = subprocess.run(
        [python, str(SCRIPT), checkout, str(args_file), str(est.plan.gpus)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"OK dp={est.plan.dp} micro_batches={est.plan.grad_accum}" in run.stdout
