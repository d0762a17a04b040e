"""Exact values of every memory term, each derived by hand in the comment beside it."""

import pytest
from tests.conftest import plan_for

from planner.catalog import load_gpu
from planner.catalog.models import Architecture
from planner.memory import activations as act
from planner.memory import estimate_memory
from planner.memory.buffers import gathered_parameter_bytes
from planner.memory.runtime import DEFAULT_OVERHEADS, nccl_communicators
from planner.memory.stages import first_and_last_stage
from planner.memory.states import optimizer_bytes_per_param, state_layout, state_term_bytes
from planner.units import GIB

P_7B = 6_738_415_616


def _states(**kwargs) -> dict[str, float]:
    model, _, plan = plan_for(**kwargs)
    stage = first_and_last_stage(model.architecture, plan)[0]
    terms = state_layout(model.architecture, plan)
    return {t.name: state_term_bytes(t, stage.params, plan.shard_degree) for t in terms}


# ---- activations -------------------------------------------------------------------------------


def test_hf_llama_layer_matches_traced_45_5_bytes_per_token_and_h():
    # LlamaRMSNorm x2: fp32 input (4h) + fp32 rstd (4 B) + normalised bf16 (2h) + weighted output saved by
    # the linear (2h); SDPA: q, k, v (2h each) + output (2h) + fp32 lse per head; SwiGLU: 4 f-wide tensors.
    model, _, plan = plan_for(seq_len=2048)
    layer = act.layer_activations(model.architecture, plan)
    h, f = 4096, 11008
    assert layer.norms == 16 * h + 2 * 4
    assert layer.qkv == 6 * h
    assert layer.attention_core == 4 * 32
    assert layer.attention_output == 2 * h
    assert layer.mlp == 8 * f
    assert (layer.total - layer.attention_core - 8) / h == 45.5  # MemTracker slope in shared/notes §1.4
    # transformers' LlamaDecoderLayer traced on fake tensors (calibration/traced/llama-2.yaml): 186,504 B/token
    assert layer.total == 186_504


def test_megatron_te_layer_with_gqa():
    # TE LayerNormLinear x2: input + normalised output (2h + 2h) + fp32 stats (8 B);
    # flash with native GQA: q (2h) + k, v (2 kv each); fused SwiGLU: fc1 out (4f) + product (2f).
    model, _, plan = plan_for(model="llama-3-8b", engine="megatron")
    layer = act.layer_activations(model.architecture, plan)
    assert layer.norms == 2 * (4 * 4096 + 8)
    assert layer.qkv == 2 * (4096 + 2 * 1024)
    assert layer.mlp == 6 * 14336
    assert layer.total == 32784 + 12288 + 128 + 8192 + 86016


def test_sequence_parallel_divides_every_megatron_term():
    model, _, plan1 = plan_for(model="llama-3-8b", engine="megatron")
    _, _, plan2 = plan_for(model="llama-3-8b", engine="megatron", gpus=2, tp=2)
    assert (
        act.layer_activations(model.architecture, plan2).total
        == act.layer_activations(model.architecture, plan1).total / 2
    )


def test_torch_tp_saves_all_gathered_linear_inputs():
    # FSDP engine (torchtitan DTensor TP): norm work is sharded, the gathered linear input is not.
    model, _, plan = plan_for(model="llama-3-8b", engine="fsdp", zero=3, gpus=2, tp=2)
    h = 4096
    assert act.layer_activations(model.architecture, plan).norms == 2 * ((4 * h + 4 + 2 * h) / 2 + 2 * h)


def test_eager_attention_stores_fp32_softmax_and_its_bf16_copy():
    model, _, plan = plan_for(seq_len=2048, flash_attention=False)
    assert act.layer_activations(model.architecture, plan).attention_core == 32 * 2048 * (4 + 2)


def test_attention_dropout_adds_mask_and_output(data_dir):
    from planner.catalog import load_model

    gpt2 = load_model(str(data_dir / "hf_configs" / "gpt2.json")).architecture
    _, _, plan = plan_for(seq_len=1024, flash_attention=False)
    layer = act.layer_activations(gpt2, plan)
    assert layer.attention_core == 12 * 1024 * (4 + 2 + 1 + 2)
    assert layer.dropout_masks == 2 * 768


