"""Launch configs for the real training engines, written for a plan (`planner launch`, `solve --emit`).

Flow: a ranked plan -> one variant per engine (planner.launch.variants, each re-estimated) -> one writer
per config format (deepspeed, accelerate, trainer, megatron, torchtitan, shell) -> a folder with the
configs, launch scripts, plan.json and README.md (planner.launch.bundle), written atomically.
"""

from planner.launch.bundle import TARGETS, LaunchFolder, build_launch_folder, parse_targets
from planner.launch.source import ReportPlan, load_report_plan
from planner.launch.variants import SearchContext, Variant

__all__ = [
    "TARGETS",
    "LaunchFolder",
    "ReportPlan",
    "SearchContext",
    "Variant",
    "build_launch_folder",
    "load_report_plan",
    "parse_targets",
]
