"""Progress on stderr: shown on a terminal (a pseudo-terminal here), silent with --format json or when stderr
is not a terminal; stdout carries the same result either way."""

import os
import pty
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent
SOLVE = [sys.executable, "-m", "planner.cli", "solve", "--model", "7b", "--budget", "8xA100", "--top", "3"]


def _run(args: list[str], tmp_path: Path, stderr_tty: bool) -> tuple[str, bytes]:
    """(stdout, stderr bytes) of a planner command; stderr on a pseudo-terminal when `stderr_tty`. The display
    appears at once (PLANNER_PROGRESS_DELAY_S=0) instead of after a second of work."""
    env = {**os.environ, "PLANNER_PROGRESS_DELAY_S": "0", "TERM": "xterm", "COLUMNS": "120"}
    if not stderr_tty:
        run = subprocess.run(args, capture_output=True, env=env, cwd=tmp_path, timeout=120)
        return run.stdout.decode(), run.stderr
    main, sub = pty.openpty()
    out_path = tmp_path / "stdout.txt"  # a file, not a pipe: a full pipe would block the child while we read
    with out_path.open("wb") as out, subprocess.Popen(args, stdout=out, stderr=sub, env=env, cwd=tmp_path) as proc:
        os.close(sub)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks)
    stdout = out_path.read_text()
    return stdout, b"".join(chunks)


def test_solve_shows_its_phases_on_a_terminal_and_nothing_elsewhere(tmp_path, monkeypatch):
    shown_out, shown = _run([*SOLVE, "--out", "a"], tmp_path, stderr_tty=True)
    assert b"evaluating plan groups" in shown and b"full estimates of the plans that fit" in shown
    # stderr not a terminal (click's runner gives a pipe-like stream): no display, no control codes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLANNER_PROGRESS_DELAY_S", "0")
    quiet = CliRunner().invoke(main, [*SOLVE[3:], "--out", "b"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert shown_out.replace("a/", "b/") == quiet.stdout  # stdout is the same result either way
    _, json_on_tty = _run([*SOLVE, "--out", "c", "--format", "json"], tmp_path, stderr_tty=True)
    assert json_on_tty == b""  # --format json: silent even on a terminal


def test_validate_counts_its_cases_on_a_terminal(tmp_path):
    cases = str(ROOT / "tests" / "data" / "memory_cases.yaml")
    _, shown = _run([sys.executable, "-m", "planner.cli", "validate", "memory", cases], tmp_path, stderr_tty=True)
    assert b"memory cases" in shown