def test_full_checkpointing_keeps_the_block_input():
    model, _, plan = plan_for(checkpointing="full")
    assert act.saved_bytes_per_layer(model.architecture, plan) == 2 * 4096
    _, _, autocast = plan_for(checkpointing="full", engine="fsdp", zero=0)
    assert act.saved_bytes_per_layer(model.architecture, autocast) == 4 * 4096  # fp32 residual stream


def test_torchtitan_selective_policy_keeps_every_other_matmul():
    # block input 2h + wq (2q) + wv (2kv) + w1 (2f) + w2 (2h) + SDPA output (2q) + lse
    model, _, plan = plan_for(model="llama-3-8b", engine="fsdp", zero=3, checkpointing="selective")
    h, kv, f = 4096, 1024, 14336
    assert act.saved_bytes_per_layer(model.architecture, plan) == 2 * h + 2 * (h + kv + f) + 2 * h + 2 * h + 4 * 32


def test_compiled_block_keeps_matmul_outputs_only():
    # residual inputs of both norms (2h each + rstd), q/k/v before expansion, output, lse, two up-projections
    model, _, plan = plan_for(model="llama-3.2-3b", engine="fsdp", zero=3, compile=True)
    assert act.layer_activations(model.architecture, plan).total == (
        2 * (2 * 3072 + 4) + 2 * (3072 + 2 * 1024) + 4 * 24 + 2 * 3072 + 2 * 2 * 8192
    )


@pytest.mark.parametrize(
    "loss,engine,per_token",
    [
        ("standard", "deepspeed", 12 * 32000),  # fp32 log-softmax output + its two gradients in backward
        ("standard", "megatron", 2 * 32000 + 8 * 32000),  # bf16 logits + fp32 cast + max-subtracted copy
        ("chunked", "deepspeed", 2 * 32000 + 12 * 32000 / 8),
        ("fused", "deepspeed", (2 + 6) * 4096),
        # flash-attn's CrossEntropyLoss: bf16 logits + their bf16 gradient, fp32 lse and loss per row
        ("flash-ce", "deepspeed", 2 * 2 * 32000 + 4 + 4),
        # transformers <= 4.48: bf16 logits + fp32 upcast + its shifted fp32 copy + log-softmax output
        ("shifted", "deepspeed", 2 * 32000 + 3 * 4 * 32000),
    ],
)
def test_logits_and_loss_per_token(loss, engine, per_token):
    model, _, plan = plan_for(loss=loss, engine=engine, zero=1 if engine == "megatron" else 0)
    assert act.logits_bytes(model.architecture, plan) == per_token


def test_shifted_copy_in_fp32_training_leaves_the_backward_peak():
    # In fp32 the upcast is the logits themselves: logits + shifted copy + log-softmax output = the backward's 12 x V.
    model, _, plan = plan_for(loss="shifted", engine="fsdp", precision="fp32")
    assert act.logits_bytes(model.architecture, plan) == 12 * 32000


def test_shifted_loss_is_hugging_face_code_only():
    from planner.errors import PlanError

    with pytest.raises(PlanError, match="shifted"):
        plan_for(loss="shifted", engine="megatron", zero=1)


def test_vocab_parallel_loss_divides_by_tp():
    model, _, plan = plan_for(engine="megatron", gpus=4, tp=4)
    assert act.logits_bytes(model.architecture, plan) == 10 * 32000 / 4


# ---- states --------------------------------------------------------------------------------------


def test_deepspeed_zero3_is_16_bytes_per_param_sharded_plus_step_temporaries():
    s = _states(gpus=8, zero=3)
    assert s["weights"] == 2 * P_7B / 8
    assert s["gradients"] == 2 * P_7B / 8
    assert s["master_weights"] == 4 * P_7B / 8
    assert s["optimizer_states"] == 8 * P_7B / 8
    assert s["optimizer_step_temporaries"] == 6 * P_7B / 8  # bf16 flat copy + fp32 cast of the partition


