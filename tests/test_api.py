"""The Python API: the README's example runs as written, and the API and the CLI give the same JSON."""

import doctest
import json
import re
from pathlib import Path

from click.testing import CliRunner

import planner
from planner.cli import main

README = Path(__file__).parent.parent / "README.md"


def test_readme_api_example_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(example, {}, "README Python API", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert len(test.examples) >= 10


def test_solve_api_and_cli_give_identical_json(tmp_path):
    cli = CliRunner().invoke(
        main,
        ["solve", "--model", "7b", "--budget", "8xA100", "--tokens", "1B", "--format", "json", "--out", str(tmp_path)],
    )
    assert cli.exit_code == 0, cli.output
    api = planner.solve("7b", "8xA100", tokens="1B")
    assert cli.output == api.to_json()
    assert (tmp_path / "report.json").read_text() == api.to_json()
    assert (tmp_path / "report.html").read_text() == api.files()["report.html"]
    assert len(api.frame) == len(json.loads(cli.output)["plans"]) == len(api.plans)


def test_estimate_api_and_cli_give_identical_json():
    from planner.report.estimate import render_json

    args = ["--model", "7b", "--gpus", "8", "--zero", "3", "--micro-batch", "4", "--seq-len", "4096"]
    cli = CliRunner().invoke(main, ["estimate", *args, "--format", "json"])
    assert cli.exit_code == 0, cli.output
    assert cli.output == render_json(planner.estimate("7b", gpus=8, zero=3, micro_batch=4, seq_len=4096))


def test_launch_from_api_writes_the_ranked_plan(tmp_path):
    sol = planner.solve("7b", "8xA100")
    folder = sol.launch(2, tmp_path / "l2", "torchrun")
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["source"] == "rank 2 of this search (report.json)"
    assert plan["chosen"]["plan"] == sol.plans[1].plan.to_dict() != sol.plans[0].plan.to_dict()
