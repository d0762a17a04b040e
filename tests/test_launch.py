"""Launch-config writers: exact contents per engine, the variant rules, the folder, and the CLI.

These run without any engine installed; tests/engines/ feeds the same files to the engines' own validators.
"""

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import plan_for
from tests.launch_plans import HAND_PLANS, hand_estimate, top_folder

from planner.cli import main
from planner.errors import PlannerError
from planner.estimate import evaluate
from planner.launch import TARGETS, SearchContext, build_launch_folder, parse_targets
from planner.launch.accelerate import accelerate_deepspeed_config, accelerate_fsdp_config
from planner.launch.deepspeed import deepspeed_command, deepspeed_config
from planner.launch.megatron import megatron_arguments, pipeline_layout
from planner.launch.shell import expand_defaults, torchrun_args
from planner.launch.torchtitan import parallel_degrees, torchtitan_module, training_fields
from planner.launch.trainer import trainer_arguments, trainer_flags
from planner.launch.variants import build_variant

MEGATRON_FLAGS = {
    line.strip()
    for line in (Path(__file__).parent / "data" / "megatron_lm_flags.txt").read_text().splitlines()
    if line.startswith("--")
}


def plan(name):
    return hand_estimate(name).plan


# ---- DeepSpeed ---------------------------------------------------------------------------------------


def test_deepspeed_zero1_offload_fp16_exact():
    assert deepspeed_config(plan("ds-zero1-offload-fp16")) == {
        "train_batch_size": 64,
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,  # 64 = 4 x 2 x 8
        "gradient_clipping": 1.0,
        "fp16": {"enabled": True, "loss_scale": 0},
        "zero_optimization": {
            "stage": 1,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "reduce_bucket_size": 500_000_000,
            "reduce_scatter": True,
            "allgather_bucket_size": 500_000_000,
            "offload_optimizer": {"device": "cpu", "pin_memory": True},
        },
        "optimizer": {"type": "AdamW", "params": {}},
        "steps_per_print": 10,
        "wall_clock_breakdown": False,
    }


def test_deepspeed_zero3_writes_stage3_keys_and_param_offload_only_there():
    zero = deepspeed_config(plan("ds-zero3-offload-all-pure-bf16"))["zero_optimization"]
    assert zero["stage"] == 3 and zero["overlap_comm"] is True
    assert zero["stage3_max_live_parameters"] == 1_000_000_000
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert "allgather_bucket_size" not in zero
    for name in ("ds-zero1-offload-fp16", "ds-zero2-autotp", "ds-zero0"):
        block = deepspeed_config(plan(name))["zero_optimization"]
        assert "offload_param" not in block and not any(k.startswith("stage3_") for k in block)


def test_deepspeed_pure_bf16_and_autotp_blocks():
    pure = deepspeed_config(plan("ds-zero3-offload-all-pure-bf16"))
    assert pure["bf16"] == {"enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    autotp = deepspeed_config(plan("ds-zero2-autotp"))
    assert autotp["tensor_parallel"] == {"autotp_size": 2}
    # 32 = 2 x 4 x (8 / tp 2) data-parallel ranks; DeepSpeed 0.19 would check train_batch_size against the
    # whole world (8) under AutoTP without an mpu, so only micro-batch and accumulation are written.
    assert "train_batch_size" not in autotp
    assert (autotp["train_micro_batch_size_per_gpu"], autotp["gradient_accumulation_steps"]) == (2, 4)
    offload_sgd = deepspeed_config(plan("ds-zero2-offload-sgd"))
    assert offload_sgd["zero_force_ds_cpu_optimizer"] is False and "optimizer" not in offload_sgd
    assert deepspeed_config(plan("ds-zero0"))["zero_optimization"] == {"stage": 0}


def test_deepspeed_hf_copy_leaves_batch_to_the_trainer():
    auto = deepspeed_config(plan("ds-zero1-offload-fp16"), hf_auto=True)
    assert [auto[k] for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")] == [
        "auto"
    ] * 3
    assert auto["fp16"]["enabled"] == "auto"
    assert auto["optimizer"] == {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}}


