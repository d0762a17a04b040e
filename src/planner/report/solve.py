"""Render a search result: the terminal table, and the Markdown / JSON / CSV reports (written atomically)."""

import csv
import io
import json
import re

from rich import box
from rich.console import Console
from rich.table import Table

from planner import __version__
from planner.architecture import active_params, parameter_text, total_params
from planner.estimate import Estimate
from planner.memory import TERMS
from planner.report.columns import HEADROOM_NOTE, pp_text, ranking_columns
from planner.report.estimate import TERM_LABELS
from planner.search.candidates import CATEGORIES


def _fmt_usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _short_source(result) -> str:
    price = result.budget.gpu.price
    if result.request.price_per_gpu_hour is not None or result.price_per_gpu_hour is None:
        return result.price_source
    listed = f"{price.instance}; list of {price.date}"
    return f"{listed}; {price.conversion(cite=False)}" if price.converted else listed


def assumptions(result) -> list[str]:
    """The inputs a reader needs to trust the ranking, one line each."""
    r, b, model = result.request, result.budget, result.model
    alias = f" (alias '{model.resolved_from}')" if model.resolved_from else ""
    lines = [
        f"model: {model.name}{alias}, {parameter_text(model.architecture)}",
        f"budget: up to {b.gpus} x {b.gpu.name} ({b.nodes} node(s) of {b.gpus_per_node}); plans may use fewer",
        _network_line(b.gpu),
        "attention: FlashAttention-"
        + "/".join(str(v) for v in result.space.flash_attention_version)
        + " kernels for the speed (--flash-attention-version to change)",
        f"batch: sequences of {r.seq_len} tokens, global batch {result.global_batch} sequences "
        f"({result.global_batch * r.seq_len:,} tokens) per optimizer step",
        f"memory: a plan fits when what it needs per GPU (allocated, the allocator cache it cannot release, "
        f"CUDA context, NCCL) stays under {result.usable_gib:.1f} GiB = "
        f"{b.gpu.memory_gib:.1f} GiB x (1 - safety margin {r.safety_margin:.0%}); offloaded states must fit "
        "the node's host RAM",
        f"objective: {r.objective}" + (f"; run of {r.tokens:,.0f} tokens" if r.tokens else ""),
        f"price: {_fmt_usd(result.price_per_gpu_hour)}/GPU-hour ({_short_source(result)})",
        f"search space: {result.space.source}" + (f" with pins {r.pins}" if r.pins else ""),
    ]
    if r.max_cost is not None:
        lines.append(f"limit: total cost <= ${r.max_cost:,.0f}")
    if r.max_hours is not None:
        lines.append(f"limit: duration <= {r.max_hours:,.1f} hours")
    return lines


def _network_line(gpu) -> str:
    bandwidth = gpu.node.inter_node_bandwidth_gbps_per_gpu
    if bandwidth is None:
        return "network between nodes: not in the catalog (pass --network-gbps-per-gpu for multi-node plans)"
    if gpu.network_overridden:
        return f"network between nodes: {bandwidth:g} GB/s per GPU (--network-gbps-per-gpu)"
    return (
        f"network between nodes: {bandwidth:g} GB/s per GPU as in {gpu.node.example}; "
        "change with --network-gbps-per-gpu"
    )


