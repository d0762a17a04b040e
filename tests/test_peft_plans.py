"""Fine-tuning methods (LoRA, QLoRA, freeze): plan checks, exact memory and FLOPs terms, search, CLI.

Parameter counts of Llama-2-7B used below (h = 4096, f = 11008, 32 layers, V = 32000):
* per block, linears: 4 h^2 + 3 h f = 67,108,864 + 135,266,304 = 202,375,168; with two norms 202,383,360;
* embedding + LM head + final norm: 2 x 32000 x 4096 + 4096 = 262,148,096; total 6,738,415,616;
* LoRA r = 16 on all linears: 16 x (4 x 8192 + 3 x 15104) = 1,249,280 per block, 39,976,960 in all (the
  figure PEFT's print_trainable_parameters gives for this model; tests/engines/test_peft.py checks it).
"""

from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import plan_for

from planner.architecture import lora_params_per_layer, quantized_params_per_layer
from planner.cli import main
from planner.estimate import trainable_params
from planner.memory import activations as act
from planner.memory import estimate_memory
from planner.memory.model import stage_phases
from planner.memory.quantization import quantization_constant_bytes
from planner.memory.stages import first_and_last_stage
from planner.memory.states import group_params, state_layout, state_term_bytes
from planner.performance import comm
from planner.performance.flops import flops_per_token
from planner.performance.model import HBM_EFFICIENCY, _dp_exposed_s, dequantization_s
from planner.search.solve import SolveRequest, solve

P_7B = 6_738_415_616
BLOCK_LINEARS = 202_375_168
BLOCK = 202_383_360
OUTSIDE_BLOCKS = 262_148_096
LORA_R16_ALL = 39_976_960


def _states(**kwargs) -> dict[str, float]:
    model, _, plan = plan_for(**kwargs)
    stage = first_and_last_stage(model.architecture, plan)[0]
    return {
        t.name: state_term_bytes(t, group_params(t, stage), plan.shard_degree)
        for t in state_layout(model.architecture, plan)
    }


def test_parameter_counts():
    model, _, plan = plan_for(method="lora")
    arch = model.architecture
    assert lora_params_per_layer(arch, 16, "all-linear") * 32 == LORA_R16_ALL
    assert lora_params_per_layer(arch, 8, "attention") * 32 == 8 * 4 * 8192 * 32
    assert quantized_params_per_layer(arch) == BLOCK_LINEARS
    assert 32 * BLOCK + OUTSIDE_BLOCKS == P_7B
    assert trainable_params(model, plan) == LORA_R16_ALL
    assert trainable_params(*plan_for(method="freeze", trainable_layers=3)[::2]) == 3 * BLOCK
    assert trainable_params(*plan_for()[::2]) == P_7B


def test_default_plan_is_full_fine_tuning():
    _, _, plan = plan_for()
    assert (plan.method, plan.lora_rank, plan.lora_targets, plan.lora_dropout, plan.trainable_layers) == (
        "full",
        16,
        "all-linear",
        0.0,
        0,
    )
    assert not plan.peft


def test_lora_states_single_gpu():
    # HF Trainer on one GPU (fsdp engine, ZeRO-0): fp32 adapters (PEFT autocast_adapter_dtype), fp32 grads,
    # AdamW 8 B; the bf16 base is frozen; no DDP buckets on one rank.
    s = _states(engine="fsdp", method="lora")
    assert s["adapter_weights"] == 4 * LORA_R16_ALL
    assert s["adapter_gradients"] == 4 * LORA_R16_ALL
    assert s["adapter_optimizer_states"] == 8 * LORA_R16_ALL
    assert s["ddp_gradient_buckets"] == 0
    assert s["frozen_weights"] == 2 * P_7B
    assert "weights" not in s and "quantized_weights" not in s