def test_deepspeed_launcher_command_two_nodes():
    command = deepspeed_command(plan("ds-zero3-offload-all-pure-bf16"), "train.py", "ds.json")
    assert command == [
        "deepspeed",
        "--hostfile",
        "hostfile",
        "--num_nodes",
        "2",
        "--master_addr",
        "${MASTER_ADDR}",
        "--master_port",
        "${MASTER_PORT:-29500}",
        "--num_gpus",
        "8",
        "train.py",
        "--deepspeed",
        "ds.json",
    ]


# ---- Accelerate, Trainer, torchrun ---------------------------------------------------------------------


def test_accelerate_fsdp2_keys():
    est = hand_estimate("fsdp-zero2-compile")
    config = accelerate_fsdp_config(est.plan, est.model)
    assert config["distributed_type"] == "FSDP" and config["mixed_precision"] == "bf16"
    assert (config["num_machines"], config["num_processes"]) == (1, 8)
    assert config["fsdp_config"] == {
        "fsdp_version": 2,
        "fsdp_reshard_after_forward": False,  # ZeRO-2 keeps parameters gathered until backward
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
        "fsdp_offload_params": False,
        "fsdp_activation_checkpointing": True,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": True,
    }


def test_accelerate_deepspeed_holds_only_the_file_and_launcher():
    config = accelerate_deepspeed_config(plan("ds-zero3-offload-all-pure-bf16"))
    assert config["deepspeed_config"] == {
        "deepspeed_config_file": "ds_config.json",
        "zero3_init_flag": True,
        "deepspeed_multinode_launcher": "standard",
    }
    assert "mixed_precision" not in config  # Accelerate refuses it next to a config file
    assert (config["num_machines"], config["num_processes"], config["main_process_port"]) == (2, 16, 29500)


def test_trainer_arguments_deepspeed_and_fsdp():
    est = hand_estimate("ds-zero1-offload-fp16")
    args = trainer_arguments(est.plan, est.model)
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 2
    assert (args["fp16"], args["bf16"], args["activation_checkpointing"]) == (True, False, True)
    assert not any(key.startswith("gradient_checkpointing") for key in args)  # deprecated in transformers 5.23
    assert args["deepspeed"] == "ds_config_trainer.json" and "fsdp" not in args
    fsdp = hand_estimate("fsdp-offload-llama2")
    args = trainer_arguments(fsdp.plan, fsdp.model)
    assert args["fsdp"] is True and args["activation_checkpointing"] is False
    assert args["fsdp_config"]["reshard_after_forward"] is True and args["fsdp_config"]["cpu_offload"] is True
    flags = trainer_flags(args)
    assert flags[flags.index("--fsdp") + 1] == "--fsdp_config"  # bare flag: a value would be the legacy string
    assert flags[flags.index("--fsdp_config") + 1] == "trainer_fsdp_config.json"


def test_trainer_pure_bf16_keeps_bf16_on_for_deepspeed():
    est = hand_estimate("ds-zero3-offload-all-pure-bf16")
    assert trainer_arguments(est.plan, est.model)["bf16"] is True  # matches bf16.enabled in the DeepSpeed file


def test_trainer_refuses_what_hf_models_cannot_run():
    tp_pp = hand_estimate("fsdp-tp-pp-fp8")
    with pytest.raises(PlannerError):
        trainer_arguments(tp_pp.plan, tp_pp.model)


def test_torchrun_arguments_and_placeholders():
    args = torchrun_args(plan("megatron-tp-pp"))
    assert args == [
        "torchrun",
        "--nnodes=8",
        "--nproc-per-node=8",
        "--node-rank=${NODE_RANK:-0}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=${MASTER_ADDR:-localhost}:${MASTER_PORT:-29500}",
        "--rdzv-id=${JOB_ID:-planner}",
    ]
    assert expand_defaults(args[3:6], {"NODE_RANK": "3"}) == [
        "--node-rank=3",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:29500",
    ]


