"""The `planner` command line: parses flags, calls the library, prints. No logic of its own."""

import sys
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from planner import __version__, api, progress
from planner.catalog import list_gpus, list_models
from planner.errors import PlanError, PlannerError
from planner.inputs import one_line
from planner.memory import DEFAULT_SAFETY_MARGIN
from planner.plan import (
    CHECKPOINTING,
    ENGINES,
    FP8_RECIPES,
    LORA_TARGETS,
    LOSSES,
    METHODS,
    MOE_DISPATCHERS,
    OFFLOADS,
    OPTIMIZERS,
    PP_SCHEDULES,
    PRECISIONS,
)
from planner.report.estimate import render_json, render_table
from planner.search.solve import OBJECTIVES, SolveRequest
from planner.units import parse_count

# The validate commands import their renderers and validators themselves, so that `planner solve` does not
# load the validation machinery at start-up.


def _fail(message: str, exit_code: int) -> NoReturn:
    """The one place errors reach the user: one line on stderr (control characters escaped), then exit."""
    click.echo(f"error: {one_line(message, 2000)}", err=True)
    sys.exit(exit_code)


class _PlannerGroup(click.Group):
    """Turns every PlannerError into one line on stderr and its exit code (2, or 3 for no feasible plan),
    and click's own usage errors (bad flag values, unknown options) into one line and exit 2 as well."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            super().main(*args, standalone_mode=False, **kwargs)
        except PlannerError as exc:
            _fail(exc.message, exc.exit_code)
        except click.ClickException as exc:
            path = exc.ctx.command_path.split()[1:] if isinstance(exc, click.UsageError) and exc.ctx else []
            command = " ".join(["planner", *path])
            _fail(f"{exc.format_message()} (see `{command} --help`)", 2)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(0)


@click.group(cls=_PlannerGroup)
@click.version_option(__version__, prog_name="planner")
def main() -> None:
    """Plan LLM training jobs: which layouts fit in GPU memory, and what they cost."""


_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Human table or one JSON object.",
)


_NETWORK_HELP = (
    "Your cluster's network between nodes, GB/s per GPU one way (default: the catalog node's; "
    "e.g. 25 for 8 x 200 Gb/s InfiniBand per 8-GPU node, 50 for 8 x 400 Gb/s)."
)


def _flash_attention_version_option(default: str | None):
    """`--flash-attention-version 1|2|3` as an int; estimate defaults to 2, solve to the search space's."""
    return click.option(
        "--flash-attention-version",
        type=click.Choice(["1", "2", "3"]),
        callback=lambda ctx, param, value: None if value is None else int(value),
        default=default,
        show_default=default is not None,
        help="FlashAttention generation your stack runs, for its speed: 1 (FlashAttention-1, Triton, xformers), "
        "2 (FlashAttention-2, PyTorch SDPA), 3 (FlashAttention-3 or cuDNN attention, Hopper only)."
        + ("" if default is not None else " Default: the search space's (2)."),
    )


def _method_options(solve: bool):
    """--method and the LoRA/freeze settings, shared by estimate and solve."""
    methods = (*METHODS, "any") if solve else METHODS

    def decorate(command):
        for option in reversed(
            (
                click.option(
                    "--method",
                    type=click.Choice(methods),
                    default=None if solve else "full",
                    show_default=not solve,
                    help="What trains: full, lora (PEFT adapters on a bf16 base), qlora (adapters on an NF4 base), "
                    "freeze (the last --trainable-layers blocks)"
                    + ("; any: the best plan of each method. Default: the search space's (full)." if solve else "."),
                ),
                click.option("--lora-rank", type=int, default=16, show_default=True, help="LoRA rank r."),
                click.option(
                    "--lora-targets",
                    type=click.Choice(LORA_TARGETS),
                    default="all-linear",
                    show_default=True,
                    help="Linears with adapters: attention (q, k, v, o) or all-linear (also the MLP).",
                ),
                click.option("--lora-dropout", type=float, default=0.0, show_default=True, help="PEFT lora_dropout."),
                click.option(
                    "--trainable-layers",
                    type=int,
                    default=None,
                    help="Blocks that train under --method freeze (the last ones; default 2, as LLaMA-Factory).",
                ),
            )
        ):
            command = option(command)
        return command

    return decorate


