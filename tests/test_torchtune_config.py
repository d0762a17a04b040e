"""torchtune LoRA/QLoRA recipe configs (planner.launch.torchtune) against torchtune 0.6.1's own schema.

torchtune is not among the installed packages: 0.6.1, its latest release, installs next to the engines extra but fails
on import (torchtune.modules.common_utils imports torchao.dtypes.nf4tensor, which the torchao 0.18 pinned for
torchtitan has moved to torchao.quantization), so the check is against facts read from its tagged source,
tests/data/torchtune_0.6.1.yaml: every top-level key must be
one the recipe's shipped config has or the recipe reads with cfg.get, every `_component_` of torchtune must be an
exported builder whose arguments include the keys given to it, and the checkpointer's model_type must exist.
Where torchtune is installed, the file is also loaded with its parser and every component resolved.
"""

import json
from pathlib import Path

import pytest
import yaml
from tests.conftest import plan_for

from planner.errors import PlannerError
from planner.launch.torchtune import BUILDERS, render_torchtune_yaml, torchtune_command, torchtune_config

FACTS = yaml.safe_load((Path(__file__).resolve().parent / "data" / "torchtune_0.6.1.yaml").read_text())
NON_TORCHTUNE = ("torch.", "bitsandbytes.")


def _plans():
    for name, builder in BUILDERS.items():
        for method in ("lora", "qlora") if builder.qlora else ("lora",):
            yield name, dict(method=method, precision="pure-bf16", engine="fsdp", gpus=1)
    # several GPUs (FSDP2), all-linear targets, fp32, the chunked loss and dropout on one model each
    yield "llama-3.1-8b", dict(method="lora", precision="pure-bf16", engine="fsdp", gpus=8, zero=3)
    yield "llama-3.1-70b", dict(method="qlora", precision="pure-bf16", engine="fsdp", gpus=8, zero=2, loss="chunked")
    yield "mistral-7b", dict(method="lora", precision="fp32", engine="fsdp", lora_targets="attention", lora_dropout=0.1)


def _components(node, found):
    if isinstance(node, dict):
        if "_component_" in node:
            found.append(node)
        for value in node.values():
            _components(value, found)
    return found


@pytest.mark.parametrize(("model", "request_fields"), list(_plans()))
def test_config_keys_and_components_exist_in_torchtune(model, request_fields):
    spec, _, plan = plan_for(model, **request_fields)
    config = torchtune_config(plan, spec)
    recipe = torchtune_command(plan, "x.yaml")[-3]
    allowed = set(FACTS["recipe_config_keys"][recipe]) | set(FACTS["recipe_optional_keys"][recipe])
    assert set(config) <= allowed, set(config) - allowed
    assert set(FACTS["recipe_config_keys"][recipe]) - set(config) == {"profiler"}  # optional, off by default
    for component in _components(config, []):
        path = component["_component_"]
        if path.startswith(NON_TORCHTUNE):
            continue
        assert path in FACTS["function_args"], path
        assert set(component) - {"_component_"} <= set(FACTS["function_args"][path]), path
    assert config["checkpointer"]["model_type"] in FACTS["model_types"]
    assert config["model"]["_component_"].rsplit(".", 1)[1].startswith(f"{plan.method}_")
    assert config["model"]["lora_rank"] == plan.lora_rank and config["batch_size"] == plan.micro_batch
    assert config["tokenizer"]["max_seq_len"] == plan.seq_len
    assert config["gradient_accumulation_steps"] == plan.grad_accum
    assert config["model"]["apply_lora_to_mlp"] == (plan.lora_targets == "all-linear")
    assert yaml.safe_load(render_torchtune_yaml(plan, config)) == config