def _row(rank: int, pareto: bool, est: Estimate) -> dict:
    p, m, perf, cost = est.plan, est.memory, est.performance, est.cost
    return {
        "rank": rank,
        "pareto": pareto,
        "gpu_type": est.gpu.name,
        "gpus": p.gpus,
        "nodes": p.nodes,
        "dp": p.dp,
        "tp": p.tp,
        "pp": p.pp,
        "cp": p.cp,
        "engine": p.engine,
        "zero": p.zero,
        "micro_batch": p.micro_batch,
        "grad_accum": p.grad_accum,
        "checkpointing": p.checkpointing,
        "precision": p.precision,
        "offload": p.offload,
        "optimizer": p.optimizer,
        "loss": p.loss,
        "flash_attention": p.flash_attention,
        "flash_attention_version": p.flash_attention_version,
        "compile": p.compile,
        "pp_schedule": p.pp_schedule,
        "virtual_stages": p.virtual_stages,
        "method": p.method,
        "fp8_recipe": p.fp8_recipe,
        "tp_comm_overlap": p.tp_comm_overlap,
        **({"ep": p.ep} if est.model.architecture.is_moe else {}),
        "sequence_parallel": p.sequence_parallel,
        "peak_gib": round(m.peak_gib, 2),
        "required_gib": round(m.required_gib, 2),
        # to the fit limit from what the plan needs (the fit criterion), so a plan that fits never shows it negative
        "headroom_gib": round(m.headroom_gib, 2),
        "tokens_per_s": round(perf.tokens_per_s, 1),
        "tokens_per_s_per_gpu": round(perf.tokens_per_s_per_gpu, 1),
        "mfu": round(perf.mfu, 4),
        "step_time_s": round(perf.step_time_s, 4),
        "usd_per_hour": None if cost.usd_per_hour is None else round(cost.usd_per_hour, 2),
        "usd_per_million_tokens": None
        if cost.usd_per_million_tokens is None
        else round(cost.usd_per_million_tokens, 4),
        "hours": None if cost.hours is None else round(cost.hours, 3),
        "total_usd": None if cost.total_usd is None else round(cost.total_usd, 2),
    }


def rows(result, estimates: dict[int, Estimate]) -> list[dict]:
    return [
        _row(rank, bool(result.pareto[rank - 1]), estimates[int(index)])
        for rank, index in enumerate(result.feasible, start=1)
    ]


def rejected_lines(result, describe) -> list[str]:
    rej = result.rejections
    lines = [
        f"{rej.space_size:,} combinations in the search space; {rej.structurally_valid:,} structurally valid "
        "(the rest have degrees that do not divide the GPUs, the global batch or the model, or choices the "
        "engine does not support)"
    ]
    if rej.over_memory:
        line = f"{rej.over_memory:,} exceed {result.usable_gib:.1f} usable GiB per GPU"
        if rej.nearest_misses:
            i = rej.nearest_misses[0]
            excess = result.candidates.required_gib[i] - result.usable_gib
            line += f"; smallest excess {excess:.2f} GiB: {describe(i)}"
        lines.append(line)
    if rej.over_host_ram:
        gpu = result.budget.gpu
        if gpu.node.host_ram_gib is None:
            lines.append(
                f"{rej.over_host_ram:,} offload to host RAM, which {gpu.name} has no figure for "
                "(add node.host_ram_gib to its catalog entry)"
            )
        else:
            lines.append(f"{rej.over_host_ram:,} offload more than the node's {gpu.node.host_ram_gib:.0f} GiB host RAM")
    if rej.over_limits:
        lines.append(f"{rej.over_limits:,} fit but break the cost or time limit")
    lines.append(f"{len(result.feasible):,} plans fit")
    return lines


def describe_candidate(result, index: int) -> str:
    c = result.candidates
    cat = dict(
        zip(("engine", "zero", "offload", "checkpointing", "precision"), c.categories[c.group[index]][:5], strict=True)
    )
    virtual = c.categories[c.group[index]][CATEGORIES.index("virtual_stages")]
    ep = c.categories[c.group[index]][CATEGORIES.index("ep")]
    return (
        f"{int(c.gpus[index])} GPUs dp{int(c.dp[index])} tp{int(c.tp[index])} pp{pp_text(int(c.pp[index]), virtual)} "
        f"cp{int(c.cp[index])}{f' ep{ep}' if ep > 1 else ''}, {cat['engine']} ZeRO-{cat['zero']}, "
        f"micro-batch {int(c.micro_batch[index])}, "
        f"checkpointing {cat['checkpointing']}, offload {cat['offload']}, {cat['precision']} "
        f"(needs {c.required_gib[index]:.2f} GiB)"
    )


