"""The launch configs fed to the engines' own validators (the `engines` extra: pip install -e '.[dev,engines]').

Each test imports the real package and skips when it is not installed. The traps these checks work
around are listed in ../shared/notes/launch-configs.md: DeepSpeed assumes world size 1 without a process
group (patched to the plan's data-parallel size), Accelerate copies misspelt nested keys silently (compared
with its launch parser's options), the Trainer refuses bf16 without a bf16 GPU (patched), torchrun's
`--nproc-per-node=gpu` needs CUDA (never emitted), Megatron's training parser is not in the megatron-core
wheel (flag names come from tests/data/megatron_lm_flags.txt, semantics from megatron-core's dataclasses).
"""

import importlib
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.launch_plans import hand_estimate, top_folder

from planner.architecture import total_params
from planner.files import write_folder
from planner.launch.accelerate import accelerate_deepspeed_config, accelerate_fsdp_config, render_accelerate_yaml
from planner.launch.deepspeed import deepspeed_command, deepspeed_config
from planner.launch.megatron import megatron_arguments
from planner.launch.shell import expand_defaults, torchrun_args
from planner.launch.torchtitan import torchtitan_module
from planner.launch.trainer import trainer_arguments, trainer_bf16, trainer_flags
from planner.memory.stages import checkpointed_blocks, in_flight_micro_batches

pytestmark = pytest.mark.engines

TOPS = ["13b-16xA100", "70b-64xH100"]
DS_PLANS = [
    "ds-zero1-offload-fp16",
    "ds-zero2-autotp",
    "ds-zero3-offload-all-pure-bf16",
    "ds-zero0",
    "ds-zero2-offload-sgd",
]
FSDP_PLANS = ["fsdp-zero2-compile", "fsdp-offload-llama2", "fsdp1-hf-trainer"]
TITAN_PLANS = ["fsdp-zero2-compile", "fsdp-tp-pp-fp8", "fsdp-offload-llama2", "fsdp-ddp", "fsdp-pp-interleaved"]
TITAN_PLANS += ["fsdp-every-3rd-block"]
MEGATRON_PLANS = ["megatron-tp-pp", "megatron-cp-full", "megatron-uneven-pp", "megatron-interleaved-bf16-reduce"]
MEGATRON_PLANS += ["megatron-every-2nd-block"]


def _ds_plans():
    """(label, plan) for every DeepSpeed plan: hand-made ones and the top plans' DeepSpeed variants."""
    out = [(name, hand_estimate(name).plan) for name in DS_PLANS]
    out += [(f"{name}:deepspeed", top_folder(name).variants["deepspeed"].plan) for name in TOPS]
    return out


# ---- DeepSpeed -----------------------------------------------------------------------------------------