def test_qlora_states():
    s = _states(engine="fsdp", method="qlora")
    assert s["quantized_weights"] == 32 * BLOCK_LINEARS / 2
    # q, k, v, o: 16,777,216 weights = 262,144 blocks of 64 -> 262,144 uint8 absmax + 1,024 fp32 -> 266,240 B;
    # gate, up, down: 45,088,768 = 704,512 blocks -> 704,512 + 4 x 2,752 = 715,520 B.
    assert quantization_constant_bytes(16_777_216) == 266_240
    assert quantization_constant_bytes(45_088_768) == 715_520
    assert s["quantization_constants"] == pytest.approx(32 * (4 * 266_240 + 3 * 715_520))
    assert s["frozen_weights"] == 2 * OUTSIDE_BLOCKS + 2 * 32 * (BLOCK - BLOCK_LINEARS)
    model, gpu, plan = plan_for(engine="fsdp", method="qlora")
    m = estimate_memory(model, gpu, plan)
    assert m.breakdown_gib["dequantized_weight_buffer"] * 2**30 == pytest.approx(45_088_768 * (2 + 4 / 64))


def test_bitsandbytes_constants_stay_whole_on_every_rank():
    # FSDP1 and ZeRO-3 shard parameters; bitsandbytes' quant_state is not one, so each rank keeps all of it.
    # torchao's NF4Tensor (FSDP2) shards its scales with the packed data.
    whole = _states(engine="fsdp", method="qlora")["quantization_constants"]
    for kwargs in ({"engine": "fsdp", "fsdp_version": 1}, {"engine": "deepspeed"}):
        s = _states(method="qlora", gpus=8, zero=3, **kwargs)
        assert s["quantization_constants"] == pytest.approx(whole), kwargs
        assert s["quantized_weights"] == 32 * BLOCK_LINEARS / 2 / 8
    assert _states(engine="fsdp", method="qlora", gpus=8, zero=3)["quantization_constants"] == pytest.approx(whole / 8)


def test_fsdp1_stream_blocks_of_a_qlora_unit_are_its_packed_storage():
    from planner.memory.buffers import fsdp1_stream_blocks_bytes

    adapters = LORA_R16_ALL // 32
    model, _, plan = plan_for(engine="fsdp", method="qlora", gpus=8, zero=3, fsdp_version=1)
    stage = first_and_last_stage(model.architecture, plan)[0]
    block = 2 * (BLOCK - BLOCK_LINEARS + adapters) + BLOCK_LINEARS / 2  # packed NF4, constants not gathered
    head = 2 * (32000 * 4096 + 4096)  # the root unit (final norm + LM head) is larger
    assert block < head
    assert fsdp1_stream_blocks_bytes(stage, plan) == pytest.approx(2 * head + 4 * adapters * (1 + 1 / 8))


def test_deepspeed_lora_and_freeze_states():
    # DeepSpeed casts the module to bf16 and keeps an fp32 master of what trains; ZeRO-3 shards the frozen base.
    s = _states(engine="deepspeed", method="lora", gpus=8, zero=3)
    assert s["adapter_weights"] == 2 * LORA_R16_ALL / 8
    assert s["master_weights"] == 4 * LORA_R16_ALL / 8
    assert s["frozen_weights"] == 2 * P_7B / 8
    f = _states(engine="deepspeed", method="freeze", trainable_layers=2)
    assert f["weights"] == 2 * 2 * BLOCK
    assert f["optimizer_states"] == 8 * 2 * BLOCK
    assert f["frozen_weights"] == 2 * (P_7B - 2 * BLOCK)


def test_lora_block_activations_exact():
    # norms: fp32 input + rstd (the frozen weight keeps no normalised copy): 2 x (4h + 4);
    # SDPA: q, k, v, output (2h each) + lse (4 x 32); MLP: gate, act(gate), up (2f each);
    # adapters (fp32 under autocast): a bf16 copy of each input (q, k, v, o, gate, up: h; down: f) + r-wide outputs.
    model, _, plan = plan_for(engine="fsdp", method="lora")
    layer = act.layer_activations(model.architecture, plan)
    h, f = 4096, 11008
    assert layer.norms == 2 * (4 * h + 4)
    assert layer.qkv + layer.attention_output == 8 * h
    assert layer.mlp == 6 * f
    assert layer.adapter_inputs == 2 * (6 * h + f) + 7 * 2 * 16
    # bf16 adapters (DeepSpeed) share their inputs: the two norm outputs, the attention output, the MLP product.
    _, _, ds = plan_for(engine="deepspeed", method="lora")
    assert act.layer_activations(model.architecture, ds).adapter_inputs == 2 * (3 * h + f) + 7 * 2 * 16
    # dropout: each adapter keeps its own dropped-out copy and a one-byte mask.
    _, _, dropout = plan_for(engine="fsdp", method="lora", lora_dropout=0.05)
    assert act.layer_activations(model.architecture, dropout).adapter_inputs == 3 * (6 * h + f) + 7 * 2 * 16


