"""`planner calibrate measure`: real training steps on this machine's GPU (or CPU), written to a CSV.

Each grid point builds a catalog model with transformers (random weights from its numbers), lays it out
as the plan says on one device (engine `fsdp`: ZeRO-0 = fp32 weights under torch.autocast, ZeRO-3 = FSDP2
`fully_shard` of world size 1 with a bf16 MixedPrecisionPolicy; `pure-bf16` = bf16 weights and AdamW
states), and runs `steps` optimizer steps on random tokens. From step 3 on it records the peak of
`torch.cuda.max_memory_allocated` / `max_memory_reserved`, the memory nvidia-smi reports in use, and the
mean step time; a point that runs out of memory is recorded as `oom`. The rows carry GPU, driver,
torch / transformers / CUDA versions and the date, so they can be committed as test data and fed to
`planner validate memory|throughput FILE.csv`.

The default grid (Llama-3.2-1B and 3B, 2k-4k tokens) takes a few minutes on one H100, within one prepared
call of a lent GPU. On a CPU the `tiny` grid runs examples/tiny-llama.yaml in seconds (timings only, no
GPU memory columns); CI runs it. Needs torch and transformers only, not the search's ortools, so a GPU
image with PyTorch can run it straight from the source tree:

    PYTHONPATH=src python3 -m planner.calibrate.measure --grid default --out calibration/measured/h100.csv
"""

import argparse
import contextlib
import csv
import gc
import io
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

from planner.catalog import load_gpu, load_model
from planner.catalog.paths import data_dirs
from planner.errors import PlannerError
from planner.files import check_output_file
from planner.inputs import one_line, optional, quantity, whole_number

GIB = 2**30
WARMUP_STEPS = 2
"""Steps before the measured ones: the first builds the optimizer states, the second the allocator's
steady-state pool (the issue's 'step >= 3')."""


@dataclass(frozen=True)
class MeasurePoint:
    """One measured plan on one device; keys follow `planner estimate` flags."""

    model: str
    zero: int
    """0: fp32 weights under autocast (or bf16 weights with pure-bf16); 3: FSDP2 fully_shard, world size 1."""
    precision: str
    """`bf16` (mixed) or `pure-bf16`."""
    checkpointing: str
    """`none` or `full` (transformers' gradient checkpointing, whole decoder layers)."""
    micro_batch: int
    seq_len: int
    optimizer: str = "adamw"
    engine: str = "fsdp"


def _grid(model: str, rows: list[tuple]) -> list[MeasurePoint]:
    return [MeasurePoint(model, *row) for row in rows]


GRIDS: dict[str, list[MeasurePoint]] = {
    # One H100-80GB, about 4 minutes: the activation slope (micro-batch and sequence), checkpointing, the
    # autocast weight copies (ZeRO-0) against FSDP2's gathered parameters (ZeRO-3), pure bf16, and points
    # near the capacity that test the OOM boundary.
    "default": _grid(
        "llama-3.2-1b",
        [
            (0, "bf16", "none", 1, 2048),
            (0, "bf16", "none", 2, 2048),
            (0, "bf16", "none", 4, 2048),
            (0, "bf16", "none", 2, 4096),
            (0, "bf16", "full", 8, 2048),
            (3, "bf16", "none", 1, 2048),
            (3, "bf16", "none", 4, 2048),
            (3, "bf16", "full", 8, 4096),
            (0, "pure-bf16", "none", 4, 2048),
            (0, "pure-bf16", "full", 16, 2048),
        ],
    )
    + _grid(
        "llama-3.2-3b",
        [
            (3, "bf16", "none", 1, 2048),
            (3, "bf16", "none", 2, 2048),
            (3, "bf16", "full", 4, 4096),
            (0, "bf16", "none", 1, 2048),
            (0, "pure-bf16", "none", 2, 2048),
            (0, "pure-bf16", "full", 8, 4096),
        ],
    ),
    # CPU, seconds: the same code paths on a 2-layer model (examples/tiny-llama.yaml).
    "tiny": _grid(
        "tiny-llama",
        [
            (0, "bf16", "none", 2, 64),
            (0, "bf16", "full", 2, 64),
            (3, "bf16", "none", 2, 64),
            (0, "pure-bf16", "none", 2, 64),
        ],
    ),
}