@main.command()
@click.option(
    "--model",
    required=True,
    help="Catalog name or alias (7b, 13b, 70b = Llama-2), model YAML, or a Hugging Face config.json.",
)
@click.option("--gpu", default="A100-80GB", show_default=True, help="GPU name from the hardware catalog.")
@click.option("--gpu-memory-gib", type=float, default=None, help="Override the GPU's memory capacity.")
@click.option("--network-gbps-per-gpu", type=float, default=None, help=_NETWORK_HELP)
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs the job uses.")
@click.option("--gpus-per-node", type=int, default=None, help="Default: the GPU's catalog node size.")
@click.option("--tp", type=int, default=1, show_default=True, help="Tensor-parallel degree.")
@click.option("--pp", type=int, default=1, show_default=True, help="Pipeline-parallel stages (1F1B).")
@click.option("--cp", type=int, default=1, show_default=True, help="Context-parallel degree.")
@click.option(
    "--zero",
    type=click.IntRange(0, 3),
    default=0,
    show_default=True,
    help="ZeRO stage (FSDP: 2 = SHARD_GRAD_OP, 3 = FULL_SHARD, 0 = DDP).",
)
@click.option("--micro-batch", type=int, default=1, show_default=True, help="Sequences per GPU per pass.")
@click.option(
    "--global-batch",
    type=int,
    default=None,
    help="Sequences per optimizer step (default: micro-batch x dp, i.e. no accumulation).",
)
@click.option("--seq-len", type=int, default=2048, show_default=True, help="Tokens per sequence.")
@click.option("--checkpointing", type=click.Choice(CHECKPOINTING), default="none", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="bf16", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True)
@click.option("--offload", type=click.Choice(OFFLOADS), default="none", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="deepspeed", show_default=True)
@click.option("--flash-attention/--no-flash-attention", default=True, show_default=True)
@_flash_attention_version_option(default="2")
@click.option("--loss", type=click.Choice(LOSSES), default="standard", show_default=True)
@click.option(
    "--sequence-parallel/--no-sequence-parallel", default=None, help="Default: on with --tp > 1 for Megatron and FSDP."
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=False,
    show_default=True,
    help="torch.compile the blocks (FSDP/DeepSpeed).",
)
@click.option(
    "--pp-schedule",
    type=click.Choice(PP_SCHEDULES),
    default="1f1b",
    show_default=True,
    help="Pipeline schedule; interleaved needs --virtual-stages 2 or more.",
)
@click.option("--virtual-stages", type=int, default=1, show_default=True, help="Model chunks per pipeline rank.")
@click.option(
    "--grad-reduce-bf16/--no-grad-reduce-bf16",
    default=None,
    help="Reduce gradients in bf16 (Megatron --grad-reduce-in-bf16). Default: the engine's (fp32 for "
    "Megatron and FSDP).",
)
@click.option(
    "--overlap-grad-reduce/--no-overlap-grad-reduce",
    default=None,
    help="Overlap the gradient reduction with backward (Megatron; DeepSpeed overlap_comm). Default: the engine's.",
)
@click.option(
    "--overlap-param-gather/--no-overlap-param-gather",
    default=None,
    help="Overlap the distributed optimizer's parameter gather with forward (Megatron ZeRO-1). Default: on.",
)
@click.option(
    "--tp-comm-overlap/--no-tp-comm-overlap",
    default=False,
    show_default=True,
    help="Overlap tensor-parallel collectives with the GEMMs (Megatron/Transformer Engine userbuffers; tp > 1).",
)
@click.option(
    "--fp8-param-gather/--no-fp8-param-gather",
    default=False,
    show_default=True,
    help="Keep the linear weights in fp8 and gather them in fp8 (Megatron; --precision fp8, --zero 1).",
)
@click.option(
    "--checkpointing-every",
    type=int,
    default=1,
    show_default=True,
    help="With --checkpointing full: checkpoint every N-th block only.",
)
@click.option(
    "--fsdp-version",
    type=click.Choice(["1", "2"]),
    callback=lambda ctx, param, value: int(value),
    default="2",
    show_default=True,
    help="PyTorch FSDP generation for --engine fsdp (1: FlatParameter, Accelerate/Trainer's default).",
)
@click.option(
    "--fp8-recipe",
    type=click.Choice(FP8_RECIPES),
    default="tensorwise",
    show_default=True,
    help="fp8 scaling with --precision fp8 (mxfp8: Blackwell only).",
)
@click.option(
    "--ep", type=int, default=1, show_default=True, help="Expert-parallel degree (MoE models; Megatron or FSDP)."
)
@click.option(
    "--etp", type=int, default=None, help="Expert-tensor-parallel degree (MoE models; default or 0: equal to --tp)."
)
@click.option(
    "--moe-capacity-factor",
    type=float,
    default=None,
    help="Expert capacity as a multiple of the even share; tokens beyond it are dropped (Megatron). Default: dropless.",
)
@click.option(
    "--moe-dispatcher",
    type=click.Choice(MOE_DISPATCHERS),
    default="alltoall",
    show_default=True,
    help="How routed tokens reach their experts (Megatron --moe-token-dispatcher-type; flex: DeepEP/HybridEP).",
)
@click.option(
    "--recompute-modules",
    default="",
    help="Megatron's fine-grained recomputation, comma-separated: layernorm, moe_act, mla_up_proj.",
)
@click.option(
    "--moe-ep-overlap/--no-moe-ep-overlap",
    default=False,
    help="Hide the EP all-to-all behind an adjacent micro-batch (Megatron --overlap-moe-expert-parallel-comm).",
)
@click.option(
    "--mtp-layers",
    type=int,
    default=None,
    help="Multi-token-prediction depths to train (DeepSeek-V3: 0 or 1; Megatron --mtp-num-layers). "
    "Default: the model's under Megatron, 0 elsewhere.",
)
@click.option(
    "--first-stage-layers",
    type=int,
    default=None,
    help="Blocks on the first pipeline rank, with --last-stage-layers (Megatron's uneven pipeline). Default: even.",
)
@click.option(
    "--last-stage-layers",
    type=int,
    default=None,
    help="Blocks on the last pipeline rank (room for the loss and MTP depths there).",
)
@click.option(
    "--safety-margin",
    type=click.FloatRange(0, 0.5),
    default=DEFAULT_SAFETY_MARGIN,
    show_default=True,
    help="Fraction of GPU memory to keep free.",
)
@click.option("--tokens", default=None, help="Total training tokens (e.g. 1e9, 1B, 500M) for hours and dollars.")
@click.option("--price-per-gpu-hour", type=float, default=None, help="Override the catalog's on-demand price (USD).")
@_method_options(solve=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "html"]),
    default="table",
    show_default=True,
    help="Human table, one JSON object, or a self-contained HTML page with the memory chart.",
)
def estimate(
    fmt: str, safety_margin: float, compile_: bool, tokens: str | None, price_per_gpu_hour: float | None, **flags
) -> None:
    """Memory, speed and cost of one training plan."""
    total = parse_count(tokens, "--tokens") if tokens is not None else None
    result = api.estimate(
        safety_margin=safety_margin, tokens=total, price_per_gpu_hour=price_per_gpu_hour, compile=compile_, **flags
    )
    if fmt == "html":
        from planner.report.html import render_estimate_html

        click.echo(render_estimate_html(result), nl=False)
        return
    click.echo(
        render_json(result) if fmt == "json" else render_table(result, defaults=_estimate_defaults(result)), nl=False
    )