def render_terminal(result, table_rows: list[dict], advice: list[str], width: int = 190) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    console.print(f"planner solve: {result.model.name} on {result.budget.text}")
    for line in assumptions(result):
        console.print(f"  {line}")
    if table_rows:
        shown = table_rows[: result.request.top]
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        columns = ranking_columns(_shows_method(result), result.model.architecture.is_moe)
        for column in columns:
            table.add_column(column.header, justify="left" if column.left else "right")
        for row in shown:
            table.add_row(*(column.text(row) for column in columns))
        console.print()
        console.print(
            f"Top {len(shown)} of {len(table_rows):,} plans that fit, by {result.request.objective} "
            f"(* = on the throughput-vs-cost Pareto front; SP = sequence parallelism; {HEADROOM_NOTE}"
            + ("; hours and $ need --tokens" if result.request.tokens is None else "")
            + "):"
        )
        console.print(table)
    by_method = method_lines(result, table_rows)
    if by_method:
        console.print("Best plan per fine-tuning method:")
        for line in by_method:
            console.print(f"  {line}")
    console.print("Rejected:")
    for line in rejected_lines(result, lambda i: describe_candidate(result, i)):
        console.print(f"  {line}")
    if not table_rows and result.rejections.nearest_misses:
        console.print("Nearest misses:")
        for i in result.rejections.nearest_misses:
            console.print(f"  {describe_candidate(result, i)}")
        for line in advice or [
            "no single change tried (ZeRO-3, full checkpointing, micro-batch 1, offload, "
            "twice the GPUs) makes the nearest miss fit"
        ]:
            console.print(f"  {line}")
    return out.getvalue()


def _shows_method(result) -> bool:
    """Tables get a method column when the search is not full fine-tuning only."""
    return result.space.method != ("full",)


def method_lines(result, table_rows: list[dict]) -> list[str]:
    """When the search compares fine-tuning methods: the best plan of each (in the ranking's order), and
    which of them is fastest and which cheapest per token. Empty for a one-method search."""
    if len(result.space.method) < 2:
        return []
    best: dict[str, dict] = {}
    for row in table_rows:
        best.setdefault(row["method"], row)
    lines = []
    for method in result.space.method:
        row = best.get(method)
        if row is None:
            lines.append(f"{method}: no plan fits")
            continue
        price = "" if row["usd_per_million_tokens"] is None else f", ${row['usd_per_million_tokens']}/M tokens"
        lines.append(
            f"{method}: #{row['rank']} {row['gpus']} GPU(s), {row['engine']} ZeRO-{row['zero']}, micro-batch "
            f"{row['micro_batch']}, checkpointing {row['checkpointing']}: {row['tokens_per_s']:,.0f} tokens/s, "
            f"needs {row['required_gib']} GiB{price}"
        )
    if best:
        fastest = max(best.values(), key=lambda r: r["tokens_per_s"])
        lines.append(f"fastest: {fastest['method']}")
        priced = [r for r in best.values() if r["usd_per_million_tokens"] is not None]
        if priced:
            cheapest = min(priced, key=lambda r: r["usd_per_million_tokens"])
            lines.append(f"cheapest per token: {cheapest['method']}")
    return lines


def render_markdown(result, table_rows: list[dict], estimates: dict[int, Estimate]) -> str:
    lines = [
        f"# Plan search: {result.model.name} on {result.budget.text}",
        "",
        f"planner {__version__}",
        "",
        "## Assumptions",
        "",
    ]
    lines += [f"- {line}" for line in assumptions(result)]
    by_method = method_lines(result, table_rows)
    if by_method:
        lines += ["", "## Best plan per fine-tuning method", ""] + [f"- {line}" for line in by_method]
    lines += ["", f"## Ranked plans (top {min(result.request.top, len(table_rows))} of {len(table_rows)})", ""]
    columns = ranking_columns(_shows_method(result), result.model.architecture.is_moe)
    headers = ["rank", "pareto", *(c.field for c in columns[1:])]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    for row in table_rows[: result.request.top]:
        lines.append("| " + " | ".join("-" if row[h] is None else str(row[h]) for h in headers) + " |")
    top = list(result.feasible[:3])
    if top:
        lines += ["", "## Memory per GPU of the top plans (GiB)", ""]
        lines.append("| term | " + " | ".join(f"#{r}" for r in range(1, len(top) + 1)) + " |")
        lines.append("|---|" + "---:|" * len(top))
        for term in TERMS:
            values = [estimates[int(i)].memory.breakdown_gib[term] for i in top]
            if any(values):
                lines.append(f"| {TERM_LABELS[term]} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        lines.append(
            "| **peak (nvidia-smi)** | " + " | ".join(f"{estimates[int(i)].memory.peak_gib:.2f}" for i in top) + " |"
        )
        lines.append(
            "| **needs to run** | " + " | ".join(f"{estimates[int(i)].memory.required_gib:.2f}" for i in top) + " |"
        )
        lines.append("| peak phase | " + " | ".join(estimates[int(i)].memory.peak_phase for i in top) + " |")
    lines += ["", "## Rejected plans", ""]
    lines += [f"- {line}" for line in rejected_lines(result, lambda i: describe_candidate(result, i))]
    return "\n".join(lines) + "\n"