def test_adapters_that_need_no_cast_share_their_inputs():
    # pure bf16 (torchtune) and fp32: the adapters have the input's dtype, so lora_A keeps the tensor itself,
    # one per distinct input (attention norm out, attention out, MLP norm out: h each; MLP product: f).
    model, _, plan = plan_for(engine="fsdp", method="lora", precision="pure-bf16")
    h, f = 4096, 11008
    assert act.layer_activations(model.architecture, plan).adapter_inputs == 2 * (3 * h + f) + 7 * 2 * 16
    _, _, fp32 = plan_for(engine="fsdp", method="lora", precision="fp32")
    assert act.layer_activations(model.architecture, fp32).adapter_inputs == 4 * (3 * h + f) + 7 * 4 * 16


def test_qlora_base_linears_keep_their_inputs():
    # bitsandbytes' MatMul4Bit saves (A, B): every 4-bit linear keeps its input, even without an adapter
    # (attention targets: the MLP's inputs are kept by the base gate/up/down); PEFT's 4-bit LoRA layer does
    # not cast under autocast, so the adapters share those tensors. Sharded (FSDP FULL_SHARD): no kbit preparation.
    h, f = 4096, 11008
    model, _, attn = plan_for(engine="fsdp", method="qlora", lora_targets="attention", gpus=8, zero=3)
    assert not act.kbit_prepared_norms(attn)
    assert act.layer_activations(model.architecture, attn).adapter_inputs == 2 * (3 * h + f) + 4 * 2 * 16
    _, _, dropout = plan_for(engine="fsdp", method="qlora", lora_targets="attention", lora_dropout=0.1, gpus=8, zero=3)
    own = 3 * (4 * h)  # q, k, v, o: a dropped-out bf16 copy and a one-byte mask each
    assert act.layer_activations(model.architecture, dropout).adapter_inputs == own + 2 * (3 * h + f) + 4 * 2 * 16


def test_kbit_prepared_qlora_runs_fp32_norms_and_residual():
    # One GPU, bf16 autocast: prepare_model_for_kbit_training's fp32 norms make the norm outputs, the MLP and the
    # residual stream fp32. Each reader of an fp32 tensor keeps its own bf16 copy: q, k, v adapters and base
    # linears (6 x h), gate and up base linears (2 x h), down's base linear (f); o's adapter and base linear share
    # the bf16 attention output (h). The SwiGLU tensors are fp32 (3 x 4f) and a checkpoint keeps 4 x h.
    h, f = 4096, 11008
    model, _, plan = plan_for(engine="fsdp", method="qlora", lora_targets="attention")
    assert act.kbit_prepared_norms(plan) and act.residual_bytes(plan) == 4
    layer = act.layer_activations(model.architecture, plan)
    assert layer.adapter_inputs == 2 * (6 * h + h + 2 * h + f) + 4 * 2 * 16
    assert layer.mlp == 3 * 4 * f
    assert act.checkpoint_input_bytes(model.architecture, plan) == 4 * h
    _, _, lora = plan_for(engine="fsdp", method="lora")
    assert not act.kbit_prepared_norms(lora) and act.residual_bytes(lora) == 2


def test_fsdp_gathers_the_frozen_base_as_stored_and_unshards_only_adapter_gradients():
    # FULL_SHARD: the working unit (largest of block / embedding / head, in bf16) + gradients and fp32 reduce
    # buffer of what trains in a block + the prefetched block. LoRA: a block is 2 bytes x (its weights + its
    # adapters); QLoRA: its linears in NF4 with their constants.
    from planner.memory.buffers import gathered_parameter_bytes
    from planner.memory.quantization import nf4_storage_bytes_per_param

    adapters = LORA_R16_ALL // 32
    model, _, lora = plan_for(engine="fsdp", method="lora", gpus=8, zero=3)
    stage = first_and_last_stage(model.architecture, lora)[0]
    block = 2 * (BLOCK + adapters)
    head = 2 * (32000 * 4096 + 4096)  # the largest edge unit: final norm + LM head
    assert gathered_parameter_bytes(stage, lora) == pytest.approx(max(block, head) + adapters * 6 + 2 * block)
    _, _, qlora = plan_for(engine="fsdp", method="qlora", gpus=8, zero=3)
    stage = first_and_last_stage(model.architecture, qlora)[0]
    nf4 = nf4_storage_bytes_per_param(model.architecture)
    block = 2 * (BLOCK - BLOCK_LINEARS + adapters) + nf4 * BLOCK_LINEARS
    assert gathered_parameter_bytes(stage, qlora) == pytest.approx(max(block, head) + adapters * 6 + 2 * block)