def _estimate_defaults(result) -> tuple[str, ...]:
    """The estimate settings left at a default that `planner solve` does not share, so that a plan copied from a
    solve by hand says what it is missing."""
    ctx = click.get_current_context()
    plan = result.plan
    defaulted = {
        name
        for name in ("seq_len", "engine", "global_batch")
        if ctx.get_parameter_source(name) == ParameterSource.DEFAULT
    }
    lines = []
    if "seq_len" in defaulted:
        lines.append(f"--seq-len {plan.seq_len} (solve: {SolveRequest.__dataclass_fields__['seq_len'].default})")
    if "engine" in defaulted:
        lines.append(f"--engine {plan.engine} (solve searches the engines)")
    if "global_batch" in defaulted:
        lines.append(
            f"--global-batch {plan.global_batch} = micro-batch x dp, no accumulation (solve: about 1M tokens a step)"
        )
    return tuple(lines)


@main.command()
@click.option("--model", required=True, help="Catalog name or alias, model YAML, or Hugging Face config.json.")
@click.option(
    "--budget",
    default=None,
    help="GPUs you can get: 16xA100, 2x8xH100 (nodes x GPUs), 64xH100-80GB; several options to choose "
    "between: 16xA100,8xH100,4xH200.",
)
@click.option(
    "--gpu-types",
    default=None,
    help="Choose the GPU type: 'any' (every priced type of the catalog) or a list (A100,H100,B200), "
    "each with up to --max-gpus GPUs. Instead of --budget.",
)
@click.option("--max-gpus", type=int, default=None, help="Most GPUs per type with --gpu-types.")
@click.option("--seq-len", type=int, default=4096, show_default=True, help="Tokens per sequence.")
@click.option("--global-batch", type=int, default=None, help="Sequences per optimizer step.")
@click.option("--global-batch-tokens", default=None, help="Tokens per optimizer step (default 1M = 2^20).")
@click.option("--tokens", default=None, help="Total training tokens (e.g. 10B) for hours and dollars.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="throughput", show_default=True)
@click.option("--max-cost", type=float, default=None, help="Largest total cost in USD (needs --tokens).")
@click.option("--max-hours", type=float, default=None, help="Longest run in hours (needs --tokens).")
@click.option("--top", type=int, default=10, show_default=True, help="Plans shown in the table.")
@click.option(
    "--space",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Search space YAML (default: search_spaces/default.yaml).",
)
@click.option(
    "--safety-margin",
    type=click.FloatRange(0, 0.5),
    default=DEFAULT_SAFETY_MARGIN,
    show_default=True,
    help="Fraction of GPU memory every plan must leave free.",
)
@click.option("--price-per-gpu-hour", type=float, default=None, help="Override the catalog's on-demand price (USD).")
@click.option("--network-gbps-per-gpu", type=float, default=None, help=_NETWORK_HELP)
@click.option("--tp", type=int, default=None, help="Pin the tensor-parallel degree.")
@click.option("--pp", type=int, default=None, help="Pin the pipeline-parallel degree.")
@click.option("--cp", type=int, default=None, help="Pin the context-parallel degree.")
@click.option("--zero", type=click.IntRange(0, 3), default=None, help="Pin the ZeRO stage.")
@click.option("--micro-batch", type=int, default=None, help="Pin the micro-batch.")
@click.option("--checkpointing", type=click.Choice(CHECKPOINTING), default=None)
@click.option("--precision", type=click.Choice(PRECISIONS), default=None)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
@click.option("--offload", type=click.Choice(OFFLOADS), default=None)
@click.option("--engine", type=click.Choice(ENGINES), default=None)
@click.option("--flash-attention/--no-flash-attention", default=None)
@_flash_attention_version_option(default=None)
@click.option("--loss", type=click.Choice(LOSSES), default=None)
@click.option("--compile/--no-compile", "compile_", default=None)
@click.option("--pp-schedule", type=click.Choice(PP_SCHEDULES), default=None, help="Pin the pipeline schedule.")
@click.option("--fp8-recipe", type=click.Choice(FP8_RECIPES), default=None, help="Pin the fp8 scaling recipe.")
@click.option(
    "--tp-comm-overlap/--no-tp-comm-overlap",
    default=None,
    help="Pin Megatron's TP communication overlap (default: as the search space says).",
)
@click.option(
    "--virtual-stages", type=int, default=None, help="Pin the interleaved schedule's chunks per rank (implies it)."
)
@click.option("--ep", type=int, default=None, help="Pin the expert-parallel degree (MoE models).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Report folder (default: reports/<model>-<budget>-<objective>).",
)
@click.option(
    "--emit",
    default=None,
    help="Also write launch configs for the top plan into the report's launch-1/: "
    "deepspeed,accelerate,trainer,torchrun,megatron,torchtitan or all.",
)
@_method_options(solve=True)
@_FORMAT
def solve(
    model: str,
    budget: str | None,
    gpu_types: str | None,
    max_gpus: int | None,
    seq_len: int,
    global_batch: int | None,
    global_batch_tokens: str | None,
    tokens: str | None,
    objective: str,
    max_cost: float | None,
    max_hours: float | None,
    top: int,
    space: Path | None,
    safety_margin: float,
    price_per_gpu_hour: float | None,
    network_gbps_per_gpu: float | None,
    compile_: bool | None,
    out: Path | None,
    emit: str | None,
    fmt: str,
    method: str | None,
    lora_rank: int,
    lora_targets: str,
    lora_dropout: float,
    trainable_layers: int | None,
    **pins,
) -> None:
    """Search the plans that fit and rank them by throughput or cost."""
    from planner.search.run import run_solve

    methods = METHODS if method == "any" else method
    pins = {k: v for k, v in {**pins, "compile": compile_, "method": methods}.items() if v is not None}
    if budget is None and gpu_types is None:
        raise PlanError("solve needs --budget (e.g. 16xA100) or --gpu-types any --max-gpus N", "add one of them")
    if pins.get("virtual_stages", 1) > 1 and "pp_schedule" not in pins:
        pins["pp_schedule"] = "interleaved"
    request = SolveRequest(
        model=model,
        budget=budget or "",
        gpu_types=gpu_types,
        max_gpus=max_gpus,
        seq_len=seq_len,
        global_batch=global_batch,
        global_batch_tokens=None
        if global_batch_tokens is None
        else parse_count(global_batch_tokens, "--global-batch-tokens"),
        tokens=parse_count(tokens, "--tokens") if tokens is not None else None,
        objective=objective,
        max_cost=max_cost,
        max_hours=max_hours,
        top=top,
        space=space,
        safety_margin=safety_margin,
        price_per_gpu_hour=price_per_gpu_hour,
        network_gbps_per_gpu=network_gbps_per_gpu,
        pins=pins,
        method_settings={
            "lora_rank": lora_rank,
            "lora_targets": lora_targets,
            "lora_dropout": lora_dropout,
            "trainable_layers": trainable_layers,
        },
    )
    with progress.display(progress.wanted(fmt)):
        text, error = run_solve(request, out, fmt, emit)
    click.echo(text, nl=False)
    if error is not None:
        raise error


@main.command()
@click.argument("plan")
@click.option("--rank", type=int, default=None, help="Rank of the plan in the report (default 1, or PLAN's #N).")
@click.option(
    "--targets",
    default="all",
    show_default=True,
    help="Configs to write: deepspeed,accelerate,trainer,torchrun,megatron,torchtitan or all.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write (default: launch-<rank>/ beside the report).",
)
def launch(plan: str, rank: int | None, targets: str, out: Path | None) -> None:
    """Write launch configs for a plan of a solve report: PLAN is reports/<name>/report.json#<rank>."""
    from planner.launch.run import run_launch

    click.echo(run_launch(plan, rank, targets, out), nl=False)


@main.group()
def calibrate() -> None:
    """Calibrate the models against real runs (needs the calibrate extra: torch, transformers)."""


@calibrate.command("measure")
@click.option(
    "--grid",
    type=click.Choice(["default", "tiny"]),
    default="default",
    show_default=True,
    help="default: Llama-3.2-1B/3B on one GPU (a few minutes on an H100); tiny: a 2-layer model (CPU, seconds).",
)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="Optimizer steps per point (2 are warm-up).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CSV to write (default: calibration/measured/<gpu>-<date>.csv).",
)
@click.option("--max-minutes", type=float, default=7.5, show_default=True, help="Stop starting new points after this.")
def calibrate_measure(grid: str, device: str, steps: int, out: Path | None, max_minutes: float) -> None:
    """Run real training steps over a grid of one-device plans and record memory and step time (CSV)."""
    from planner.calibrate.measure import measure, summary

    path, rows = measure(grid, device, steps, out, max_minutes, sys.stderr.isatty())
    click.echo(summary(path, rows), nl=False)


