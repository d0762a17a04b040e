"""The command line: JSON schema, golden table, and one-line errors with exit code 2."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

GOLDEN = Path(__file__).parent / "golden"
SEED = [
    "estimate",
    "--model",
    "7b",
    "--gpu",
    "A100",
    "--gpus",
    "8",
    "--zero",
    "3",
    "--micro-batch",
    "4",
    "--global-batch",
    "32",
    "--seq-len",
    "2048",
    "--checkpointing",
    "full",
]


def run(args):
    return CliRunner().invoke(main, args)


def test_estimate_json_schema():
    result = run([*SEED, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"]["params"] == 6_738_415_616
    assert data["model"]["resolved_from"] == "7b"
    assert data["gpu"]["memory_gib"] == 80.0
    plan = data["plan"]
    assert (plan["dp"], plan["grad_accum"], plan["zero"], plan["global_batch"]) == (8, 1, 3, 32)
    memory = data["memory"]
    for key in ("peak_gib", "allocated_peak_gib", "capacity_gib", "usable_gib", "fits", "peak_phase", "breakdown_gib"):
        assert key in memory
    assert memory["fits"] is True
    assert sum(memory["breakdown_gib"].values()) == pytest.approx(memory["peak_gib"], abs=0.01)
    # headroom has one meaning everywhere: the fit limit less what the plan needs (not capacity - peak)
    assert memory["headroom_gib"] == pytest.approx(memory["usable_gib"] - memory["required_gib"], abs=0.0015)
    assert memory["headroom_gib"] != pytest.approx(memory["capacity_gib"] - memory["peak_gib"], abs=0.1)


def test_estimate_table_golden():
    result = run(SEED)
    assert result.exit_code == 0
    expected = (GOLDEN / "estimate_7b_zero3_full.txt").read_text()
    assert result.output == expected


def test_estimate_is_deterministic():
    assert run([*SEED, "--format", "json"]).output == run([*SEED, "--format", "json"]).output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "llama-9b"], "error: unknown model 'llama-9b'"),
        (["--model", "7b", "--gpu", "B300"], "error: unknown GPU 'B300'"),
        (["--model", "7b", "--gpus", "8", "--tp", "3"], "does not divide --gpus 8"),
        (
            ["--model", "70b", "--gpus", "8", "--tp", "8", "--pp", "1", "--micro-batch", "3", "--global-batch", "10"],
            "not a multiple",
        ),
        (["--model", "7b", "--micro-batch", "-1"], "at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = run(["estimate", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output


def test_malformed_config_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    result = run(["estimate", "--model", str(bad)])
    assert result.exit_code == 2 and "is not valid JSON" in result.output


def test_validate_memory_command(data_dir):
    result = run(["validate", "memory", str(data_dir / "memory_cases.yaml")])
    assert result.exit_code == 0
    assert "median |error|" in result.output and "unsafe" in result.output


def test_validate_missing_file(tmp_path):
    result = run(["validate", "memory", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_models_and_gpus_lists():
    assert "llama-2-13b" in run(["models"]).output
    assert "H100-80GB" in run(["gpus"]).output


def test_estimate_json_has_performance_and_cost():
    result = run([*SEED, "--tokens", "1B", "--format", "json"])
    data = json.loads(result.output)
    perf, cost = data["performance"], data["cost"]
    for key in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "hfu", "tflops_per_gpu", "breakdown_s"):
        assert key in perf
    assert perf["tokens_per_s"] == pytest.approx(perf["tokens_per_s_per_gpu"] * 8, rel=1e-4)
    assert cost["tokens"] == 1e9
    assert cost["hours"] == pytest.approx(1e9 / perf["tokens_per_s"] / 3600, rel=1e-3)
    assert cost["total_usd"] == pytest.approx(cost["hours"] * cost["usd_per_hour"], rel=1e-3)


def test_price_override_and_bad_tokens():
    data = json.loads(run([*SEED, "--price-per-gpu-hour", "2", "--format", "json"]).output)
    assert data["cost"]["usd_per_hour"] == 16.0
    bad = run([*SEED, "--tokens", "lots"])
    assert bad.exit_code == 2 and "cannot read --tokens 'lots'" in bad.output


def test_estimate_names_the_defaults_where_solve_differs():
    """A plan copied by hand from a solve into estimate without --seq-len/--engine/--global-batch gives other
    numbers: the table says which of those it took by default."""
    given = run(["estimate", "--model", "13b", "--gpus", "8", "--engine", "fsdp", "--seq-len", "4096"])
    assert given.exit_code == 0, given.output
    assert "defaults (flags not given" in given.output
    assert "--global-batch 8 = micro-batch x dp" in given.output
    assert "--seq-len" not in given.output and "--engine" not in given.output
    full = [*SEED, "--engine", "deepspeed"]
    assert "defaults (flags not given" not in run(full).output
    bare = run(["estimate", "--model", "13b", "--gpus", "8"]).output
    assert "--seq-len 2048 (solve: 4096)" in bare and "--engine deepspeed (solve searches the engines)" in bare


def test_estimate_shows_only_the_exposed_part_of_overlapped_data_parallel_traffic():
    """The 13b/16xA100 top plan (2-node FSDP, ZeRO-2, tp 2) hides its data-parallel traffic behind compute
    except what overlap cannot hide (each micro-batch's first gather, the step's last reduce-scatter): the
    speed table shows that part, a small share of the step, and the JSON keeps the traffic's own time."""
    args = ["estimate", "--model", "13b", "--gpus", "16", "--engine", "fsdp", "--zero", "2", "--tp", "2"]
    args += ["--micro-batch", "2", "--global-batch", "256", "--seq-len", "4096"]
    result = run(args)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("data-parallel communication")]
    assert line.startswith("data-parallel communication (not hidden)") and line.split()[-1] == "1%"
    data = json.loads(run([*args, "--format", "json"]).output)
    perf = data["performance"]
    assert 0 < perf["breakdown_s"]["data_parallel_comm"] < perf["data_parallel_comm_total_s"] / 10
