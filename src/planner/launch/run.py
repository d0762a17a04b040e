"""Glue between the CLI and the launch writers: build a folder, write it, summarise it for the terminal."""

from pathlib import Path

from planner.files import check_output_folder, write_folder
from planner.launch.bundle import LaunchFolder, build_launch_folder, parse_targets
from planner.launch.source import load_report_plan
from planner.launch.variants import SearchContext


def summary_lines(folder: LaunchFolder, path: Path) -> list[str]:
    lines = [f"Launch configs in {path}/ (README.md lists the command for each):"]
    for label, scripts in folder.commands.items():
        lines.append(f"  {label}: ./{' ./'.join(scripts)}")
    for code, variant in folder.variants.items():
        if variant.origin in ("translated", "searched"):
            est = variant.estimate
            lines.append(
                f"  variant {code} ({variant.origin}): {'; '.join(variant.changes)} -> peak "
                f"{est.memory.peak_gib:.1f} GiB, {est.performance.tokens_per_s:,.0f} tokens/s"
            )
    for target, reason in folder.skipped.items():
        lines.append(f"  not written: {target}: {reason}")
    return lines


def run_launch(ref: str, rank: int | None, targets: str, out: Path | None) -> str:
    """`planner launch`: write the launch folder of a report's ranked plan; returns the terminal text."""
    chosen_targets = parse_targets(targets)
    source = load_report_plan(ref, rank)
    path = check_output_folder(out or source.report.parent / f"launch-{source.rank}", "--out")
    folder = build_launch_folder(source.estimate, chosen_targets, source.context, source.note)
    write_folder(path, folder.files)
    lines = []
    peak, speed = source.estimate.memory.peak_gib, source.estimate.performance.tokens_per_s
    if abs(peak - source.reported_peak_gib) > 0.01 or abs(speed - source.reported_tokens_per_s) > 0.5:
        lines.append(
            f"note: the catalogs or models changed since the report: rank {source.rank} is now predicted at "
            f"{peak:.1f} GiB and {speed:,.0f} tokens/s (report: {source.reported_peak_gib:.1f} GiB, "
            f"{source.reported_tokens_per_s:,.0f} tokens/s)"
        )
    return "\n".join(lines + summary_lines(folder, path)) + "\n"


def emitted_files(result, estimates: dict, targets: str) -> tuple[dict[str, str], LaunchFolder]:
    """`solve --emit`: the launch folder of the top plan, as files under `launch-1/` of the report."""
    folder = launch_folder(result, estimates, targets, 1)
    return {f"launch-1/{name}": text for name, text in folder.files.items()}, folder


def launch_folder(result, estimates: dict, targets: str, rank: int) -> LaunchFolder:
    """The launch folder of the plan ranked `rank` in a search result."""
    request = result.request
    context = SearchContext(
        model_ref=request.model,
        budget=request.budget,
        space=str(request.space) if request.space else None,
        safety_margin=request.safety_margin,
        objective=request.objective,
        tokens=request.tokens,
        price_per_gpu_hour=request.price_per_gpu_hour,
        network_gbps_per_gpu=request.network_gbps_per_gpu,
    )
    chosen = estimates[int(result.feasible[rank - 1])]
    return build_launch_folder(chosen, parse_targets(targets), context, f"rank {rank} of this search (report.json)")
