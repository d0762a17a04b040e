"""`planner calibrate measure`: the harness runs on CPU (tiny grid), and its CSV feeds `planner validate`."""

import csv

import pytest
from click.testing import CliRunner

from planner.calibrate.measure import COLUMNS, GRIDS, example_model_ref, render_csv
from planner.cli import main
from planner.estimate import estimate_plan
from planner.plan import PlanRequest


def test_measure_runs_the_tiny_grid_on_cpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "cpu.csv"
    result = CliRunner().invoke(
        main, ["calibrate", "measure", "--grid", "tiny", "--device", "cpu", "--steps", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["status"] for r in rows] == ["ok"] * len(GRIDS["tiny"])
    assert tuple(rows[0]) == COLUMNS
    for row in rows:
        assert row["device"] == "cpu" and row["gpu"] == "" and row["torch"]
        assert float(row["step_time_s"]) > 0 and float(row["tokens_per_s"]) > 0
        assert row["max_allocated_gib"] == row["max_reserved_gib"] == row["nvidia_smi_used_gib"] == ""
    assert "4 points measured" in result.output


def test_measure_refuses_too_few_steps(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    result = CliRunner().invoke(main, ["calibrate", "measure", "--grid", "tiny", "--device", "cpu", "--steps", "2"])
    assert result.exit_code == 2 and "--steps must exceed the 2 warm-up steps" in result.output


def _predicted_rows() -> list[dict]:
    """GPU rows whose 'measurements' are the planner's own predictions: the CSV plumbing must then show
    0% error (a derivation, not data)."""
    rows = []
    for point in GRIDS["default"][:4]:
        request = PlanRequest(
            model=example_model_ref(point.model),
            gpu="H100-80GB",
            gpus=1,
            engine="fsdp",
            zero=point.zero,
            precision=point.precision,
            checkpointing=point.checkpointing,
            micro_batch=point.micro_batch,
            seq_len=point.seq_len,
        )
        est = estimate_plan(request)
        rows.append(
            {c: "" for c in COLUMNS}
            | vars(point)
            | {
                "device": "NVIDIA H100 80GB HBM3",
                "gpu": "H100-80GB",
                "gpus": 1,
                "status": "ok",
                "max_allocated_gib": est.memory.allocated_peak_gib,
                "nvidia_smi_used_gib": est.memory.peak_gib,
                "tokens_per_s": est.performance.tokens_per_s_per_gpu,
            }
        )
    rows.append(rows[0] | {"status": "oom", "max_allocated_gib": "", "nvidia_smi_used_gib": "", "tokens_per_s": ""})
    rows.append(rows[0] | {"device": "cpu", "gpu": ""})  # CPU rows carry no GPU memory: skipped
    return rows


def test_validate_reads_measure_csvs(tmp_path):
    path = tmp_path / "h100.csv"
    path.write_text(render_csv(_predicted_rows()))
    result = CliRunner().invoke(main, ["validate", "memory", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output)
    cases = report["cases"]
    assert len(cases) == 9  # 4 rows x (allocated, nvidia-smi) + 1 oom
    assert all(abs(c["error_pct"]) < 0.01 for c in cases if c["error_pct"] is not None)
    assert {c["id"] for c in cases} >= {"measured-h100-80gb-allocated-1", "measured-h100-80gb-nvidia-smi-5"}
    result = CliRunner().invoke(main, ["validate", "throughput", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["cases"]) == 4


def test_validate_refuses_a_csv_without_gpu_rows(tmp_path):
    path = tmp_path / "cpu.csv"
    path.write_text(render_csv([_predicted_rows()[-1]]))
    result = CliRunner().invoke(main, ["validate", "memory", str(path)])
    assert result.exit_code == 2 and "has no GPU rows" in result.output
