"""Bad input of every kind: one line on stderr naming the input and a fix, exit 2 (3 when nothing fits),
no traceback, no half-written or stranded folder. One test per cause A-Q of issue 11, each with the
issue's reproducer."""

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tests.fuzzing import MEASURED_ROW

from planner.calibrate.measure import render_csv
from planner.catalog.paths import data_dirs
from planner.cli import main
from planner.files import STALE_STAGING_S, remove_stale_staging, write_folder

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = ROOT / "search_spaces" / "default.yaml"
H100 = ROOT / "hardware" / "h100-80gb.yaml"
LLAMA_CONFIG = next((ROOT / "tests" / "data" / "hf_configs").glob("*llama*"), None)


def run(args: list[str]):
    return CliRunner().invoke(main, args)


def one_line_error(result, code: int = 2, *words: str) -> str:
    """Assert exit `code`, a single `error: ...` line on stderr holding `words`, no traceback; return it."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "(" in line, line  # the problem, then the fix in parentheses
    for word in words:
        assert word in line, (word, line)
    return line


def yaml_file(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def space_with(tmp_path: Path, **changes) -> Path:
    data = {**yaml.safe_load(DEFAULT_SPACE.read_text()), **changes}
    return yaml_file(tmp_path, "space.yaml", data)


def hf_config(tmp_path: Path, **changes) -> Path:
    data = {
        "model_type": "llama",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 688,
        "vocab_size": 1000,
        "max_position_embeddings": 2048,
        **changes,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def solve_args(tmp_path: Path, *extra: str, model: str = "7b", budget: str = "8xA100") -> list[str]:
    return ["solve", "--model", model, "--budget", budget, "--out", str(tmp_path / "out"), *extra]


# -- A. non-UTF-8 files ------------------------------------------------------------------------------------------------


def test_a_non_utf8_space_config_and_csv(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_bytes(b"tp: [1]\nx: [\xff]\n")
    one_line_error(run(solve_args(tmp_path, "--space", str(space))), 2, "s.yaml", "UTF-8")
    config = tmp_path / "config.json"
    config.write_bytes(b'{"model_type": "llama\xff"}')
    one_line_error(run(["estimate", "--model", str(config)]), 2, "config.json", "UTF-8")
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"date,device\n\xff\xfe\n")
    one_line_error(run(["validate", "memory", str(csv)]), 2, "m.csv", "UTF-8")
    assert not (tmp_path / "out").exists()


# -- B. non-string YAML keys -------------------------------------------------------------------------------------------


def test_b_non_string_keys(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(DEFAULT_SPACE.read_text() + "7: [1]\n", encoding="utf-8")
    one_line_error(run(solve_args(tmp_path, "--space", str(space))), 2, "s.yaml", "key 7")
    model = yaml.safe_load((ROOT / "models" / "llama-2-7b.yaml").read_text())
    model["architecture"][3] = 1
    path = yaml_file(tmp_path, "m.yaml", model)
    one_line_error(run(["estimate", "--model", str(path)]), 2, "m.yaml", "key 3")
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  a:\n    model: 7b\n    1: 2\n    measured: {metric: allocated, peak_gib: 3}\n")
    one_line_error(run(["validate", "memory", str(cases)]), 2, "cases.yaml", "key 1")


# -- C. launch trusts report.json --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "r"
    result = run(["solve", "--model", "7b", "--budget", "8xA100", "--out", str(out), "--top", "1"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_c_launch_checks_the_report(tmp_path, report):
    empty = tmp_path / "r.json"
    empty.write_text('{"inputs":{},"gpu":{},"plans":[{}]}')
    one_line_error(run(["launch", str(empty), "--out", str(tmp_path / "l")]), 2, "r.json", "'model'")
    deeper = json.loads(json.dumps(report))
    deeper["plans"][0]["plan"]["tp"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(deeper))
    one_line_error(run(["launch", str(bad), "--out", str(tmp_path / "l")]), 2, "bad.json", "--tp")
    deeper["plans"][0]["plan"]["tp"] = 1
    deeper["plans"][0]["plan"]["precision"] = ["bf16"]
    bad.write_text(json.dumps(deeper))
    one_line_error(run(["launch", str(bad), "--out", str(tmp_path / "l")]), 2, "bad.json", "--precision")
    deeper["plans"][0]["plan"]["precision"] = "bf16"
    deeper["inputs"]["safety_margin"] = "x"
    bad.write_text(json.dumps(deeper))
    one_line_error(run(["launch", str(bad), "--out", str(tmp_path / "l")]), 2, "safety_margin")
    assert not (tmp_path / "l").exists()


# -- D. a rank that isdigit() accepts and int() does not ---------------------------------------------------------------


def test_d_superscript_rank(tmp_path):
    one_line_error(run(["launch", "rep/report.json#²"]), 2, "cannot read the plan rank", "#N")


# -- E. output folders, checked before the search ----------------------------------------------------------------------


def test_e_output_folders_refused_before_the_search(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(run(solve_args(tmp_path, "--out", str(afile / "sub"))), 2, "is a file")
    one_line_error(run(solve_args(tmp_path, "--out", ".")), 2, "--out", "names no folder")
    one_line_error(run(solve_args(tmp_path, "--out", str(tmp_path / ("x" * 300)))), 2, "longer than 255 bytes")
    # a folder the user may not write to: refused by its permissions before any search work starts
    import planner.search.run as search_run

    monkeypatch.setattr(search_run, "solve_request", lambda request: pytest.fail("the search ran"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    one_line_error(run(solve_args(tmp_path, "--out", str(tmp_path / "ro" / "x"))), 2, "cannot write in")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_e_read_only_folder_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_line_error(run(solve_args(tmp_path, "--out", str(ro / "x"))), 2, "cannot write in")
    finally:
        ro.chmod(0o755)


def test_e_write_errors_become_one_line(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(Exception, match="No space left on device") as caught:
        write_folder(tmp_path / "out", {"a.txt": "x"})
    assert type(caught.value).__name__ == "PlannerError"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging folder left behind


# -- F. an over-long --model name --------------------------------------------------------------------------------------


def test_f_over_long_model_name():
    one_line_error(run(["estimate", "--model", "m" * 5000]), 2, "--model", "1024 characters")
    one_line_error(run(["estimate", "--model", "m" * 1000]), 2, "unknown model")


# -- G. parser limits --------------------------------------------------------------------------------------------------


def test_g_parser_limits(tmp_path):
    deep = tmp_path / "deep" / "config.json"
    deep.parent.mkdir()
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(run(["estimate", "--model", str(deep)]), 2, "config.json", "nests too deeply")
    digits = hf_config(tmp_path, vocab_size=0)
    digits.write_text(digits.read_text().replace('"vocab_size": 0', '"vocab_size": ' + "9" * 5000))
    one_line_error(run(["estimate", "--model", str(digits)]), 2, "config.json", "cannot be read")
    space = tmp_path / "s.yaml"
    space.write_text(DEFAULT_SPACE.read_text().replace("micro_batch: [1,", "micro_batch: [" + "9" * 5000 + ","))
    one_line_error(run(solve_args(tmp_path, "--space", str(space))), 2, "s.yaml")
    nested = tmp_path / "n.yaml"
    nested.write_text("tp: " + "[" * 100 + "]" * 100 + "\n")
    one_line_error(run(solve_args(tmp_path, "--space", str(nested))), 2, "n.yaml", "deeper than")


# -- H. global batch overflow ------------------------------------------------------------------------------------------


def test_h_huge_global_batch(tmp_path):
    one_line_error(run(solve_args(tmp_path, "--global-batch-tokens", "1e308")), 2, "--global-batch-tokens")
    one_line_error(run(solve_args(tmp_path, "--global-batch", str(10**20))), 2, "--global-batch")


# -- I. zero and negative degrees --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--tp", "0"), ("--pp", "0"), ("--micro-batch", "0"), ("--cp", "-8")])
def test_i_zero_and_negative_pins(tmp_path, flag, value):
    one_line_error(run(solve_args(tmp_path, flag, value)), 2, flag, "between 1")


# -- J. huge integers in a space file or config.json -------------------------------------------------------------------


def test_j_huge_integers(tmp_path):
    space = space_with(tmp_path, micro_batch=[10**30])
    one_line_error(run(solve_args(tmp_path, "--space", str(space))), 2, "space.yaml", "micro_batch")
    config = hf_config(tmp_path, vocab_size=2**63)
    one_line_error(run(["estimate", "--model", str(config)]), 2, "vocab_size", "beyond any real model")


# -- K. config.json type holes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"model_type": "mpt", "attn_config": "abc", "d_model": 256, "n_heads": 4, "n_layers": 2, "max_seq_len": 2048},
         ("attn_config", "object")),
        ({"model_type": ["llama"]}, ("model_type",)),
        ({"sliding_window": "4096"}, ("sliding_window",)),
        ({"sliding_window": float("inf")}, ("sliding_window",)),
        ({"head_dim": float("inf")}, ("malformed",)),
    ],
)  # fmt: skip
def test_k_config_type_holes(tmp_path, changes, words):
    config = hf_config(tmp_path, **changes)
    one_line_error(run(["estimate", "--model", str(config)]), 2, "config.json", *words)


# -- L. validation cases -----------------------------------------------------------------------------------------------


def _cases(tmp_path: Path, measured: dict, **plan) -> Path:
    return yaml_file(tmp_path, "cases.yaml", {"cases": {"c-1": {"model": "7b", **plan, "measured": measured}}})


@pytest.mark.parametrize(
    "measured, plan, words",
    [
        ({"metric": "allocated", "peak_gib": 0}, {}, ("peak_gib",)),
        ({"metric": "allocated", "peak_gib": float("nan")}, {}, ("peak_gib", "finite")),
        ({"metric": "allocated", "peak_gib": float("inf")}, {}, ("peak_gib", "finite")),
        ({"metric": "allocated", "peak_gib": 10}, {"gpus": float("inf")}, ("--gpus", "whole number")),
        ({"metric": "allocated", "peak_gib": 10}, {"model": None}, ("needs a model",)),
    ],
)
def test_l_memory_cases(tmp_path, measured, plan, words):
    one_line_error(run(["validate", "memory", str(_cases(tmp_path, measured, **plan))]), 2, "cases.yaml", *words)


def test_l_throughput_cases(tmp_path):
    path = _cases(tmp_path, {"tokens_per_s_per_gpu": float("nan")})
    one_line_error(run(["validate", "throughput", str(path)]), 2, "tokens_per_s_per_gpu", "finite")


def test_l_every_case_oom_prints_no_median(tmp_path):
    path = _cases(tmp_path, {"metric": "nvidia-smi", "outcome": "oom"})
    result = run(["validate", "memory", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["median_abs_error_pct"] is None
    result = run(["validate", "memory", str(path)])
    assert result.exit_code == 0 and "median |error|: -" in result.stdout


# -- M. measured CSV cells ---------------------------------------------------------------------------------------------


def measured_csv(tmp_path: Path, **cells: str) -> Path:
    """A one-row `planner calibrate measure` CSV (a 1B model on one H100; the numbers are placeholders
    the validation only compares), with `cells` replaced."""
    path = tmp_path / "m.csv"
    path.write_text(render_csv([MEASURED_ROW | cells]))
    return path


def test_m_a_good_measured_row_validates(tmp_path):
    result = run(["validate", "memory", str(measured_csv(tmp_path))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "cells, words",
    [
        ({"gpus": "abc"}, ("gpus", "not a number")),
        ({"gpus": "0"}, ("gpus", "between 1")),
        ({"micro_batch": "1e400"}, ("micro_batch",)),
        ({"max_allocated_gib": "nan"}, ("max_allocated_gib", "finite")),
        ({"tokens_per_s": "-5"}, ("tokens_per_s",)),
    ],
)
def test_m_measured_csv_cells(tmp_path, cells, words):
    path = measured_csv(tmp_path, **cells)
    command = "throughput" if "tokens_per_s" in cells else "memory"
    one_line_error(run(["validate", command, str(path)]), 2, "m.csv", *words)


# -- N. hardware YAML --------------------------------------------------------------------------------------------------


def _gpu_file(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(H100.read_text())
    edit(data)
    data["name"] = "H100-test"
    data["aliases"] = data.get("aliases", []) if isinstance(data.get("aliases"), list) else data["aliases"]
    return yaml_file(tmp_path, "gpu.yaml", data)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.update(memory_gib=float("nan")), ("memory_gib", "finite")),
        (lambda d: d.update(price=7), ("price", "mapping")),
        (lambda d: d.update(aliases="H100x"), ("aliases",)),
        (lambda d: d["node"].update(gpus_per_node=0), ("gpus_per_node",)),
        (lambda d: d["node"].update(inter_node_bandwidth_gbps_per_gpu=0), ("inter_node_bandwidth_gbps_per_gpu",)),
    ],
)
def test_n_hardware_yaml(tmp_path, edit, words):
    path = _gpu_file(tmp_path, edit)
    one_line_error(run(["estimate", "--model", "7b", "--gpu", str(path)]), 2, "gpu.yaml", *words)


# -- O. non-finite or absurd numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--tokens", "1B", "--price-per-gpu-hour", "inf"], ("--price-per-gpu-hour",)),
        (["--tokens", "1B", "--max-hours", "inf"], ("--max-hours",)),
        (["--safety-margin", "nan"], ("--safety-margin",)),
        (["--network-gbps-per-gpu", "1e-300"], ("--network-gbps-per-gpu", "between 0.01")),
        (["--tokens", ""], ("--tokens",)),
    ],
)
def test_o_absurd_solve_numbers(tmp_path, extra, words):
    one_line_error(run(solve_args(tmp_path, *extra)), 2, *words)
    assert not (tmp_path / "out").exists()


def test_o_absurd_estimate_numbers():
    one_line_error(run(["estimate", "--model", "7b", "--gpus-per-node", "0"]), 2, "--gpus-per-node")
    one_line_error(run(["estimate", "--model", "7b", "--safety-margin", "nan"]), 2, "--safety-margin")
    one_line_error(run(["estimate", "--model", "7b", "--tokens", "1B", "--price-per-gpu-hour", "inf"]), 2, "price")


# -- P. ordinary input that crashed the launch README writer -----------------------------------------------------------


def test_p_gpu_without_a_price_emits_launch_configs(tmp_path):
    out = tmp_path / "out"
    result = run(
        ["solve", "--model", "13b", "--budget", "16xH100-96GB", "--tokens", "1B", "--emit", "all", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    readme = (out / "launch-1" / "README.md").read_text()
    assert "hours for 1,000,000,000 tokens" in readme and "$nan" not in readme


# -- Q. newlines in names; click's own usage errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["estimate", "--model", "7b\nx"], ("--model", "\\n")),
        (["estimate", "--model", "7b", "--gpu", "A100\nB"], ("--gpu", "\\n")),
        (["solve", "--model", "7b"], ("--budget", "--gpu-types")),
        (["estimate", "--model", "7b", "--tp", "x"], ("--tp", "planner estimate --help")),
        (["estimate", "--model", "7b", "--nope"], ("--nope",)),
        (["nope"], ("nope",)),
    ],
)
def test_q_one_line_errors(args, words):
    one_line_error(run(args), 2, *words)


# -- staging folders of killed runs ------------------------------------------------------------------------------------


def test_stale_staging_folders_are_removed_and_only_ours(tmp_path):
    target = tmp_path / "report"
    old = time.time() - STALE_STAGING_S - 10
    ours = [tmp_path / ".report.ab3_k9zq", tmp_path / ".report.old-1234"]
    young = tmp_path / ".report.zz9yy8xx"
    theirs = [tmp_path / ".report.notours-x", tmp_path / ".other.ab3_k9zq", tmp_path / "report.ab3_k9zq"]
    for path in [*ours, young, *theirs]:
        path.mkdir()
        (path / "f").write_text("x")
        if path is not young:
            os.utime(path, (old, old))
    write_folder(target, {"a.txt": "new"})
    assert (target / "a.txt").read_text() == "new"
    assert not any(p.exists() for p in ours)
    assert young.exists() and all(p.exists() for p in theirs)
    assert remove_stale_staging(target, now=time.time() + 2 * STALE_STAGING_S) == [young]


def test_data_dirs_are_found():
    assert data_dirs("hardware")  # the catalogs these tests copy from


# -- size guard of search spaces ----------------------------------------------------------------------------------


def _refuse_work(monkeypatch):
    import planner.search.solve as solve_module

    monkeypatch.setattr(solve_module, "evaluate_candidates", lambda *a, **k: pytest.fail("the search ran"))


def test_full_space_on_2048_gpus_passes_the_size_guard():
    from planner.search.space import load_space, parse_budget

    space = load_space(ROOT / "search_spaces" / "full.yaml", parse_budget("2048xH100"))
    space.check_size()  # the README's benchmark (c)


def test_a_numeric_grid_too_large_is_refused_before_work(tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    data = yaml.safe_load((ROOT / "search_spaces" / "full.yaml").read_text())
    data.update(tp=list(range(1, 65)), pp=list(range(1, 65)), cp=[1, 2, 4, 8], micro_batch=list(range(1, 33)))
    space = yaml_file(tmp_path, "big.yaml", data)
    args = ["solve", "--model", "llama-3.1-405b", "--budget", "2048xH100", "--space", str(space)]
    # 12 GPU counts (powers of two to 2048) x 64 x 64 x 4 x 32
    line = one_line_error(run([*args, "--out", str(tmp_path / "o")]), 2, "6,291,456 combinations", "1,000,000")
    assert "--tp (64 values)" in line and "--pp (64 values)" in line


def test_every_choice_open_is_refused_before_work(tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    choices = {
        "zero": [0, 1, 2, 3],
        "checkpointing": ["none", "selective", "full"],
        "precision": ["bf16", "fp16", "fp32", "pure-bf16", "fp8"],
        "offload": ["none", "optimizer", "optimizer+params"],
        "engine": ["deepspeed", "fsdp", "megatron"],
        "optimizer": ["adamw", "adamw-8bit", "sgd", "adafactor"],
        "loss": ["standard", "chunked", "fused"],
        "flash_attention": [True, False],
        "compile": [True, False],
        "flash_attention_version": [1, 2, 3],
    }
    space = space_with(tmp_path, tp=[1], pp=[1], micro_batch=[1], **choices)
    line = one_line_error(run(solve_args(tmp_path, "--space", str(space))), 2, "77,760 combinations of its")
    assert "--precision (5 values)" in line


def test_too_many_valid_plans_are_refused_before_the_models_run(tmp_path, monkeypatch):
    import planner.search.candidates as candidates

    monkeypatch.setattr(candidates, "evaluate_group", lambda *a, **k: pytest.fail("the models ran"))
    monkeypatch.setattr(candidates, "MAX_CANDIDATES", 10)
    one_line_error(run(solve_args(tmp_path)), 2, "structurally valid plans, more than the 10 ")


# -- calibrate: flags and output paths checked before any training step -------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], ("--steps", "warm-up")),
        (["--steps", "100000"], ("--steps", "between 3")),
        (["--max-minutes", "nan"], ("--max-minutes", "finite")),
        (["--max-minutes", "inf"], ("--max-minutes",)),
        (["--out", "."], ("--out", "is a directory")),
        (["--out", "{afile}/m.csv"], ("--out", "is a file, not a folder")),
    ],
)
def test_calibrate_measure_flags(tmp_path, args, words):
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{afile}", str(tmp_path / "afile")) for a in args]
    one_line_error(run(["calibrate", "measure", "--grid", "tiny", "--device", "cpu", *args]), 2, *words)


def test_calibrate_trace_out_in_the_way(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(run(["calibrate", "trace", "--out", str(afile)]), 2, "--out", "is a file")
