"""Generated inputs for every command and input kind, and the promise every run must keep (issue 11).

Each category is a hypothesis strategy of `Attempt`s: a command line plus the files it reads (search
spaces, model and GPU YAML, config.json, validation cases, measured CSVs, report.json, raw bytes), built
from the shipped files by mutation and from pools of ordinary, extreme and malformed values. `check` runs
one attempt in process (click's CliRunner, in a fresh folder) and returns what broke the promise, or
None: no traceback, exit code 0, 2 or 3 only, an error is one `error: ...` line on stderr, and no NaN,
infinity or negative quantity in any output (JSON parsed and walked; tables and reports scanned).

Used by tests/test_fuzz.py (a bounded run in the default test suite) and benchmarks/fuzz.py (20,000+).
"""

import copy
import csv
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import strategies as st

from planner.calibrate.measure import COLUMNS
from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent

MODELS = ["7b", "13b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b", "mpt-7b", "qwen2.5-7b", "llama-3.1-405b"]
GPUS = ["A100", "A100-40GB", "H100", "H800-80GB", "A10G", "L40S", "V100-32GB", "RTX-4090", "H200"]
SMALL_BUDGETS = ["1xA100", "2xA10G", "4xA100", "8xA100", "2x8xH100", "8xH800", "4xL40S", "8xV100-32GB"]

WEIRD_TEXT = [
    "",
    " ",
    "0",
    "-1",
    "-8",
    "1e308",
    "1e-300",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e20",
    str(10**30),
    "9" * 5000,
    "0x10",
    "1_000",
    "²",
    "١٢",
    "abc",
    "1.5",
    "\n",
    "7\n8",
    "x" * 300,
    "../..",
    ".",
    "/",
    "\x00",
]
"""Values that break naive parsing: empty, zero, negative, huge, non-finite, non-ASCII digits, NUL."""

WEIRD_VALUES = [
    None,
    0,
    -1,
    -(2**63),
    2**63,
    10**30,
    0.5,
    1e-300,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    "",
    "abc",
    "4096",
    "a\nb",
    [],
    [1],
    {},
    {"a": 1},
    [[[[1]]]],
]
"""YAML/JSON values of every type and range."""


@dataclass(frozen=True)
class Attempt:
    """One generated input: the command line and the files (relative name -> bytes) it reads."""

    category: str
    argv: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = {k: v[:300] for k, v in self.files.items()}
        return f"Attempt({self.category!r}, {list(self.argv)!r}, {shown!r})"


def _rare(strategy, weird, one_in: int = 8):
    """Mostly `strategy`, one time in `one_in` a value of `weird`."""
    return st.integers(0, one_in - 1).flatmap(lambda k: weird if k == 0 else strategy)


def weird_text():
    return st.one_of(st.sampled_from(WEIRD_TEXT), st.text(max_size=12), st.integers().map(str))


def flag_value(valid: list[str]):
    return _rare(st.sampled_from(valid), weird_text(), one_in=6)


def yaml_value():
    return st.one_of(
        st.sampled_from(WEIRD_VALUES).map(copy.deepcopy),  # a fresh copy: mutations must not edit the pool
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
        st.lists(st.integers(-4, 20), max_size=4),
    )


# -- command lines ------------------------------------------------------------------------------------------