def test_freeze_keeps_activations_of_trained_blocks_only():
    # Blocks below the trained ones have no trainable parameter upstream: autograd records nothing there.
    def saved(layers):
        model, _, plan = plan_for(engine="fsdp", method="freeze", trainable_layers=layers)
        stage = first_and_last_stage(model.architecture, plan)[0]
        return stage_phases(model, plan, stage)["loss"]["activations"], model, plan

    two, model, plan = saved(2)
    all_blocks, _, _ = saved(32)
    per_layer = act.saved_bytes_per_layer(model.architecture, plan) * 2048
    assert all_blocks - two == pytest.approx(30 * per_layer)


def test_lora_flops():
    model, _, full = plan_for(engine="fsdp")
    _, _, lora = plan_for(engine="fsdp", method="lora")
    f, lf = flops_per_token(model.architecture, full), flops_per_token(model.architecture, lora)
    assert lf.block_matmuls == pytest.approx(f.block_matmuls * 2 / 3)  # no weight gradients
    assert lf.lm_head == pytest.approx(f.lm_head * 2 / 3)
    assert lf.attention == f.attention
    assert lf.adapter_matmuls == 6 * LORA_R16_ALL
    _, _, all_blocks = plan_for(engine="fsdp", method="freeze", trainable_layers=32)
    freeze = flops_per_token(model.architecture, all_blocks)
    assert freeze.block_matmuls == pytest.approx(f.block_matmuls)


def test_data_parallel_traffic_is_the_adapters_only():
    _, gpu, plan = plan_for(engine="fsdp", method="lora", gpus=8)
    _, total = _dp_exposed_s(plan, gpu, P_7B, 0.0, 0.0, LORA_R16_ALL)
    bandwidth = comm.group_bandwidth_gbps(gpu, 8, 1, 8)
    assert total == pytest.approx(comm.all_reduce_s(4 * LORA_R16_ALL, 8, bandwidth))