@contextmanager
def _deepspeed_world(monkeypatch, world_size: int):
    """DeepSpeedConfig asks torch.distributed for rank and world size; offline it falls back to 1."""
    import deepspeed.runtime.config as ds_config_module

    monkeypatch.setattr(ds_config_module.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(ds_config_module.dist, "get_world_size", lambda *a, **k: world_size)
    yield


@pytest.mark.parametrize("label, plan", _ds_plans(), ids=lambda x: x if isinstance(x, str) else "")
def test_deepspeed_accepts_config(monkeypatch, label, plan):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    config = deepspeed_config(plan)
    # Without an mpu DeepSpeed divides by its whole world, which under AutoTP is every GPU (verified on 4
    # gloo ranks with autotp_size 2); the planner's own rule (global = micro x GA x dp) is checked here.
    world = plan.dp if plan.tp == 1 else plan.gpus
    with _deepspeed_world(monkeypatch, world):
        parsed = DeepSpeedConfig(json.loads(json.dumps(config)))
    assert parsed.train_micro_batch_size_per_gpu * parsed.gradient_accumulation_steps * plan.dp == plan.global_batch
    assert parsed.train_batch_size == plan.global_batch * plan.tp
    assert parsed.train_micro_batch_size_per_gpu == plan.micro_batch
    assert parsed.gradient_accumulation_steps == plan.grad_accum
    assert parsed.zero_optimization_stage == plan.zero
    assert parsed.zero_config.reduce_bucket_size == 500_000_000
    assert parsed.zero_force_ds_cpu_optimizer is (plan.offload == "none" or plan.optimizer == "adamw")
    if plan.tp == 1:
        # The patch is what makes the batch rule meaningful: one rank more and DeepSpeed must refuse the file.
        with _deepspeed_world(monkeypatch, plan.dp + 1), pytest.raises(AssertionError, match="train_batch_size"):
            DeepSpeedConfig(json.loads(json.dumps(config)))


def test_deepspeed_launcher_parses_the_command():
    pytest.importorskip("deepspeed")
    from deepspeed.launcher.runner import parse_args

    plan = hand_estimate("ds-zero3-offload-all-pure-bf16").plan
    args = parse_args(expand_defaults(deepspeed_command(plan, "train.py", "ds_config.json")[1:], {"MASTER_ADDR": "n0"}))
    assert (args.num_nodes, args.num_gpus, args.master_addr, args.master_port) == (2, 8, "n0", 29500)
    assert args.user_script == "train.py" and args.user_args == ["--deepspeed", "ds_config.json"]


# ---- Accelerate ----------------------------------------------------------------------------------------


def _accelerate_option_names(group_titles):
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    return {
        action.dest for group in parser._action_groups if group.title in group_titles for action in group._group_actions
    }


def _accelerate_cases():
    cases = []
    for name in DS_PLANS:
        cases.append((name, "deepspeed", hand_estimate(name)))
    for name in FSDP_PLANS:
        cases.append((name, "fsdp", hand_estimate(name)))
    for name in TOPS:
        folder = top_folder(name)
        cases.append((f"{name}:deepspeed", "deepspeed", folder.variants["deepspeed"].estimate))
        cases.append((f"{name}:fsdp-hf", "fsdp", folder.variants["fsdp-hf"].estimate))
    return cases


@pytest.mark.parametrize("label, kind, est", _accelerate_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_accelerate_loads_yaml_and_knows_every_nested_key(tmp_path, monkeypatch, label, kind, est):
    pytest.importorskip("accelerate")
    pytest.importorskip("deepspeed")
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    plan = est.plan
    if kind == "deepspeed":
        config = accelerate_deepspeed_config(plan, str(tmp_path / "ds_config.json"))
        (tmp_path / "ds_config.json").write_text(json.dumps(deepspeed_config(plan)))
        nested, groups = config["deepspeed_config"], {"DeepSpeed Arguments"}
    else:
        config = accelerate_fsdp_config(plan, est.model)
        nested, groups = config["fsdp_config"], {"FSDP Arguments"}
    path = tmp_path / "accelerate.yaml"
    path.write_text(render_accelerate_yaml(config, label))

    loaded = load_config_from_file(str(path))  # rejects unknown top-level keys
    assert loaded.num_processes == plan.gpus and loaded.num_machines == plan.nodes
    # Nested keys are copied onto the launch args unchecked: each must be an option the launcher defines.
    assert set(nested) <= _accelerate_option_names(groups), set(nested) - _accelerate_option_names(groups)

    argv = ["--config_file", str(path), "--machine_rank", "0"]
    if plan.nodes > 1:
        argv += ["--main_process_ip", "10.0.0.1"]
    args = launch_command_parser().parse_args([*argv, "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    for name, value in nested.items():
        assert getattr(args, name) == value, name
    monkeypatch.setattr("torch.cuda.device_count", lambda: plan.gpus_per_node)
    if kind == "deepspeed":
        args.deepspeed_fields_from_accelerate_config = ",".join(
            list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        )
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(tmp_path / "ds_config.json")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        plugin = DeepSpeedPlugin()  # runs Accelerate's check that nothing contradicts the config file
        assert plugin.zero_stage == plan.zero
    else:
        env = prepare_multi_gpu_env(args)
        assert env["FSDP_VERSION"] == str(plan.fsdp_version)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if plan.fsdp_version == 1:  # FSDP1's sync_module_states asks for the current device
            monkeypatch.setattr("accelerate.utils.dataclasses.is_cuda_available", lambda: True)
            monkeypatch.setattr("torch.cuda.current_device", lambda: 0)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == plan.fsdp_version
        if plan.fsdp_version == 2:
            assert env["FSDP_RESHARD_AFTER_FORWARD"] == str(plan.zero == 3).lower()
            assert plugin.reshard_after_forward is (plan.zero == 3)
        else:
            from torch.distributed.fsdp import ShardingStrategy

            strategy = ShardingStrategy.FULL_SHARD if plan.zero == 3 else ShardingStrategy.SHARD_GRAD_OP
            assert plugin.sharding_strategy == strategy and plugin.limit_all_gathers
        assert plugin.activation_checkpointing is (plan.checkpointing == "full")
        from torch.distributed.fsdp import CPUOffloadPolicy

        assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) is (plan.offload == "optimizer+params")


def test_accelerate_nested_key_check_catches_a_typo():
    pytest.importorskip("accelerate")
    assert "fsdp_versoin" not in _accelerate_option_names({"FSDP Arguments"})
    assert "fsdp_version" in _accelerate_option_names({"FSDP Arguments"})


# ---- Hugging Face Trainer ------------------------------------------------------------------------------


def _trainer_cases():
    names = ("ds-zero1-offload-fp16", "ds-zero2-autotp", "ds-zero3-offload-all-pure-bf16", *FSDP_PLANS)
    cases = [(name, hand_estimate(name)) for name in names]
    cases = [(n, e) for n, e in cases if e.plan.tp == 1]
    for name in TOPS:
        folder = top_folder(name)
        code = "deepspeed" if folder.chosen.plan.engine == "deepspeed" else "fsdp-hf"
        cases.append((f"{name}:{code}", folder.variants[code].estimate))
    return cases


@pytest.mark.parametrize("label, est", _trainer_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_training_arguments_accept_args_file_and_flags(tmp_path, monkeypatch, label, est):
    transformers = pytest.importorskip("transformers")
    if est.plan.engine == "deepspeed":
        pytest.importorskip("deepspeed")
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda *a, **k: True)
    monkeypatch.chdir(tmp_path)
    args = trainer_arguments(est.plan, est.model)
    ds_config = deepspeed_config(est.plan, hf_auto=True)
    Path("ds_config_trainer.json").write_text(json.dumps(ds_config))
    if "fsdp_config" in args:
        Path("trainer_fsdp_config.json").write_text(json.dumps(args["fsdp_config"]))
    if "accelerator_config" in args:
        Path("trainer_accelerator_config.json").write_text(json.dumps(args["accelerator_config"]))
    # the args file as the launch folder writes it (nested configs inline), read from another directory
    folder = tmp_path / "launch"
    folder.mkdir()
    args_file = trainer_arguments(est.plan, est.model, ds_config) if est.plan.engine == "deepspeed" else args
    (folder / "trainer_args.json").write_text(json.dumps(args_file))

    parser = transformers.HfArgumentParser(transformers.TrainingArguments)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # e.g. the deprecated gradient_checkpointing
        (from_file,) = parser.parse_json_file(str(folder / "trainer_args.json"))
        (from_flags,) = parser.parse_args_into_dataclasses(trainer_flags(args))
    for parsed in (from_file, from_flags):
        assert parsed.per_device_train_batch_size == est.plan.micro_batch
        assert parsed.gradient_accumulation_steps == est.plan.grad_accum
        assert parsed.bf16 is trainer_bf16(est.plan)
    if est.plan.engine == "deepspeed":
        hf_ds = from_file.hf_deepspeed_config
        model = type("Stub", (), {"config": type("Cfg", (), {"hidden_size": est.model.architecture.hidden_size})()})
        hf_ds.trainer_config_finalize(from_file, model, num_training_steps=100)  # raises on any mismatch
        assert hf_ds.config["train_micro_batch_size_per_gpu"] == est.plan.micro_batch
        assert hf_ds.config["gradient_accumulation_steps"] == est.plan.grad_accum
        assert hf_ds.config["zero_optimization"]["stage"] == est.plan.zero
    else:
        for parsed in (from_file, from_flags):
            sync = parsed.accelerator_config.gradient_accumulation_kwargs or {}
            assert sync.get("sync_each_batch", False) is (est.plan.grad_accum > 1)
            reshard = est.plan.zero == 3
            if est.plan.fsdp_version == 1:  # FSDP1 takes the sharding strategy's name
                reshard = "full_shard" if est.plan.zero == 3 else "shard_grad_op"
            assert parsed.fsdp_plugin_args["reshard_after_forward"] == reshard
            assert parsed.fsdp_plugin_args["activation_checkpointing"] is (est.plan.checkpointing == "full")


# ---- torchrun ------------------------------------------------------------------------------------------


def _script_commands():
    """(label, argv after `torchrun`) of every torchrun-based launch script of the top plans."""
    out = []
    for name in TOPS:
        folder = top_folder(name)
        for code in ("fsdp", "megatron"):
            out.append((f"{name}:{code}", folder.variants[code].plan))
    return out


@pytest.mark.parametrize("label, plan", _script_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_torchrun_parser_accepts_the_launch(label, plan):
    pytest.importorskip("torch")
    from torch.distributed.run import config_from_args, get_args_parser

    argv = expand_defaults(torchrun_args(plan), {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"})[1:]
    args = get_args_parser().parse_args([*argv, "train.py", "--plan", "plan.json"])
    config, _command, command_args = config_from_args(args)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (plan.nodes, plan.nodes, plan.gpus_per_node)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "10.0.0.1:29500"
    assert command_args[-2:] == ["--plan", "plan.json"]


# ---- Megatron ------------------------------------------------------------------------------------------


def _megatron_cases():
    out = [(name, hand_estimate(name)) for name in MEGATRON_PLANS]
    out += [(f"{name}:megatron", top_folder(name).variants["megatron"].estimate) for name in TOPS]
    return out


@pytest.mark.parametrize("label, est", _megatron_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_megatron_core_accepts_the_layout(label, est):
    pytest.importorskip("megatron.core")
    import torch
    from megatron.core.num_microbatches_calculator import ConstantNumMicroBatchesCalculator
    from megatron.core.transformer.transformer_config import TransformerConfig

    plan, arch = est.plan, est.model.architecture
    args = megatron_arguments(est.model, plan)

    def value(flag):
        return args[args.index(flag) + 1] if flag in args else None

    per_chunk = value("--num-layers-per-virtual-pipeline-stage")
    # Megatron-LM's arguments.py: V = layers per pipeline rank / --num-layers-per-virtual-pipeline-stage.
    virtual = arch.num_layers // plan.pp // int(per_chunk) if per_chunk else None
    assert (virtual or 1) == plan.virtual_stages
    config = TransformerConfig(
        num_layers=int(value("--num-layers")),
        hidden_size=int(value("--hidden-size")),
        ffn_hidden_size=int(value("--ffn-hidden-size")),
        num_attention_heads=int(value("--num-attention-heads")),
        num_query_groups=int(value("--num-query-groups") or arch.num_attention_heads),
        tensor_model_parallel_size=int(value("--tensor-model-parallel-size")),
        pipeline_model_parallel_size=int(value("--pipeline-model-parallel-size")),
        context_parallel_size=int(value("--context-parallel-size")),
        sequence_parallel="--sequence-parallel" in args,
        pipeline_dtype=torch.bfloat16 if plan.pp > 1 else None,
        pipeline_model_parallel_layout=value("--pipeline-model-parallel-layout"),
        virtual_pipeline_model_parallel_size=virtual,
        recompute_granularity=value("--recompute-granularity"),
        recompute_method=value("--recompute-method"),
        recompute_num_layers=int(value("--recompute-num-layers")) if "--recompute-num-layers" in args else None,
        bf16="--bf16" in args,
        fp16="--fp16" in args,
        gated_linear_unit="--swiglu" in args,
        add_bias_linear="--disable-bias-linear" not in args,
    )
    assert config.num_layers == arch.num_layers
    calculator = ConstantNumMicroBatchesCalculator(plan.global_batch, plan.micro_batch, plan.dp, False, 0)
    assert calculator.get() == plan.grad_accum
    if virtual:
        from megatron.core.pipeline_parallel.schedules import get_pp_rank_microbatches

        # The interleaved schedule's warm-up on rank 0 is the in-flight count the memory model uses.
        rank0 = SimpleNamespace(
            pp_group=SimpleNamespace(size=lambda: plan.pp, rank=lambda: 0), virtual_pipeline_model_parallel_size=virtual
        )
        warmup = get_pp_rank_microbatches(plan.grad_accum, virtual, plan.pp, p2p_communicator=rank0)[2]
        assert (warmup + 1) / virtual == in_flight_micro_batches(plan, 0)
    assert ("--grad-reduce-in-bf16" in args) is bool(plan.grad_reduce_bf16)
    assert ("--overlap-grad-reduce" in args) is (plan.overlap_grad_reduce is not False)
    if plan.checkpointing_every > 1:
        assert config.recompute_method == "block"
        assert config.recompute_num_layers == arch.num_layers // plan.pp // plan.checkpointing_every


# ---- torchtitan ----------------------------------------------------------------------------------------


def _titan_cases():
    out = [(name, hand_estimate(name)) for name in TITAN_PLANS]
    out += [(f"{name}:fsdp", top_folder(name).variants["fsdp"].estimate) for name in TOPS]
    return out


@pytest.mark.parametrize("label, est", _titan_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_torchtitan_builds_the_config_and_model(tmp_path, monkeypatch, label, est):
    pytest.importorskip("torchtitan")
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims

    plan = est.plan
    if plan.precision == "fp8":  # torchtitan checks for an SM89+ GPU when the config builds its converters
        pytest.importorskip("torchao")
        monkeypatch.setattr("torchtitan.components.quantization.float8.has_cuda_capability", lambda *a: True)
    module_name = f"torchtitan_plan_{abs(hash(label))}"
    write_folder(tmp_path / "launch", {f"{module_name}.py": torchtitan_module(est.model, plan)})
    monkeypatch.syspath_prepend(str(tmp_path / "launch"))
    config = importlib.import_module(module_name).planner_plan()
    parsed = ConfigManager().parse_args(["--module", module_name, "--config", "planner_plan"])  # full validation
    assert parsed.training.global_batch_size == plan.global_batch
    p = config.parallelism
    dims = ParallelDims(
        dp_replicate=p.data_parallel_replicate_degree,
        dp_shard=p.data_parallel_shard_degree,
        cp=p.context_parallel_degree,
        tp=p.tensor_parallel_degree,
        pp=p.pipeline_parallel_degree,
        ep=1,
        world_size=plan.gpus,
    )
    assert dims.dp_replicate * dims.dp_shard == plan.dp
    local = config.training.local_batch_size
    accumulation = plan.global_batch // (local * plan.dp)
    assert (accumulation if plan.pp == 1 else local // p.pipeline_parallel_microbatch_size) == plan.grad_accum
    with torch.device("meta"):
        model = config.model_spec.model.build()
    assert sum(t.numel() for t in model.parameters()) == total_params(est.model.architecture)
    if plan.pp > 1:
        assert p.pipeline_parallel_schedule == ("Interleaved1F1B" if plan.pp_schedule == "interleaved" else "1F1B")
    if plan.pp_schedule == "interleaved":
        stages = est.model.architecture.num_layers // p.pipeline_parallel_layers_per_stage
        assert stages == plan.pp * plan.virtual_stages
    if plan.checkpointing_every > 1:
        policy = config.activation_checkpoint.build()
        policy.apply(model)
        wrapped = [
            name
            for name, _ in model.layers.named_children()
            if "checkpoint" in type(model.layers.get_submodule(name)).__name__.lower()
        ]
        assert len(wrapped) == checkpointed_blocks(len(list(model.layers.children())), plan)
    sys.modules.pop(module_name, None)