ESTIMATE_FLAGS: dict[str, list[str]] = {
    "--model": MODELS,
    "--gpu": GPUS,
    "--gpu-memory-gib": ["24", "80", "4096", "0.5"],
    "--network-gbps-per-gpu": ["0.01", "25", "10000"],
    "--gpus": ["1", "2", "8", "16", "64", "1000000"],
    "--gpus-per-node": ["1", "4", "8", "1024"],
    "--tp": ["1", "2", "4", "8"],
    "--pp": ["1", "2", "4"],
    "--cp": ["1", "2"],
    "--zero": ["0", "1", "2", "3"],
    "--micro-batch": ["1", "2", "8", "10000000"],
    "--global-batch": ["8", "64", "1024", "10000000000"],
    "--seq-len": ["1", "512", "2048", "131072", "16777216"],
    "--checkpointing": ["none", "selective", "full"],
    "--precision": ["bf16", "fp16", "fp32", "pure-bf16", "fp8"],
    "--optimizer": ["adamw", "adamw-8bit", "sgd", "adafactor"],
    "--offload": ["none", "optimizer", "optimizer+params"],
    "--engine": ["deepspeed", "fsdp", "megatron"],
    "--flash-attention-version": ["1", "2", "3"],
    "--loss": ["standard", "chunked", "fused"],
    "--safety-margin": ["0", "0.05", "0.5"],
    "--tokens": ["1", "1B", "15T", "1e16"],
    "--price-per-gpu-hour": ["0.01", "3.5", "1e12"],
    "--format": ["table", "json"],
}
SWITCHES = ["--flash-attention", "--no-flash-attention", "--compile", "--no-compile"]

SOLVE_FLAGS: dict[str, list[str]] = {
    "--seq-len": ["1024", "2048", "4096", "131072"],
    "--global-batch": ["16", "64", "256", "1000000"],
    "--global-batch-tokens": ["65536", "1M", "4M"],
    "--tokens": ["1B", "10B", "1e16"],
    "--objective": ["throughput", "cost", "time"],
    "--max-cost": ["1", "1000", "1e12"],
    "--max-hours": ["0.1", "100", "1e7"],
    "--top": ["1", "3", "1000000"],
    "--safety-margin": ["0", "0.05", "0.5"],
    "--price-per-gpu-hour": ["0.5", "3", "1e12"],
    "--network-gbps-per-gpu": ["0.01", "25", "10000"],
    "--tp": ["1", "2", "4"],
    "--pp": ["1", "2"],
    "--cp": ["1", "2"],
    "--zero": ["0", "1", "2", "3"],
    "--micro-batch": ["1", "2", "4"],
    "--checkpointing": ["none", "selective", "full"],
    "--precision": ["bf16", "fp16", "pure-bf16", "fp8"],
    "--optimizer": ["adamw", "sgd", "adafactor", "adamw-8bit"],
    "--offload": ["none", "optimizer", "optimizer+params"],
    "--engine": ["deepspeed", "fsdp", "megatron"],
    "--flash-attention-version": ["1", "2", "3"],
    "--loss": ["standard", "chunked", "fused"],
    "--format": ["table", "json"],
    "--emit": ["all", "deepspeed", "megatron,torchtitan", "slurm"],
    "--out": ["out", "out/sub", ".", "a" * 300, "afile/sub"],
}
PINS_THAT_SHRINK = ["--engine", "--zero", "--checkpointing", "--offload"]
"""Solve runs a whole search; two of these pins keep each generated search to a fraction of a second."""


@st.composite
def _flags(draw, table: dict[str, list[str]], max_size: int) -> list[str]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(table)), max_size=max_size, unique=True)):
        argv += [flag, draw(flag_value(table[flag]))]
    return argv


