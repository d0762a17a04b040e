"""List the command-line flags of a Megatron-LM checkout's training parser (tests/data/megatron_lm_flags.txt).

Megatron-LM builds most flags from dataclass fields at run time, and the megatron-core wheel on PyPI does
not include the training parser, so the launch-config tests check emitted flag names against this list.

Usage (needs Python >= 3.12, the version Megatron-LM main requires, and torch):
    python scripts/megatron_flags.py /path/to/Megatron-LM > tests/data/megatron_lm_flags.txt
"""

import argparse
import subprocess
import sys


def main() -> None:
    checkout = sys.argv[1]
    sys.path.insert(0, checkout)
    sys.argv = sys.argv[:1]
    from megatron.training.arguments import add_megatron_arguments

    parser = add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
    flags = sorted({option for action in parser._actions for option in action.option_strings})
    commit = subprocess.run(
        ["git", "-C", checkout, "log", "-1", "--format=%H (%cs)"], capture_output=True, text=True
    ).stdout.strip()
    header = [
        "Command-line flags of Megatron-LM's training parser (megatron/training/arguments.py add_megatron_arguments),",
        f"NVIDIA/Megatron-LM commit {commit or 'unknown'}, listed by scripts/megatron_flags.py",
        "with Python 3.12 and torch 2.13.0. The PyPI megatron-core wheel does not ship this parser, so the engine",
        "tests check emitted flag names against this list and the semantics against megatron-core's dataclasses.",
    ]
    print("\n".join(f"# {line}" for line in header))
    print("\n".join(flags))


if __name__ == "__main__":
    main()
