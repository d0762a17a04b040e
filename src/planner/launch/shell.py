"""Launch scripts: torchrun arguments for multi-node runs and the bash files that hold each command.

Arguments are kept as lists in which `${VAR}` and `${VAR:-default}` stand for per-node values (node rank,
main node address); scripts double-quote those words so the shell expands them, and the engine tests
replace them by their defaults before handing the list to the launcher's own parser.
"""

import re
import shlex

from planner.launch.layout import DEFAULT_MASTER_PORT, node_layout
from planner.plan import Plan

_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def torchrun_args(plan: Plan) -> list[str]:
    """`torchrun` rendezvous arguments: every node runs the same command with its own NODE_RANK.
    `--nproc-per-node` is always a number (`gpu` fails where CUDA is not visible, e.g. a login node)."""
    layout = node_layout(plan)
    return [
        "torchrun",
        f"--nnodes={layout.nodes}",
        f"--nproc-per-node={layout.procs_per_node}",
        "--node-rank=${NODE_RANK:-0}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=${{MASTER_ADDR:-localhost}}:${{MASTER_PORT:-{DEFAULT_MASTER_PORT}}}",
        "--rdzv-id=${JOB_ID:-planner}",
    ]


def expand_defaults(args: list[str], values: dict[str, str] | None = None) -> list[str]:
    """The arguments with placeholders replaced by `values`, else their defaults, else `VAR` itself."""
    values = values or {}

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        return values.get(name, default if default is not None else name)

    return [_PLACEHOLDER.sub(sub, arg) for arg in args]


def shell_word(arg: str) -> str:
    """Quote one argument for bash, leaving `${...}` expandable."""
    if "$" in arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    return shlex.quote(arg)


def render_script(title: str, comments: list[str], setup: list[str], command: list[str]) -> str:
    """A bash launch script: header comments, `set -euo pipefail`, setup lines, then the command."""
    lines = ["#!/usr/bin/env bash", f"# {title}", *(f"# {c}" if c else "#" for c in comments)]
    lines += ["set -euo pipefail", 'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"', *setup]
    body, line = [], "exec"
    for unit in _units(command):
        if len(line) + 1 + len(unit) > 100 and line.strip():
            body.append(line + " \\")
            line = "  " + unit
        else:
            line += " " + unit
    body.append(line + ' "$@"')
    return "\n".join(lines + body) + "\n"


def _units(command: list[str]) -> list[str]:
    """Quoted words grouped so that a flag and its value stay on one line."""
    units: list[str] = []
    for arg in command:
        word = shell_word(arg)
        previous = units[-1] if units else ""
        if previous.startswith("-") and " " not in previous and "=" not in previous and not arg.startswith("-"):
            units[-1] += f" {word}"
        else:
            units.append(word)
    return units


NODE_COMMENTS = [
    "Run the same script on every node with NODE_RANK set (0 on the main node) and MASTER_ADDR",
    "set to the main node's address; MASTER_PORT and JOB_ID are optional. Extra arguments are passed on.",
]