def test_deepspeed_zero1_keeps_full_low_precision_grads():
    s = _states(gpus=8, zero=1)
    assert s["weights"] == 2 * P_7B and s["gradients"] == 2 * P_7B
    assert s["master_weights"] + s["optimizer_states"] == 12 * P_7B / 8


def test_deepspeed_zero0_flat_fp32_gradients_at_step():
    s = _states(gpus=8, zero=0)
    assert sum(v for k, v in s.items() if k != "optimizer_step_temporaries") == 16 * P_7B
    assert s["optimizer_step_temporaries"] == 4 * P_7B


def test_megatron_distributed_optimizer_is_6_plus_12_over_d():
    s = _states(gpus=4, zero=1, engine="megatron")
    assert sum(s.values()) == (6 + 12 / 4) * P_7B


def test_megatron_without_distributed_optimizer_is_18():
    assert sum(_states(gpus=4, zero=0, engine="megatron").values()) == 18 * P_7B


def test_fsdp2_mixed_precision_shards_fp32_params_grads_and_adam():
    s = _states(gpus=8, zero=3, engine="fsdp")
    assert s == {
        "weights": 4 * P_7B / 8,
        "gradients": 4 * P_7B / 8,
        "optimizer_states": 8 * P_7B / 8,
        "unsharded_gradient_accumulators": 0,
    }


def test_fsdp_under_pipelining_accumulates_unsharded_fp32_gradients():
    model, _, plan = plan_for(gpus=8, pp=2, zero=2, engine="fsdp", global_batch=16)
    stage = first_and_last_stage(model.architecture, plan)[0]
    terms = {t.name: t for t in state_layout(model.architecture, plan)}
    assert state_term_bytes(terms["unsharded_gradient_accumulators"], stage.params, plan.shard_degree) == (
        4 * stage.params
    )


def test_ddp_with_autocast_is_20_bytes_per_param():
    s = _states(gpus=8, zero=0, engine="fsdp")
    assert sum(s.values()) == 20 * P_7B  # fp32 weights, grads, DDP bucket copy, Adam


def test_pure_bf16_deepspeed_keeps_a_bf16_master():
    # DeepSpeedExamples bf16_master_weights_and_grads: 2 + 2 + 2 + 4 = 10 bytes per parameter.
    s = _states(gpus=4, zero=3, precision="pure-bf16")
    persistent = s["weights"] + s["gradients"] + s["master_weights"] + s["optimizer_states"]
    assert persistent == 10 * P_7B / 4


def test_optimizer_bytes_per_param():
    model, _, plan = plan_for()
    arch = model.architecture
    assert optimizer_bytes_per_param(arch, plan) == 8
    assert optimizer_bytes_per_param(arch, plan_for(optimizer="adamw-8bit")[2]) == 2 * (1 + 4 / 256)
    assert optimizer_bytes_per_param(arch, plan_for(optimizer="sgd")[2]) == 4
    assert optimizer_bytes_per_param(arch, plan_for(precision="pure-bf16", zero=1)[2]) == 4


def test_adafactor_factored_moments_by_hand():
    tiny = Architecture(
        num_layers=1,
        hidden_size=4,
        num_attention_heads=2,
        num_kv_heads=2,
        ffn_hidden_size=8,
        vocab_size=10,
        tied_embeddings=False,
        norm="rmsnorm",
        mlp="swiglu",
        position_embedding="rope",
        max_position_embeddings=16,
    )
    _, _, plan = plan_for(optimizer="adafactor")
    # vectors: 3 norms x 4 x 4 B; matrices: q,k,v,o 4x4 -> 4*(4+4); gate, up, down 8x4 -> 4*(8+4);
    # embedding and head 10x4 -> 4*(10+4). Parameters: 252.
    factored = 3 * 16 + 4 * 32 + 3 * 48 + 2 * 56
    assert optimizer_bytes_per_param(tiny, plan) == pytest.approx(factored / 252)


# ---- buffers, runtime, stages, phases --------------------------------------------------------------