def test_settings_reach_the_config():
    spec, _, plan = plan_for("llama-3.1-70b", method="qlora", precision="pure-bf16", engine="fsdp", gpus=8, zero=2)
    config = torchtune_config(plan, spec)
    assert config["model"]["_component_"] == "torchtune.models.llama3_1.qlora_llama3_1_70b"
    assert config["fsdp_reshard_after_forward"] is False  # ZeRO-2: blocks stay gathered after forward
    assert torchtune_command(plan, "c.yaml") == [
        "tune", "run", "--nproc_per_node", "8", "lora_finetune_distributed", "--config", "c.yaml"
    ]  # fmt: skip
    spec, _, fp32 = plan_for("mistral-7b", method="lora", precision="fp32", engine="fsdp", lora_dropout=0.1)
    config = torchtune_config(fp32, spec)
    assert (config["dtype"], config["model"]["lora_dropout"], config["loss"]["_component_"]) == (
        "fp32",
        0.1,
        "torch.nn.CrossEntropyLoss",
    )
    assert torchtune_command(fp32, "c.yaml") == ["tune", "run", "lora_finetune_single_device", "--config", "c.yaml"]


@pytest.mark.parametrize(
    ("model", "request_fields", "reason"),
    [
        ("llama-3.1-8b", dict(method="lora", precision="bf16", engine="fsdp"), "pure bf16 or fp32"),
        ("llama-3.1-8b", dict(method="lora", engine="deepspeed"), "not deepspeed"),
        ("llama-3.1-8b", dict(method="lora", precision="pure-bf16", engine="fsdp", gpus=2, zero=0), "no DDP"),
        ("qwen2.5-7b", dict(method="qlora", precision="pure-bf16", engine="fsdp"), "no QLoRA builder"),
        ("olmo-2-7b", dict(method="lora", precision="pure-bf16", engine="fsdp"), "no LoRA builder"),
        ("llama-3.1-8b", dict(method="freeze", precision="pure-bf16", engine="fsdp"), "LoRA/QLoRA plans"),
    ],
)
def test_plans_torchtune_cannot_run_are_refused_with_the_reason(model, request_fields, reason):
    spec, _, plan = plan_for(model, **request_fields)
    with pytest.raises(PlannerError, match=reason):
        torchtune_config(plan, spec)


def test_loads_with_torchtunes_parser_where_installed(tmp_path):
    config_module = pytest.importorskip("torchtune.config")
    from omegaconf import OmegaConf

    spec, _, plan = plan_for("llama-3.2-1b", method="lora", precision="pure-bf16", engine="fsdp")
    path = tmp_path / "torchtune_lora.yaml"
    path.write_text(render_torchtune_yaml(plan, torchtune_config(plan, spec)))
    cfg = OmegaConf.load(path)
    for component in _components(OmegaConf.to_container(cfg), []):
        config_module._utils._get_component_from_path(component["_component_"])


def test_launch_folder_holds_the_torchtune_config_or_why_not(tmp_path):
    from click.testing import CliRunner

    from planner.cli import main

    args = ["solve", "--model", "7b", "--budget", "2xA100", "--method", "lora", "--seq-len", "2048"]
    # ZeRO-3 pinned: torchtune's distributed recipe shards with FSDP2; unpinned, DDP (which only reduces the
    # adapters' gradients) ties with it on 2 GPUs and may rank first.
    args += ["--global-batch", "16", "--emit", "trainer", "--engine", "fsdp", "--zero", "3"]
    result = CliRunner().invoke(main, [*args, "--precision", "pure-bf16", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "a" / "launch-1"
    config = yaml.safe_load((folder / "torchtune_lora.yaml").read_text())
    plan = json.loads((folder / "plan.json").read_text())["chosen"]["plan"]
    assert config["batch_size"] == plan["micro_batch"] and config["tokenizer"]["max_seq_len"] == 2048
    assert "tune run --nproc_per_node 2 lora_finetune_distributed" in (folder / "launch_torchtune.sh").read_text()
    assert "./launch_torchtune.sh" in (folder / "README.md").read_text()
    # bf16 autocast (the search's default precision): no torchtune file, and the README says why
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "b" / "launch-1"
    assert not (folder / "torchtune_lora.yaml").exists()
    assert "- torchtune: torchtune trains in pure bf16 or fp32" in (folder / "README.md").read_text()