# ---- Megatron and torchtitan ---------------------------------------------------------------------------


def test_megatron_arguments_tp_pp_selective():
    est = hand_estimate("megatron-tp-pp")
    args = megatron_arguments(est.model, est.plan)
    assert " ".join(args) == (
        "--use-mcore-models --transformer-impl transformer_engine --num-layers 80 --hidden-size 8192 "
        "--ffn-hidden-size 28672 --num-attention-heads 64 --group-query-attention --num-query-groups 8 "
        "--seq-length 2048 --max-position-embeddings 4096 --position-embedding-type rope --normalization RMSNorm "
        "--swiglu --disable-bias-linear --untie-embeddings-and-output-weights --hidden-dropout 0 "
        "--attention-dropout 0 --tensor-model-parallel-size 4 --pipeline-model-parallel-size 4 "
        "--context-parallel-size 1 --sequence-parallel --micro-batch-size 1 --global-batch-size 128 "
        "--use-distributed-optimizer --overlap-param-gather --overlap-grad-reduce --recompute-granularity "
        "selective --bf16 --optimizer adam --clip-grad 1"
    )


def test_megatron_full_recompute_offload_and_uneven_pipeline():
    est = hand_estimate("megatron-cp-full")
    args = megatron_arguments(est.model, est.plan)
    text = " ".join(args)
    assert "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1" in text
    assert "--optimizer-cpu-offload --optimizer-offload-fraction 1.0 --use-precision-aware-optimizer" in text
    assert "--context-parallel-size 2" in text
    # 40 layers on 3 stages: 14, 13, 13, the earliest stage taking the extra block as the memory model assumes
    assert pipeline_layout(40, 3) == "Et*14|t*13|t*13L"
    assert pipeline_layout(32, 4) is None
    uneven = hand_estimate("megatron-uneven-pp")
    assert "--pipeline-model-parallel-layout Et*14|t*13|t*13L" in " ".join(
        megatron_arguments(uneven.model, uneven.plan)
    )


@pytest.mark.parametrize("name", [n for n in HAND_PLANS if n.startswith("megatron")])
def test_megatron_flags_exist_in_megatron_lm(name):
    est = hand_estimate(name)
    flags = {a for a in megatron_arguments(est.model, est.plan) if a.startswith("--")}
    assert flags <= MEGATRON_FLAGS, flags - MEGATRON_FLAGS


def test_torchtitan_degrees_and_batch():
    tp_pp = plan("fsdp-tp-pp-fp8")
    assert parallel_degrees(tp_pp) == {
        "data_parallel_replicate_degree": 1,
        "data_parallel_shard_degree": 4,  # 32 / (tp 4 x pp 2)
        "tensor_parallel_degree": 4,
        "pipeline_parallel_degree": 2,
        "context_parallel_degree": 1,
    }
    # With pipelining the local batch holds all pipeline micro-batches: 64 / 4 = 16 sequences of micro-batch 1.
    assert training_fields(tp_pp)["local_batch_size"] == 16
    ddp = plan("fsdp-ddp")
    assert parallel_degrees(ddp)["data_parallel_replicate_degree"] == 8
    assert training_fields(ddp)["local_batch_size"] == 2