def test_qlora_dequantization_time():
    _, gpu, plan = plan_for(engine="fsdp", method="qlora")
    quantized = 32 * BLOCK_LINEARS
    expected = 2 * quantized * (0.5 + 1 / 64 + 2) / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)
    assert dequantization_s(gpu, plan, quantized) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lora", "--lora-rank", "0"], "--lora-rank must be"),
        (["--method", "lora", "--lora-rank", "4097"], "hidden size 4096"),
        (["--method", "qlora", "--precision", "fp32"], "QLoRA computes in bf16"),
        (
            ["--method", "qlora", "--precision", "fp8", "--engine", "fsdp", "--gpu", "H100-80GB"],
            "QLoRA computes in bf16",
        ),
        (["--method", "freeze", "--trainable-layers", "33"], "32 layers"),
        (["--method", "lora", "--engine", "megatron"], "Hugging Face PEFT"),
        (["--method", "lora", "--gpus", "2", "--tp", "2"], "data parallelism only"),
        (["--method", "lora", "--trainable-layers", "2"], "--method freeze only"),
        (["--method", "lora", "--lora-dropout", "1.5"], "--lora-dropout"),
    ],
)
def test_bad_method_input_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(main, ["estimate", "--model", "7b", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_estimate_json_carries_method_terms():
    import json

    result = CliRunner().invoke(main, ["estimate", "--model", "7b", "--method", "qlora", "--format", "json"])
    data = json.loads(result.output)
    assert data["model"]["trainable_params"] == LORA_R16_ALL
    assert data["plan"]["method"] == "qlora"
    for term in ("frozen_weights", "quantized_weights", "quantization_constants", "adapter_weights"):
        assert data["memory"]["breakdown_gib"][term] > 0
    assert sum(data["memory"]["breakdown_gib"].values()) == pytest.approx(data["memory"]["peak_gib"], abs=0.01)


def test_default_search_keeps_full_fine_tuning():
    result = solve(SolveRequest(model="7b", budget="8xA100", global_batch=64, seq_len=2048))
    from planner.search.candidates import CATEGORIES

    methods = {result.candidates.categories[g][CATEGORIES.index("method")] for g in result.candidates.group}
    assert methods == {"full"}


def test_solve_any_method_names_fastest_and_cheapest(tmp_path):
    args = ["solve", "--model", "7b", "--budget", "1xRTX-4090", "--method", "any", "--seq-len", "2048"]
    result = CliRunner().invoke(main, [*args, "--global-batch", "16", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    for method in ("full:", "lora:", "qlora:", "freeze:", "fastest:", "cheapest per token:"):
        assert method in result.output


def test_launch_writes_peft_files_and_refuses_full_training_stacks(tmp_path):
    import json

    out = tmp_path / "r"
    args = ["solve", "--model", "7b", "--budget", "8xA100", "--method", "qlora", "--seq-len", "2048"]
    result = CliRunner().invoke(main, [*args, "--global-batch", "64", "--out", str(out), "--emit", "all"])
    assert result.exit_code == 0, result.output
    folder = out / "launch-1"
    assert json.loads((folder / "peft_config.json").read_text())["r"] == 16
    bnb = json.loads((folder / "bnb_config.json").read_text())
    assert bnb["bnb_4bit_quant_type"] == "nf4" and bnb["bnb_4bit_use_double_quant"] is True
    assert not (folder / "torchtitan_plan.py").exists() and not (folder / "megatron_args.txt").exists()
    assert "train every parameter" in result.output and "Megatron-LM trains every parameter" in result.output


def test_lora_on_a_model_peft_cannot_wrap_is_one_line_exit_2(tmp_path):
    # A Megatron-only GPT (no Hugging Face implementation, no hf_model_type): nothing for PEFT to wrap.
    model = str(Path(__file__).resolve().parent / "data" / "models" / "gpt-megatron-7.5b.yaml")
    for command in (
        ["estimate", "--model", model, "--gpu", "A100-80GB", "--method", "qlora"],
        ["solve", "--model", model, "--budget", "1xA100-80GB", "--method", "lora", "--out", str(tmp_path / "r")],
    ):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert "no Hugging Face implementation" in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "r").exists()
    # full fine-tuning and freeze of the same model are still planned
    result = CliRunner().invoke(main, ["estimate", "--model", model, "--gpu", "A100-80GB", "--method", "freeze"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("engine", "zero", "fsdp_version", "bf16", "mixed_precision"),
    [("fsdp", 3, 2, False, "no"), ("fsdp", 2, 1, False, "no"), ("deepspeed", 3, 2, True, None)],
)
def test_pure_bf16_lora_launches_what_was_predicted(engine, zero, fsdp_version, bf16, mixed_precision):
    # The memory model counts bf16 adapters, gradients and optimizer states without autocast under pure-bf16.
    # Under FSDP/DDP the Trainer's bf16 flag (Accelerate's mixed precision) would upcast the trainable bf16
    # parameters to fp32, so it stays off; DeepSpeed's bf16 section needs it on and keeps bf16 weights itself.
    from planner.launch.accelerate import accelerate_fsdp_config
    from planner.launch.bundle import _peft_comments
    from planner.launch.trainer import trainer_arguments

    fields = dict(method="lora", engine=engine, zero=zero, fsdp_version=fsdp_version, gpus=2)
    model, _, plan = plan_for(precision="pure-bf16", **fields)
    assert trainer_arguments(plan, model)["bf16"] is bf16
    assert ("autocast_adapter_dtype=False" in " ".join(_peft_comments(plan))) is (engine != "deepspeed")
    if mixed_precision is not None:
        assert accelerate_fsdp_config(plan, model)["mixed_precision"] == mixed_precision
    # bf16 mixed precision keeps autocast (and the fp32 adapters PEFT makes, which that prediction counts)
    _, _, mixed = plan_for(precision="bf16", **fields)
    assert trainer_arguments(mixed, model)["bf16"] is True
