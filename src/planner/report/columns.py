"""The ranking's columns, defined once for the terminal table, report.md and report.html.

Each column names the row field it shows (plans.csv's header and report.md's), a short header (terminal and
report.html) and how its cell reads there.
"""

from collections.abc import Callable
from dataclasses import dataclass

SHORT = {
    "none": "-",
    "selective": "sel",
    "full": "full",
    "optimizer": "opt",
    "optimizer+params": "opt+par",
    "deepspeed": "DeepSpeed",
    "fsdp": "FSDP",
    "megatron": "Megatron",
}


def pp_text(pp: int, virtual_stages: int) -> str:
    """The pipeline degree, with the interleaved schedule's chunks per rank: `4` (1F1B) or `4x5v`."""
    return str(pp) if virtual_stages == 1 else f"{pp}x{virtual_stages}v"


def _number(fmt: str) -> Callable[[object], str]:
    return lambda value: "-" if value is None else format(value, fmt)


@dataclass(frozen=True)
class Column:
    field: str
    """The row's key (see planner.report.solve.rows)."""
    header: str
    """Short header of the terminal table and report.html."""
    text: Callable[[dict], str]
    """The cell's text from the whole row."""
    left: bool = False
    """Text, aligned left (numbers align right)."""


def _field(name: str, fmt: Callable[[object], str] = str) -> Callable[[dict], str]:
    return lambda row: fmt(row[name])


def _short(name: str) -> Callable[[dict], str]:
    return lambda row: SHORT.get(row[name], row[name])


COLUMNS = (
    Column("rank", "#", lambda row: f"{row['rank']}{'*' if row['pareto'] else ''}"),
    Column("gpus", "GPUs", _field("gpus")),
    Column("nodes", "nodes", _field("nodes")),
    Column("dp", "dp", _field("dp")),
    Column("tp", "tp", _field("tp")),
    Column("pp", "pp", lambda row: pp_text(row["pp"], row["virtual_stages"])),
    Column("cp", "cp", _field("cp")),
    Column("ep", "ep", _field("ep")),
    Column("sequence_parallel", "SP", lambda row: "yes" if row["sequence_parallel"] else "-", left=True),
    Column("engine", "engine", _short("engine"), left=True),
    Column("zero", "ZeRO", _field("zero")),
    Column("micro_batch", "mbs", _field("micro_batch")),
    Column("grad_accum", "GA", _field("grad_accum")),
    Column("checkpointing", "ckpt", _short("checkpointing"), left=True),
    Column("precision", "prec", _field("precision"), left=True),
    Column("offload", "offload", _short("offload"), left=True),
    Column("method", "method", _field("method"), left=True),
    Column("required_gib", "needs GiB", _field("required_gib", _number(".2f"))),  # beside the limit, 0.01 GiB shows
    Column("headroom_gib", "headroom", _field("headroom_gib", _number(".2f"))),
    Column("tokens_per_s", "tokens/s", _field("tokens_per_s", _number(",.0f"))),
    Column("mfu", "MFU", _field("mfu", _number(".1%"))),
    Column("step_time_s", "step s", _field("step_time_s", _number(".2f"))),
    Column("hours", "hours", _field("hours", _number(",.1f"))),
    Column("total_usd", "$", _field("total_usd", _number(",.0f"))),
    Column("usd_per_million_tokens", "$/M tok", _field("usd_per_million_tokens", _number(".3f"))),
)
"""Every ranking column in display order; `ranking_columns` drops the method column for a full-only search and
the expert-parallel one for a dense model."""

GPU_TYPE = Column("gpu_type", "GPU type", _field("gpu_type"), left=True)
"""For tables that compare GPU types (planner.report.choice)."""

HEADROOM_NOTE = (
    "needs = what a GPU must hold to run (allocated, the cache the allocator cannot release, CUDA context, NCCL); "
    "headroom = fit limit - needs, GiB; report.json also gives the nvidia-smi peak"
)


def ranking_columns(shows_method: bool, shows_ep: bool = False) -> tuple[Column, ...]:
    return tuple(c for c in COLUMNS if (shows_method or c.field != "method") and (shows_ep or c.field != "ep"))


def columns_for(fields: tuple[str, ...]) -> tuple[Column, ...]:
    """The columns of these row fields, in the order given."""
    by_field = {c.field: c for c in (*COLUMNS, GPU_TYPE)}
    return tuple(by_field[name] for name in fields)