def test_torchtitan_module_exact_flavor_and_custom_model():
    est = hand_estimate("fsdp-tp-pp-fp8")
    source = torchtitan_module(est.model, est.plan)
    assert 'return model_registry("70B", converters=[Float8LinearConverter.Config(model_compile_enabled=False)])' in (
        source
    )
    assert "config.activation_checkpoint = SelectiveAC.Config()" in source
    compile(source, "torchtitan_plan.py", "exec")
    custom = hand_estimate("fsdp-offload-llama2")
    source = torchtitan_module(custom.model, custom.plan)
    assert "n_layers=32," in source and "hidden_dim=11008," in source and "n_kv_heads=32," in source
    assert "config.training.enable_cpu_offload = True" in source and "ChunkedLossWrapper.Config(" in source
    compile(source, "torchtitan_plan.py", "exec")
    qwen = hand_estimate("qwen-fsdp")
    with pytest.raises(PlannerError, match="linear biases"):
        torchtitan_module(qwen.model, qwen.plan)


# ---- variants --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fsdp-ddp", "fsdp-tp-pp-fp8"])
def test_hf_fsdp_variant_translates_ddp_and_fp8_plans(name):
    variant = build_variant("fsdp-hf", hand_estimate(name))
    assert variant.origin in ("translated", "none")
    if variant.estimate is not None:
        assert variant.plan.zero in (2, 3) and variant.plan.precision != "fp8"
        accelerate_fsdp_config(variant.plan, hand_estimate(name).model)  # writable


def test_folder_skips_what_a_target_cannot_run_and_falls_back_for_the_trainer():
    folder = build_launch_folder(hand_estimate("fsdp-tp-pp-fp8"), ("torchrun",), None, "test")
    assert "launch_torchtitan.sh" in folder.skipped["torchrun"] and "launch_torchrun.sh" not in folder.files
    no_search = build_launch_folder(hand_estimate("ds-zero2-autotp"), ("trainer",), None, "test")
    assert no_search.skipped["trainer"].startswith("deepspeed: the Trainer runs data-parallel")
    context = SearchContext(model_ref="llama-2-13b", budget="8xA100")
    autotp = build_launch_folder(hand_estimate("ds-zero2-autotp"), ("trainer",), context, "test")
    assert "trainer" not in autotp.skipped
    assert json.loads(autotp.files["trainer_args.json"])["fsdp"] is True  # AutoTP: the HF-FSDP variant instead
    assert any("fsdp-hf variant" in label for label in autotp.commands)


def test_trainer_args_file_carries_the_deepspeed_config_and_names_no_relative_file():
    """A path in trainer_args.json is read from the current directory: the file must not need one."""
    folder = build_launch_folder(hand_estimate("ds-zero1-offload-fp16"), ("trainer",), None, "test")
    args = json.loads(folder.files["trainer_args.json"])
    assert args["deepspeed"] == json.loads(folder.files["ds_config_trainer.json"])
    assert not [v for v in args.values() if isinstance(v, str) and v.endswith(".json")]
    assert '"$HERE/ds_config_trainer.json"' in folder.files["launch_trainer.sh"]  # the flags form: absolute


@pytest.mark.parametrize(
    "model, fields, refusal",
    [
        ("llama-2-13b", dict(zero=3), ""),
        ("llama-2-13b", dict(zero=2, sequence_parallel=False), ""),
        ("llama-2-13b", dict(zero=0), "this plan is DDP + TP"),
        ("llama-3.2-1b", dict(zero=3), "tied embeddings share"),
        ("mpt-7b", dict(zero=3), "no ALiBi bias"),
        ("llama-2-13b", dict(zero=3, seq_len=2049), "tp 2 does not divide 2049"),
    ],
)
def test_torchrun_writes_tensor_parallel_fsdp_plans_and_says_why_not_others(model, fields, refusal):
    # examples/train.py lays out FSDP2 over the dp dimension of a (dp, tp) mesh with torchtitan's TP plan;
    # it has no DDP + TP path and cannot shard an LM head that the embedding shares.
    estimate = evaluate(
        *plan_for(model, "A100-80GB", engine="fsdp", gpus=8, tp=2, micro_batch=1, global_batch=32, **fields)
    )
    folder = build_launch_folder(estimate, ("torchrun",), None, "test")
    if refusal:
        assert refusal in folder.skipped["torchrun"] and "launch_torchrun.sh" not in folder.files
    else:
        assert not folder.skipped and "launch_torchrun.sh" in folder.files