@st.composite
def estimate_flags(draw) -> Attempt:
    flags = {**ESTIMATE_FLAGS}
    model = draw(flag_value(MODELS))
    argv = ["estimate", "--model", model, *draw(_flags(flags, 8))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    if draw(st.integers(0, 30)) == 0:
        argv.append(draw(st.sampled_from(["--nope", "--tp", "extra-argument"])))
    return Attempt("estimate-flags", tuple(argv))


def _solve_head(draw) -> list[str]:
    argv = ["solve", "--model", draw(flag_value(MODELS[:5])), "--budget", draw(flag_value(SMALL_BUDGETS))]
    for pin in draw(st.lists(st.sampled_from(PINS_THAT_SHRINK), min_size=2, max_size=2, unique=True)):
        argv += [pin, draw(st.sampled_from(SOLVE_FLAGS[pin]))]
    return argv


@st.composite
def solve_flags(draw) -> Attempt:
    argv = _solve_head(draw)
    extra = draw(_flags({k: v for k, v in SOLVE_FLAGS.items() if k not in PINS_THAT_SHRINK}, 5))
    if "--out" not in extra:
        extra += ["--out", "out"]
    files = {"afile": b"x"}
    return Attempt("solve-flags", tuple(argv + extra), files)


@st.composite
def launch_refs(draw) -> Attempt:
    ref = draw(
        st.one_of(
            st.sampled_from(["r/report.json", "r", "r/report.json#1", "r#2", "r/report.json#²", "r#0", "r#-1"]),
            weird_text().map(lambda t: "r/report.json#" + t),
            weird_text(),
        )
    )
    argv = ["launch", ref, "--out", "launch"]
    if draw(st.booleans()):
        argv += ["--rank", draw(flag_value(["1", "2", "3"]))]
    if draw(st.booleans()):
        argv += ["--targets", draw(flag_value(["all", "deepspeed", "megatron,torchtitan", "fsdp"]))]
    return Attempt("launch-ref", tuple(argv), {"r/report.json": base_report()})


# -- files ------------------------------------------------------------------------------------------------


def _dump_yaml(data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


def _dump_json(data) -> bytes:
    return json.dumps(data).encode("utf-8")


@st.composite
def mutated(draw, base: dict, max_changes: int = 3) -> dict:
    """`base` with up to `max_changes` edits: a value replaced, a key dropped or added, a nested value
    replaced (one level down)."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_changes))):
        target = data
        nested = [k for k, v in data.items() if isinstance(v, dict) and v]
        if nested and draw(st.booleans()):
            target = data[draw(st.sampled_from(sorted(nested, key=str)))]
        op = draw(st.sampled_from(["set", "set", "drop", "add"]))
        keys = sorted(target, key=str)
        if op == "set" and keys:
            target[draw(st.sampled_from(keys))] = draw(yaml_value())
        elif op == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.one_of(st.text(max_size=8), st.integers(-3, 3)))] = draw(yaml_value())
    return data


@cache
def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@cache
def _json(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def _serialized(draw, data, as_json: bool) -> bytes:
    try:
        return _dump_json(data) if as_json else _dump_yaml(data)
    except (TypeError, ValueError):  # e.g. a key json cannot write: write the base form instead
        return b"{}"


SPACE_VALUES = {
    "gpus": ["powers_of_two", "whole_nodes", [1, 2, 8], [3, 5], [1000000]],
    "tp": [[1, 2, 4, 8, 16], [3], [1, 4096]],
    "pp": [[1, 2, 3, 4, 6, 8], [5], [4096]],
    "cp": [[1, 2, 4, 8], [3], [4096]],
    "micro_batch": [[1, 3, 32], [10000000]],
    "zero": [[0, 1, 2, 3]],
    "precision": [["bf16", "fp16", "fp32", "pure-bf16", "fp8"]],
    "optimizer": [["adamw", "adamw-8bit", "sgd", "adafactor"]],
    "loss": [["standard", "chunked", "fused"]],
    "flash_attention": [[True, False]],
    "compile": [[True, False]],
    "flash_attention_version": [[1, 2, 3], [3]],
}
"""Valid but unusual values per search-space dimension (wide, odd, extreme)."""


@st.composite
def space_files(draw) -> Attempt:
    data = copy.deepcopy(_yaml("search_spaces/default.yaml"))
    for key in draw(st.lists(st.sampled_from(sorted(SPACE_VALUES)), max_size=3, unique=True)):
        data[key] = draw(st.sampled_from(SPACE_VALUES[key]))
    if draw(st.booleans()):
        data = draw(mutated(data, 2))
    argv = [*_solve_head(draw), "--space", "space.yaml", "--out", "out"]
    return Attempt("space-yaml", tuple(argv), {"space.yaml": _serialized(draw, data, False)})


@st.composite
def model_files(draw) -> Attempt:
    name = draw(st.sampled_from(["llama-3.2-1b", "mpt-7b", "llama-2-7b", "qwen2.5-3b"]))
    data = draw(mutated(_yaml(f"models/{name}.yaml"), 3))
    command = draw(st.sampled_from(["estimate", "estimate", "solve"]))
    if command == "estimate":
        argv = ["estimate", "--model", "m.yaml", *draw(_flags(ESTIMATE_FLAGS, 3))]
    else:
        argv = [*_solve_head(draw), "--out", "out"]
        argv[2] = "m.yaml"
    return Attempt("model-yaml", tuple(argv), {"m.yaml": _serialized(draw, data, False)})


@st.composite
def config_files(draw) -> Attempt:
    name = draw(st.sampled_from(["llama-2-7b", "mistral-7b-v0.1", "mpt-7b", "gpt2", "pythia-160m", "qwen2-7b"]))
    data = draw(mutated(_json(f"tests/data/hf_configs/{name}.json"), 3))
    argv = ["estimate", "--model", "cfg/config.json", *draw(_flags(ESTIMATE_FLAGS, 2))]
    return Attempt("config-json", tuple(argv), {"cfg/config.json": _serialized(draw, data, True)})


@st.composite
def gpu_files(draw) -> Attempt:
    name = draw(st.sampled_from(["h100-80gb", "a100-80gb", "a10g", "h800-80gb"]))
    data = draw(mutated(_yaml(f"hardware/{name}.yaml"), 3))
    argv = ["estimate", "--model", draw(st.sampled_from(MODELS[:4])), "--gpu", "g.yaml"]
    argv += draw(_flags({k: ESTIMATE_FLAGS[k] for k in ("--gpus", "--zero", "--engine", "--tokens")}, 3))
    return Attempt("gpu-yaml", tuple(argv), {"g.yaml": _serialized(draw, data, False)})


@cache
def _case_bases() -> list[tuple[str, dict]]:
    memory = _yaml("tests/data/memory_cases.yaml")["cases"]
    throughput = _yaml("tests/data/throughput_cases.yaml")["cases"]
    return [("memory", c) for c in list(memory.values())[:20]] + [
        ("throughput", c) for c in list(throughput.values())[:20]
    ]


@st.composite
def case_files(draw) -> Attempt:
    bases = _case_bases()
    chosen = draw(st.lists(st.integers(0, len(bases) - 1), min_size=1, max_size=3, unique=True))
    kind = bases[chosen[0]][0]
    cases = {}
    for i in chosen:
        case = bases[i][1]
        if bases[i][0] == kind:
            cases[f"c-{i}"] = draw(mutated(case, 2)) if draw(st.booleans()) else copy.deepcopy(case)
    data = {"cases": cases} if draw(st.integers(0, 9)) else draw(mutated({"cases": cases}, 1))
    if draw(st.integers(0, 4)) == 0:  # cases waiting for plan fields, and refinements applied later
        waiting = copy.deepcopy(bases[chosen[0]][1])
        waiting[draw(st.sampled_from(["pp_schedule", "tp", "nope"]))] = draw(yaml_value())
        waiting["waits_for"] = draw(st.one_of(st.just(["uneven split"]), yaml_value()))
        waiting["later"] = draw(st.one_of(st.just({"zero": 1}), yaml_value()))
        data["pending"] = draw(st.one_of(st.just({"p-1": waiting}), yaml_value()))
    argv = ["validate", kind, "cases.yaml", *draw(st.sampled_from([[], ["--format", "json"]]))]
    return Attempt("cases-yaml", tuple(argv), {"cases.yaml": _serialized(draw, data, False)})


MEASURED_ROW = {c: "" for c in COLUMNS} | {
    "device": "NVIDIA H100 80GB HBM3",
    "gpu": "H100-80GB",
    "model": "llama-3.2-1b",
    "zero": "0",
    "precision": "bf16",
    "checkpointing": "none",
    "micro_batch": "1",
    "seq_len": "2048",
    "optimizer": "adamw",
    "engine": "fsdp",
    "gpus": "1",
    "status": "ok",
    "max_allocated_gib": "20.0",
    "nvidia_smi_used_gib": "22.0",
    "tokens_per_s": "20000",
}
"""A placeholder measured row (the validation compares, it does not check the figures' truth)."""


@st.composite
def measured_csvs(draw) -> Attempt:
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        row = dict(MEASURED_ROW)
        for column in draw(st.lists(st.sampled_from(sorted(COLUMNS)), max_size=3, unique=True)):
            row[column] = draw(st.one_of(weird_text(), st.sampled_from(["oom", "ok", "0", "3", "A100", ""])))
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.integers(0, 9)) == 0:
        text = text.replace(draw(st.sampled_from(["gpus", "status", "\n"])), "", 1)
    argv = ["validate", draw(st.sampled_from(["memory", "throughput"])), "m.csv"]
    argv += draw(st.sampled_from([[], ["--format", "json"]]))
    return Attempt("measured-csv", tuple(argv), {"m.csv": text.encode("utf-8")})


@cache
def base_report() -> bytes:
    """report.json of a small real search (written once per process)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "r"
        result = CliRunner().invoke(
            main,
            ["solve", "--model", "llama-3.2-1b", "--budget", "4xA100", "--engine", "fsdp", "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
    report["plans"] = report["plans"][:3]
    return _dump_json(report)


@st.composite
def report_files(draw) -> Attempt:
    report = json.loads(base_report())
    section = draw(st.sampled_from(["inputs", "gpu", "plan", "memory", "top"]))
    if section == "top":
        report = draw(mutated(report, 2))
    elif section in ("plan", "memory"):
        entry = report["plans"][0]
        entry[section] = draw(mutated(entry[section], 2))
    else:
        report[section] = draw(mutated(report[section], 2))
    argv = ["launch", "r/report.json#1", "--out", "launch"]
    return Attempt("report-json", tuple(argv), {"r/report.json": _serialized(draw, report, True)})


RAW_TARGETS = {
    "space.yaml": lambda: ["solve", "--model", "7b", "--budget", "8xA100", "--space", "f.yaml", "--out", "out"],
    "model.yaml": lambda: ["estimate", "--model", "f.yaml"],
    "config.json": lambda: ["estimate", "--model", "f.json"],
    "gpu.yaml": lambda: ["estimate", "--model", "7b", "--gpu", "f.yaml"],
    "cases.yaml": lambda: ["validate", "memory", "f.yaml"],
    "measured.csv": lambda: ["validate", "throughput", "f.csv"],
    "report.json": lambda: ["launch", "f.json", "--out", "launch"],
}
RAW_BODIES = [
    b"\xff\xfe\x00",
    b"tp: [1]\nx: [\xff]\n",
    b"[" * 100_000 + b"]" * 100_000,
    b"{" * 50_000,
    b"a: " + b"[" * 2000 + b"]" * 2000,
    b"x: " + b"9" * 5000,
    b'{"x": ' + b"9" * 5000 + b"}",
    b"a: &a [*a]\n",
    b"a: &a [1]\nb: [*a, *a, *a]\n",
    b"",
    b"null",
    b"- 1\n- 2\n",
    b"\x00\x00\x00",
    b"7: [1]\n",
    b"? [1, 2]\n: 3\n",
    b"x: !!python/object:os.system ls\n",
    b"NaN",
    b'{"model_type": NaN}',
]


@st.composite
def raw_files(draw) -> Attempt:
    kind = draw(st.sampled_from(sorted(RAW_TARGETS)))
    body = draw(st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64)))
    argv = RAW_TARGETS[kind]()
    name = next(a for a in argv if a.startswith("f."))
    return Attempt("raw-bytes", tuple(argv), {name: body})


CATEGORIES = {
    "estimate-flags": estimate_flags,
    "solve-flags": solve_flags,
    "launch-ref": launch_refs,
    "space-yaml": space_files,
    "model-yaml": model_files,
    "config-json": config_files,
    "gpu-yaml": gpu_files,
    "cases-yaml": case_files,
    "measured-csv": measured_csvs,
    "report-json": report_files,
    "raw-bytes": raw_files,
}
"""Every command and input kind the fuzz covers: name -> strategy of Attempts."""


# -- the promise ------------------------------------------------------------------------------------------

NEGATIVE_OK = ("headroom", "error_pct", "under_prediction", "spearman")
"""JSON keys whose values may be negative by definition (a plan over capacity, a prediction below)."""
_NONFINITE_TEXT = re.compile(r"(?<![A-Za-z])(nan|inf|infinity)(?![A-Za-z])", re.IGNORECASE)


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in JSON output")


def _may_be_negative(path: str) -> bool:
    return any(key in path for key in NEGATIVE_OK)


def walk_json(data, where: str = "") -> str | None:
    """The first NaN, infinity or negative quantity in parsed JSON, described; None if there is none."""
    stack = [(data, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            return f"non-finite {node} at {path}"
        elif isinstance(node, int | float) and not isinstance(node, bool) and node < 0 and not _may_be_negative(path):
            return f"negative {node} at {path}"
    return None


def _check_json_text(text: str, where: str) -> str | None:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return f"{where}: not JSON or non-finite ({str(exc)[:80]})"
    problem = walk_json(data)
    return f"{where}: {problem}" if problem else None


def _check_text(text: str, where: str) -> str | None:
    match = _NONFINITE_TEXT.search(text)
    return (
        f"{where}: {match.group()!r} in output near {text[max(0, match.start() - 60) : match.end() + 20]!r}"
        if match
        else None
    )


def _check_outputs(result, argv: tuple[str, ...], folder: Path, inputs: set[Path]) -> str | None:
    if "--format" in argv and argv[argv.index("--format") + 1] == "json" and result.exit_code == 0:
        problem = _check_json_text(result.stdout, "stdout")
    elif result.exit_code == 0 and argv[0] not in ("models", "gpus"):
        problem = _check_text(result.stdout, "stdout")
    else:
        problem = None
    if problem:
        return problem
    for path in sorted(folder.rglob("*")):
        if path in inputs or not path.is_file() or path.suffix not in (".json", ".md", ".csv", ".sh", ".yaml"):
            continue
        if path.suffix == ".json":
            problem = _check_json_text(path.read_text(), str(path.relative_to(folder)))
        else:
            problem = _check_text(path.read_text(), str(path.relative_to(folder)))
        if problem:
            return problem
    return None


def check(attempt: Attempt) -> tuple[int, str | None]:
    """Run one attempt in a fresh folder: (exit code, what broke the promise or None)."""
    result, problem = _run_and_check(attempt)
    return result.exit_code, problem


def _run_and_check(attempt: Attempt):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, body in attempt.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        inputs = {folder / name for name in attempt.files}
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            result = CliRunner().invoke(main, list(attempt.argv))
        finally:
            os.chdir(cwd)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            exc = result.exception
            return result, f"traceback: {type(exc).__name__}: {str(exc)[:160]}"
        if result.exit_code not in (0, 2, 3):
            return result, f"exit code {result.exit_code}: {result.output[-200:]!r}"
        if result.exit_code == 2:
            lines = result.stderr.splitlines()
            if len(lines) != 1 or not lines[0].startswith("error: "):
                return result, f"error is not one line: {result.stderr[:300]!r}"
            if any(p.name.startswith(".") for p in folder.rglob("*") if p not in inputs):
                return result, "a hidden staging folder was left behind"
            return result, None
        if result.stderr.strip() and result.exit_code == 0:
            return result, f"stderr on success: {result.stderr[:200]!r}"
        if result.exit_code == 3 and len(result.stderr.splitlines()) != 1:
            return result, f"exit 3 error is not one line: {result.stderr[:300]!r}"
        return result, _check_outputs(result, attempt.argv, folder, inputs)