def test_pipeline_in_flight_micro_batches_follow_1f1b():
    # Stage i holds min(pp - i, grad_accum): the first pp (or all micro-batches), the last one.
    model, _, plan = plan_for(model="llama-2-7b", engine="megatron", gpus=4, pp=4, global_batch=8)
    assert [int(s.in_flight_micro_batches) for s in first_and_last_stage(model.architecture, plan)] == [4, 1]
    _, _, short = plan_for(model="llama-2-7b", engine="megatron", gpus=4, pp=4, global_batch=2)
    assert [int(s.in_flight_micro_batches) for s in first_and_last_stage(model.architecture, short)] == [2, 1]


def test_pipeline_stages_hold_embedding_and_head():
    model, _, plan = plan_for(engine="megatron", gpus=2, pp=2, global_batch=4)
    first, last = first_and_last_stage(model.architecture, plan)
    assert first.embedding_params == 32000 * 4096 and first.head_params == 0
    assert last.head_params == 32000 * 4096 + 4096 and last.embedding_params == 0


def test_deepspeed_zero3_gathered_window():
    # Reuse distance 1e9: half of it plus the largest module stay gathered (capped at 1e9 live), plus the
    # largest module's bf16 gradient: 2 * (min(1e9, 5e8 + V*h) + V*h).
    model, _, plan = plan_for(gpus=8, zero=3)
    stage = first_and_last_stage(model.architecture, plan)[0]
    vh = 32000 * 4096
    assert gathered_parameter_bytes(stage, plan) == 2 * (min(1e9, 5e8 + vh) + vh)


def test_nccl_counts_one_communicator_per_parallel_group():
    _, _, plan = plan_for(engine="megatron", zero=1, gpus=8, tp=2)
    groups = {k: float(v) for k, v in nccl_communicators(plan).items()}
    assert groups == {
        "data_parallel": DEFAULT_OVERHEADS.nccl_gib_per_group,
        "tensor_parallel": DEFAULT_OVERHEADS.nccl_gib_per_pair,
        "context_parallel": 0.0,
        "pipeline": 0.0,
    }
    assert sum(nccl_communicators(plan_for()[2]).values()) == 0


def test_gradients_join_the_loss_phase_only_with_accumulation():
    # ZeRO-1 keeps full bf16 gradients (2 bytes/param) from the first backward until the step.
    model, gpu, plan = plan_for(gpus=8, zero=1, micro_batch=1)
    _, _, accumulating = plan_for(gpus=8, zero=1, micro_batch=1, global_batch=16)
    single = estimate_memory(model, gpu, plan).phases_gib["loss"]
    accumulated = estimate_memory(model, gpu, accumulating).phases_gib["loss"]
    assert accumulated - single == pytest.approx(2 * P_7B / GIB)


def test_peak_is_allocated_plus_fragmentation_context_and_nccl():
    model, gpu, plan = plan_for(gpus=8, zero=2, micro_batch=2)
    m = estimate_memory(model, gpu, plan)
    o = DEFAULT_OVERHEADS
    assert m.reserved_peak_gib == pytest.approx(m.allocated_peak_gib * (1 + o.allocator_fragmentation))
    assert m.peak_gib == pytest.approx(m.reserved_peak_gib + o.cuda_context_gib + o.nccl_gib_per_group)
    assert sum(m.breakdown_gib.values()) == pytest.approx(m.peak_gib)
    assert m.usable_gib == pytest.approx(80 * 0.95)


def test_offload_moves_states_to_host_and_counts_node_ram():
    model, gpu, plan = plan_for(gpus=8, zero=3, offload="optimizer+params")
    m = estimate_memory(model, gpu, plan)
    for term in ("weights", "gradients", "master_weights", "optimizer_states"):
        assert m.breakdown_gib[term] == 0
    # 2 + 2 + 4 + 8 bytes of states and 6 of step temporaries per parameter of each rank's shard, 8 ranks per node
    assert m.host_ram_gib_per_node == pytest.approx(22 * P_7B / 8 * 8 / GIB)
    assert m.host_ram_capacity_gib == load_gpu("A100").node.host_ram_gib and m.host_ram_fits


def test_peak_takes_the_most_loaded_pipeline_stage():
    model, gpu, plan = plan_for(engine="megatron", gpus=4, pp=4, global_batch=16, seq_len=4096)
    m = estimate_memory(model, gpu, plan)
    assert m.peak_stage == 0 and m.stage_peaks_gib[0] == max(m.stage_peaks_gib)