def test_variant_translation_rules():
    chosen = hand_estimate("fsdp-zero2-compile")
    ds = build_variant("deepspeed", chosen)
    assert ds.origin == "translated" and ds.changes == ("engine: fsdp -> deepspeed",)
    meg = build_variant("megatron", chosen)
    assert meg.origin in ("translated", "none")
    assert "zero: 2 -> 1" in (meg.changes or meg.reason)
    assert build_variant("fsdp", chosen).origin == "plan"
    tp_pp = build_variant("fsdp-hf", hand_estimate("fsdp-tp-pp-fp8"))
    assert "precision: fp8 -> bf16" in tp_pp.changes or "precision: fp8 -> bf16" in tp_pp.reason


@pytest.mark.parametrize("name", ["13b-16xA100", "70b-64xH100"])
def test_top_plans_get_all_six_configs_and_every_variant_fits(name):
    folder = top_folder(name)
    assert not folder.skipped
    expected = {
        "ds_config.json",
        "accelerate_deepspeed.yaml",
        "accelerate_fsdp.yaml",
        "trainer_args.json",
        "launch_torchrun.sh",
        "megatron_args.txt",
        "torchtitan_plan.py",
        "README.md",
        "plan.json",
    }
    assert expected <= set(folder.files)
    for variant in folder.variants.values():
        assert variant.estimate is not None
        assert variant.estimate.memory.fits, (variant.code, variant.estimate.memory.peak_gib)


def test_each_launcher_says_which_variant_it_runs_with_its_numbers():
    """13b on 16xA100: the plan is Megatron TP 4, micro-batch 4 x 16; Accelerate FSDP and the Trainer run the
    HF-FSDP variant (another batch split and speed), which the README's command list and the script must both say."""
    folder = top_folder("13b-16xA100")
    fsdp_hf, chosen = folder.variants["fsdp-hf"], folder.chosen.plan
    assert (fsdp_hf.plan.micro_batch, fsdp_hf.plan.grad_accum) != (chosen.micro_batch, chosen.grad_accum)
    batch = f"micro-batch {fsdp_hf.plan.micro_batch} x accumulation {fsdp_hf.plan.grad_accum}"
    speed = f"{fsdp_hf.estimate.performance.tokens_per_s:,.0f} tokens/s"
    for script in ("launch_accelerate_fsdp.sh", "launch_trainer.sh"):
        (label,) = [label for label, scripts in folder.commands.items() if scripts == [script]]
        assert f"fsdp-hf variant: {batch}, {speed}" in label
        assert "fsdp-hf variant" in folder.files[script] and batch in folder.files[script]
        assert f"micro-batch {chosen.micro_batch} x accumulation {chosen.grad_accum}" in folder.files[script]
        assert f"**{label}**" in folder.files["README.md"]
    assert "Runs the ranked plan: micro-batch 4 x accumulation 16" in folder.files["launch_megatron.sh"]


def test_launch_scripts_are_valid_bash_and_run_from_any_directory(tmp_path):
    folder = top_folder("70b-64xH100")
    for name, text in folder.files.items():
        if name.endswith(".sh"):
            path = tmp_path / name
            path.write_text(text)
            subprocess.run(["bash", "-n", str(path)], check=True)
            assert "\ncd " not in text  # a relative TRAIN_SCRIPT or argument keeps meaning the caller's path
    assert '"$HERE/trainer_fsdp_config.json"' in folder.files["launch_trainer.sh"]
    assert '--main_process_port "${MASTER_PORT:-29500}"' in folder.files["launch_accelerate_fsdp.sh"]
    assert '--hostfile "$HERE/hostfile"' in folder.files["launch_deepspeed.sh"]