COLUMNS = (
    "date",
    "device",
    "gpu",
    "driver",
    "torch",
    "transformers",
    "cuda",
    "python",
    *(f.name for f in fields(MeasurePoint)),
    "gpus",
    "steps",
    "status",
    "max_allocated_gib",
    "max_reserved_gib",
    "nvidia_smi_used_gib",
    "step_time_s",
    "tokens_per_s",
    "error",
)
"""CSV columns. `device` is what torch reports (or `cpu`), `gpu` the catalog name it matches (empty when
none does); memory columns are empty on a CPU."""


def example_model_ref(name: str) -> str:
    """Catalog name, or the examples/ YAML for the tiny model (which is not a catalog entry)."""
    if name == "tiny-llama":
        for folder in data_dirs("examples"):
            if (folder / "tiny-llama.yaml").is_file():
                return str(folder / "tiny-llama.yaml")
    return name


def environment(device) -> dict[str, str]:
    """Machine and versions recorded with every row."""
    import torch

    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = ""
    info = {
        "date": date.today().isoformat(),
        "device": "cpu",
        "gpu": "",
        "driver": "",
        "torch": torch.__version__,
        "transformers": transformers_version,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        info.update(device=name, driver=_nvidia_smi("driver_version"))
        try:
            info["gpu"] = load_gpu(name).name
        except PlannerError:
            info["gpu"] = ""
    return info


def _nvidia_smi(field: str) -> str:
    index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def _ensure_process_group(device) -> None:
    """FSDP2 needs a process group, even of one rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _build(point: MeasurePoint, device):
    """Model and optimizer laid out as the point says."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    spec = load_model(example_model_ref(point.model))
    pure = point.precision == "pure-bf16"
    from planner.calibrate.hf_model import build_hf_model, enable_full_checkpointing

    model = build_hf_model(spec, dtype=torch.bfloat16 if pure else torch.float32, device=device)
    if point.checkpointing == "full":
        enable_full_checkpointing(model)
    if point.zero == 3:
        _ensure_process_group(device)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    elif point.zero != 0:
        raise PlannerError(f"measure runs ZeRO 0 or 3 on one device, got {point.zero}", "fix the grid")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    return model, optimizer


def _step(model, optimizer, tokens, autocast: bool, device) -> None:
    import torch

    context = (
        torch.autocast(device.type, dtype=torch.bfloat16) if autocast else torch.autocast(device.type, enabled=False)
    )
    with context:
        loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_point(point: MeasurePoint, steps: int, device) -> dict:
    """Run one point; returns its measured columns (status `ok`, `oom` or `error`)."""
    import torch

    cuda = device.type == "cuda"
    result: dict = {"gpus": 1, "steps": steps, "status": "ok", "error": ""}
    model = optimizer = None
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model, optimizer = _build(point, device)
        vocab = model.config.vocab_size
        generator = torch.Generator(device="cpu").manual_seed(0)
        autocast = point.zero == 0 and point.precision == "bf16"
        times = []
        for step in range(steps):
            tokens = torch.randint(vocab, (point.micro_batch, point.seq_len), generator=generator).to(device)
            if step == WARMUP_STEPS and cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            _step(model, optimizer, tokens, autocast, device)
            if cuda:
                torch.cuda.synchronize(device)
            if step >= WARMUP_STEPS:
                times.append(time.perf_counter() - start)
        step_time = sum(times) / len(times)
        result.update(
            step_time_s=round(step_time, 5), tokens_per_s=round(point.micro_batch * point.seq_len / step_time, 1)
        )
        if cuda:
            result.update(
                max_allocated_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 3),
                max_reserved_gib=round(torch.cuda.max_memory_reserved(device) / GIB, 3),
            )
            used = _nvidia_smi("memory.used")
            result["nvidia_smi_used_gib"] = round(float(used) / 1024, 3) if used else ""
    except torch.OutOfMemoryError as error:
        result.update(status="oom", error=str(error).splitlines()[0][:200])
    except PlannerError:
        raise
    except Exception as error:  # a failed point is recorded, the grid goes on
        result.update(status="error", error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    finally:
        del model, optimizer
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result


def run_grid(
    points: list[MeasurePoint], steps: int, device, max_minutes: float | None = None, progress: bool = True
) -> list[dict]:
    """Measure every point (in order) until done or out of time; rows have every column of COLUMNS."""
    from rich.progress import Progress

    if steps <= WARMUP_STEPS:
        raise PlannerError(f"--steps must exceed the {WARMUP_STEPS} warm-up steps, got {steps}", "use 4 or more")
    env = environment(device)
    rows = []
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("measuring", total=len(points))
        for point in points:
            if deadline is not None and time.monotonic() > deadline:
                break
            bar.update(
                task,
                description=f"{point.model} zero{point.zero} {point.precision} {point.checkpointing} "
                f"mbs{point.micro_batch} s{point.seq_len}",
            )
            measured = measure_point(point, steps, device)
            rows.append({c: "" for c in COLUMNS} | env | asdict(point) | measured)
            bar.advance(task)
            if not progress:  # logs (e.g. a remote GPU call) get one line per point as it finishes
                print(summary_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def render_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_text_atomically(path: Path, text: str) -> Path:
    """Write atomically: the file appears whole or not at all."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)
        raise PlannerError(f"cannot write {one_line(str(path))}: {exc.strerror or exc}", "pick another --out") from None
    return path


def default_output(env: dict[str, str]) -> Path:
    slug = (env["gpu"] or ("cpu" if env["device"] == "cpu" else env["device"])).lower().replace(" ", "-")
    return Path("calibration") / "measured" / f"{slug}-{env['date']}.csv"


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PlannerError("--device cuda but torch sees no GPU", "use --device cpu or run on a GPU machine")
    return torch.device(name)


def measure(grid: str, device_name: str, steps: int, out: Path | None, max_minutes: float | None, progress: bool):
    """The whole command: (path written, rows)."""
    if grid not in GRIDS:
        raise PlannerError(f"unknown grid {grid!r}", f"use one of {', '.join(GRIDS)}")
    if isinstance(steps, int) and steps <= WARMUP_STEPS:
        raise PlannerError(f"--steps must exceed the {WARMUP_STEPS} warm-up steps, got {steps}", "use 4 or more")
    whole_number(steps, "--steps", WARMUP_STEPS + 1, 10_000)
    optional(quantity, max_minutes, "--max-minutes", 0.0, 10_080.0)  # at most a week
    if out is not None:
        check_output_file(out, "--out")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise PlannerError(
            f"planner calibrate needs torch and transformers ({error})", "pip install '.[calibrate]'"
        ) from None
    device = resolve_device(device_name)
    rows = run_grid(GRIDS[grid], steps, device, max_minutes, progress)
    path = write_text_atomically(out or default_output(environment(device)), render_csv(rows))
    return path, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m planner.calibrate.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="default", choices=sorted(GRIDS))
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-minutes", type=float, default=7.5)
    args = parser.parse_args(argv)
    try:
        path, rows = measure(args.grid, args.device, args.steps, args.out, args.max_minutes, sys.stderr.isatty())
    except PlannerError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    print(summary(path, rows), end="")
    return 0


def summary_line(row: dict) -> str:
    memory = ""
    if row["max_allocated_gib"] != "":
        memory = f" allocated {row['max_allocated_gib']} GiB reserved {row['max_reserved_gib']} GiB"
    timing = f" {row['step_time_s']} s/step" if row["step_time_s"] != "" else ""
    error = f" {row['error']}" if row["error"] else ""
    return (
        f"  {row['model']} zero{row['zero']} {row['precision']} {row['checkpointing']} mbs{row['micro_batch']} "
        f"s{row['seq_len']}: {row['status']}{memory}{timing}{error}"
    )


def summary(path: Path, rows: list[dict]) -> str:
    return "\n".join([f"{len(rows)} points measured into {path}", *map(summary_line, rows)]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