@calibrate.command("trace")
@click.option(
    "--models",
    default="llama-2-7b,llama-3.1-8b,mistral-7b,qwen2.5-7b",
    show_default=True,
    help="Catalog models (comma-separated); one calibration file per model family.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("calibration/traced"),
    show_default=True,
    help="Folder for <family>.yaml.",
)
def calibrate_trace(models: str, out: Path) -> None:
    """Trace the real model code on fake tensors (CPU) and write the activation constants per family."""
    from planner.calibrate.trace import trace

    with progress.display(progress.wanted()):
        written = trace(tuple(m.strip() for m in models.split(",") if m.strip()), out)
    for path in written:
        click.echo(f"wrote {path}")


@main.group()
def validate() -> None:
    """Compare the models with measured runs."""


@validate.command("memory")
@click.argument("cases", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@_FORMAT
def validate_memory_cmd(cases: tuple[Path, ...], fmt: str) -> None:
    """Predicted vs measured peak memory for every case in the CASES files (YAML, or calibrate measure CSVs)."""
    from planner.report.validation import render_validation_json, render_validation_table
    from planner.validate.memory import load_memory_cases, validate_memory

    with progress.display(progress.wanted(fmt)):
        summary = validate_memory([c for path in cases for c in load_memory_cases(path)])
    click.echo(render_validation_json(summary) if fmt == "json" else render_validation_table(summary), nl=False)
    if fmt != "json":
        _echo_pending(cases)


@validate.command("throughput")
@click.argument("cases", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@_FORMAT
def validate_throughput_cmd(cases: tuple[Path, ...], fmt: str) -> None:
    """Predicted vs measured tokens/s per GPU for every case in the CASES files (YAML, or calibrate measure CSVs),
    e.g. tests/data/throughput_cases.yaml tests/data/external/throughput_cases.yaml."""
    from planner.report.validation import render_throughput_json, render_throughput_table
    from planner.validate.throughput import load_throughput_cases, validate_throughput

    with progress.display(progress.wanted(fmt)):
        summary = validate_throughput([c for path in cases for c in load_throughput_cases(path)])
    click.echo(render_throughput_json(summary) if fmt == "json" else render_throughput_table(summary), nl=False)
    if fmt != "json":
        _echo_pending(cases)


def _echo_pending(paths: tuple[Path, ...]) -> None:
    """One line per cases file with pending cases: how many, and the plan fields or conditions they wait for."""
    from planner.validate.cases import pending_fields

    for path in paths:
        if path.suffix not in (".yaml", ".yml"):
            continue
        waiting = [missing for missing in pending_fields(path).values() if missing]
        if waiting:
            fields = sorted({m for missing in waiting for m in missing if " " not in m})
            others = sum(any(" " in m for m in missing) for missing in waiting)
            reasons = [f"plan fields {', '.join(fields)}"] if fields else []
            reasons += [f"a stated condition ({others} cases, see their waits_for)"] if others else []
            click.echo(f"not scored: {len(waiting)} pending cases in {path} wait for {' and '.join(reasons)}")


@main.command()
@click.option("--search", "text", default=None, help="Only models whose name, alias or family contains TEXT.")
def models(text: str | None) -> None:
    """List the model catalog."""
    from planner.architecture import total_params
    from planner.catalog import search_models

    found = list_models() if text is None else search_models(text)
    if not found:
        raise PlanError(f"no catalog model matches {text!r}", "see `planner models` for the whole catalog")
    for spec in found:
        aliases = f"  (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
        click.echo(f"{spec.name:18s} {total_params(spec.architecture) / 1e9:7.2f}B{aliases}")


@main.command()
def gpus() -> None:
    """List the GPU catalog."""
    for gpu in list_gpus():
        price = f"${gpu.price.usd_per_gpu_hour:.2f}/GPU-h" if gpu.price.usd_per_gpu_hour is not None else "no price"
        if gpu.price.converted:
            price += f" ({gpu.price.listed_per_gpu_hour:.2f} {gpu.price.currency} converted)"
        bf16 = gpu.peak_tflops("bf16") or gpu.peak_tflops("fp16")
        derated = f"  (derated to {gpu.power_limit_w or gpu.tdp_w:.0f} W)" if gpu.peak_derated else ""
        click.echo(f"{gpu.name:12s} {gpu.memory_gib:7.2f} GiB  {bf16:7.1f} TFLOP/s (bf16/fp16)  {price}{derated}")


if __name__ == "__main__":
    main()