def test_parse_targets():
    assert parse_targets("torchtitan, deepspeed") == ("deepspeed", "torchtitan")
    assert len(parse_targets("all")) == 6
    with pytest.raises(PlannerError, match="unknown launch target"):
        parse_targets("deepspeed,slurm")


# ---- CLI -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "tiny"
    result = CliRunner().invoke(
        main,
        [
            "solve",
            "--model",
            "examples/tiny-llama.yaml",
            "--budget",
            "2xA100",
            "--seq-len",
            "64",
            "--global-batch",
            "8",
            "--engine",
            "fsdp",
            "--zero",
            "3",
            "--out",
            str(out),
            "--emit",
            "torchrun",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_solve_emit_writes_the_top_plan_folder(report_dir):
    folder = report_dir / "launch-1"
    assert {p.name for p in folder.iterdir()} == {
        "README.md",
        "plan.json",
        "launch_torchrun.sh",
        "train.py",
        "slurm.sbatch",
        "pytorchjob.yaml",
    }
    data = json.loads((folder / "plan.json").read_text())
    assert data["variants"]["fsdp"]["origin"] == "plan"
    assert data["chosen"]["plan"] == data["variants"]["fsdp"]["plan"]


def test_planner_launch_is_deterministic(report_dir, tmp_path):
    texts = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        result = CliRunner().invoke(main, ["launch", f"{report_dir}/report.json#2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        texts.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert texts[0] == texts[1]
    assert "launch_megatron.sh" in texts[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["launch", "nowhere/report.json"], "no solve report at nowhere/report.json"),
        (["launch", "{report}/report.json#99"], "there is no rank 99"),
        (["launch", "{report}#x"], "cannot read the plan rank"),
        (["launch", "{report}#x", "--rank", "2"], "cannot read the plan rank"),
        (["launch", "{report}", "--rank", "0"], "--rank must be 1 or more"),
        (["launch", "{report}", "--targets", "slurm"], "unknown launch target(s): slurm"),
        (["solve", "--model", "13b", "--budget", "16xA100", "--emit", "slurm"], "unknown launch target(s): slurm"),
    ],
)
def test_launch_errors_are_one_line_exit_2(report_dir, tmp_path, args, message):
    args = [a.replace("{report}", str(report_dir)) for a in args]
    result = CliRunner().invoke(main, args + (["--out", str(tmp_path / "x")] if args[0] == "launch" else []))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_every_valid_plan_gets_a_launch_folder_without_error():
    """A sweep of engines, ZeRO stages, precisions, offload, TP/PP/CP, checkpointing and optimizers on 16
    H100s: every plan the rules accept yields a folder (targets it cannot run are listed as skipped), and
    every translated variant fits."""
    import itertools

    count = 0
    for engine, zero, precision, offload, (tp, pp, cp), checkpointing, optimizer in itertools.product(
        ("deepspeed", "fsdp", "megatron"),
        (0, 1, 2, 3),
        ("bf16", "fp16", "fp32", "pure-bf16", "fp8"),
        ("none", "optimizer", "optimizer+params"),
        ((1, 1, 1), (2, 1, 1), (2, 2, 1), (1, 1, 2)),
        ("none", "selective", "full"),
        ("adamw", "sgd"),
    ):
        try:
            model, gpu, plan = plan_for(
                "llama-3.1-8b",
                "H100",
                engine=engine,
                gpus=16,
                zero=zero,
                precision=precision,
                offload=offload,
                tp=tp,
                pp=pp,
                cp=cp,
                checkpointing=checkpointing,
                optimizer=optimizer,
                micro_batch=1,
                global_batch=64,
                seq_len=4096,
            )
        except PlannerError:
            continue
        folder = build_launch_folder(evaluate(model, gpu, plan), TARGETS, None, "sweep")
        count += 1
        assert "README.md" in folder.files and "plan.json" in folder.files
        for variant in folder.variants.values():
            if variant.origin == "translated":
                assert variant.estimate.memory.fits
    assert count > 900


def test_launch_from_a_report_keeps_its_network_override(tmp_path):
    # The report records --network-gbps-per-gpu; planner launch re-estimates the plan on that network, so it
    # finds the reported figures again (a different network would print "the catalogs or models changed").
    out = tmp_path / "report"
    args = ["solve", "--model", "13b", "--budget", "16xA100", "--network-gbps-per-gpu", "25", "--top", "3"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["network_gbps_per_gpu"] == 25.0
    launched = CliRunner().invoke(main, ["launch", f"{out}/report.json#1", "--out", str(tmp_path / "l1")])
    assert launched.exit_code == 0, launched.output
    assert "changed since the report" not in launched.output


@pytest.mark.parametrize(
    "model, message",
    [
        (
            "gemma-2-9b",
            "cannot build gemma-2-9b: it has no norms after attention and MLP, no attention soft-capping, "
            "no final-logit soft-capping",
        ),
        ("gemma-3-4b", "cannot build gemma-3-4b: it has no norms after attention and MLP"),
        ("olmo-2-7b", "it has no query/key norms over the whole projection"),
    ],
)
def test_megatron_refuses_models_its_gpt_layer_cannot_build(model, message):
    estimate = evaluate(*plan_for(model, "H100", engine="megatron", gpus=8, zero=1, micro_batch=1, global_batch=8))
    with pytest.raises(PlannerError, match=message):
        megatron_arguments(estimate.model, estimate.plan)
    folder = build_launch_folder(estimate, ("megatron",), None, "test")
    assert message in folder.skipped["megatron"] and "megatron_args.txt" not in folder.files
    assert len(folder.skipped["megatron"].splitlines()) == 1


def test_megatron_windows_and_per_head_qk_norm():
    qwen3 = evaluate(*plan_for("qwen3-8b", "H100", engine="megatron", gpus=8, zero=1, micro_batch=1, global_batch=8))
    assert "--qk-layernorm" in megatron_arguments(qwen3.model, qwen3.plan)
    # Mistral-7B v0.1: sliding_window 4096 on every layer -> flash-attn's left window 4095 (transformers
    # passes sliding_window - 1), no full-attention layers.
    text = " ".join(megatron_arguments(hand_estimate("megatron-cp-full").model, hand_estimate("megatron-cp-full").plan))
    assert "--window-size 4095,0 " in text and "--window-attn-skip-freq" not in text
    llama = hand_estimate("megatron-tp-pp")
    assert not {"--window-size", "--qk-layernorm"} & set(megatron_arguments(llama.model, llama.plan))


def test_torchrun_refuses_models_train_py_cannot_build():
    estimate = evaluate(*plan_for("gemma-2-2b", "A100-80GB", engine="fsdp", gpus=8, zero=3, global_batch=32))
    folder = build_launch_folder(estimate, ("torchrun",), None, "test")
    assert (
        "no norms after attention and MLP, no logit soft-capping, no sliding-window attention"
        in (folder.skipped["torchrun"])
    )


def test_launch_readme_says_amd_gpus_run_the_same_commands_on_rocm():
    mi300x = evaluate(*plan_for("llama-2-7b", "MI300X", engine="fsdp", gpus=8, zero=3, global_batch=32))
    readme = build_launch_folder(mi300x, ("torchrun", "megatron"), None, "test").files["README.md"]
    assert "On MI300X (AMD, ROCm): the same scripts and commands run with ROCm builds of PyTorch" in readme
    assert "launch_torchrun.sh" in readme and "launch_megatron.sh" in readme
    h100 = evaluate(*plan_for("llama-2-7b", "H100", engine="fsdp", gpus=8, zero=3, global_batch=32))
    assert "ROCm" not in build_launch_folder(h100, ("torchrun",), None, "test").files["README.md"]