def solve_json(result, estimates: dict[int, Estimate]) -> dict:
    r = result.request
    plans = []
    for rank, index in enumerate(result.feasible, start=1):
        est = estimates[int(index)]
        plans.append(
            {
                "rank": rank,
                "pareto": bool(result.pareto[rank - 1]),
                "plan": est.plan.to_dict(),
                "memory": est.memory.to_dict(),
                "performance": est.performance.to_dict(),
                "cost": est.cost.to_dict(),
            }
        )
    rej = result.rejections
    return {
        "planner_version": __version__,
        "inputs": {
            "model": r.model,
            "budget": r.budget,
            "seq_len": r.seq_len,
            "global_batch": result.global_batch,
            "tokens": r.tokens,
            "objective": r.objective,
            "max_cost": r.max_cost,
            "max_hours": r.max_hours,
            "top": r.top,
            "space": result.space.source,
            "pins": r.pins,
            "safety_margin": r.safety_margin,
            "price_per_gpu_hour": result.price_per_gpu_hour,
            "price_source": result.price_source,
            "network_gbps_per_gpu": r.network_gbps_per_gpu,
        },
        "model": {
            "name": result.model.name,
            "resolved_from": result.model.resolved_from,
            "params": total_params(result.model.architecture),
            **({"active_params": active_params(result.model.architecture)} if result.model.architecture.is_moe else {}),
        },
        "gpu": {
            "name": result.budget.gpu.name,
            "memory_gib": result.budget.gpu.memory_gib,
            "usable_gib": round(result.usable_gib, 3),
            "budget_gpus": result.budget.gpus,
            "gpus_per_node": result.budget.gpus_per_node,
        },
        "assumptions": assumptions(result),
        "search": {
            "space_size": rej.space_size,
            "structurally_valid": rej.structurally_valid,
            "feasible": len(result.feasible),
            "solver_status": result.solver.status,
        },
        "rejected": {
            "over_memory": rej.over_memory,
            "over_host_ram": rej.over_host_ram,
            "over_limits": rej.over_limits,
            "nearest_misses": [describe_candidate(result, i) for i in rej.nearest_misses],
        },
        "plans": plans,
    }


def render_csv(table_rows: list[dict]) -> str:
    out = io.StringIO()
    if table_rows:
        writer = csv.DictWriter(out, fieldnames=list(table_rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table_rows)
    return out.getvalue()


def report_name(result) -> str:
    raw = f"{result.model.name}-{result.budget.text}-{result.request.objective}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[-200:]  # a file name holds at most 255 bytes


def render_report_json(result, estimates: dict[int, Estimate]) -> str:
    """report.json's text. Compact separators keep json on its C encoder: a search can list thousands of plans;
    the document is a tree of fresh dicts and lists, so the encoder's cycle check (a fifth of its time) is off."""
    return json.dumps(solve_json(result, estimates), separators=(",", ":"), check_circular=False) + "\n"


def render_all(result, estimates: dict[int, Estimate]) -> tuple[list[dict], dict[str, str]]:
    """(table rows, report files) of a search result."""
    from planner.report.html import render_solve_html

    table_rows = rows(result, estimates)
    files = {
        "report.md": render_markdown(result, table_rows, estimates),
        "report.json": render_report_json(result, estimates),
        "plans.csv": render_csv(table_rows),
        "report.html": render_solve_html(result, table_rows, estimates),
    }
    return table_rows, files
