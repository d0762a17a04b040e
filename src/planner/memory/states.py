"""Model states: weights, gradients, master weights, optimizer states and the step's temporaries.

Bytes per parameter depend on the engine's bookkeeping, not on one global "16 bytes": the table in
`state_layout` follows the engines' source (facts and line references in
docs/research/engine-memory-facts.md):

| engine / precision            | weights  | grads        | master | optimizer | step temporaries |
|-------------------------------|----------|--------------|--------|-----------|------------------|
| DeepSpeed bf16/fp16, ZeRO-0   | 2        | 2            | 4      | 8         | 4 (flat fp32 grads, FP16_Optimizer) |
| DeepSpeed ZeRO-1              | 2        | 2            | 4/D    | 8/D       | 6/D (bf16 flat + fp32 grad partition) |
| DeepSpeed ZeRO-2              | 2        | 2/D          | 4/D    | 8/D       | 6/D |
| DeepSpeed ZeRO-3              | 2/D      | 2/D          | 4/D    | 8/D       | 6 x min(N/D, sub_group 1e9) |
| FSDP2 bf16 (ZeRO-2/3)         | 4/D fp32 sharded param = master | 4/D | - | 8/D | 0 (fused AdamW) |
| DDP + autocast (FSDP ZeRO-0)  | 4        | 4 + 4 (DDP buckets) | - | 8   | 0 (fused AdamW) |
| Megatron bf16, no dist-opt    | 2        | 4 (fp32 main_grad) | 4 | 8     | 0 (fused Adam) |
| Megatron distributed optimizer| 2        | 4            | 4/D    | 8/D       | 0 |
| pure bf16 (any engine)        | 2        | 2            | DeepSpeed keeps a bf16 master (2) | 4 | as above |
| fp32 (any engine)             | 4        | 4            | -      | 8         | as above |

D is the shard degree (data-parallel x context-parallel ranks). Optimizer bytes are for AdamW with
fp32 states; `optimizer_bytes_per_param` gives the others.
"""

from dataclasses import dataclass, replace
from typing import Literal

from planner.architecture import embedding_tensors, head_tensors, layer_tensors
from planner.catalog.models import Architecture
from planner.memory.buffers import gradient_reduce_bytes
from planner.memory.quantization import (
    NF4_BITS,
    NF4_BLOCKSIZE,
    constants_shard_with_weights,
    quantization_constant_bytes_per_param,
)
from planner.plan import Plan

Lifetime = Literal["persistent", "gradient", "step"]
ParamGroup = Literal["trainable", "frozen", "quantized"]
"""Which parameters a state term is counted over (planner.memory.stages.StageShard): those that train,
the frozen base weights kept in bf16, or the base weights stored in NF4 (QLoRA)."""
"""`persistent`: allocated once and alive in every phase. `gradient`: created during backward and freed by
`zero_grad(set_to_none=True)` after the step, so absent in the first micro-batch's forward. `step`: only
inside optimizer.step()."""

BNB_BLOCKSIZE = 256
"""bitsandbytes 8-bit optimizers keep one fp32 absmax per 256 values of each state
(Optimizer2State.init_state)."""

DEEPSPEED_SUB_GROUP_SIZE = 1_000_000_000
"""ZeRO-3 steps the optimizer one sub-group (<= 1e9 elements of this rank's partition) at a time
(DeepSpeedZeroConfig.sub_group_size default)."""

FP8_WEIGHT_CACHE_BYTES = 1
"""TransformerEngine keeps an FP8 copy of each weight between micro-batches (its weight cache): one byte
per parameter. Net effect seen by FlagPerf on Llama-3-8B TP2: +3 GiB (74 vs 71 GiB); this term gives
+3.5 GiB there. torchao's float8 (the FSDP engine) casts weights on the fly and keeps no copy."""


@dataclass(frozen=True)
class StateTerm:
    """One kind of per-parameter state: its bytes per parameter, whether it is sharded over the
    data-parallel group, when it exists, and whether CPU offload moves it to host memory. Bytes per
    parameter can depend on numeric plan fields (an array when plans are evaluated in bulk)."""

    name: str
    bytes_per_param: object
    sharded: bool
    lifetime: Lifetime = "persistent"
    offloaded: bool = False
    group: ParamGroup = "trainable"


PEFT_TERM_NAMES = {
    "weights": "adapter_weights",
    "gradients": "adapter_gradients",
    "optimizer_states": "adapter_optimizer_states",
}
"""Under LoRA/QLoRA the trained parameters are the adapters: their terms carry these names."""


def state_dtype_bytes(plan: Plan) -> int:
    """Bytes per element of optimizer states: bf16 in pure-bf16 training, fp32 otherwise."""
    return 2 if plan.precision == "pure-bf16" else 4


def optimizer_bytes_per_param(arch: Architecture, plan: Plan) -> float:
    """Optimizer state bytes per parameter.

    adamw: two moments (exp_avg, exp_avg_sq). adamw-8bit: two uint8 moments plus the fp32 block
    absmax (bitsandbytes). sgd: one momentum buffer. adafactor (transformers' default, no first moment):
    a row and a column second-moment vector per matrix, a full one per vector, averaged over the model."""
    state = state_dtype_bytes(plan)
    if plan.optimizer == "adamw":
        return 2 * state
    if plan.optimizer == "adamw-8bit":
        return 2 * (1 + 4 / BNB_BLOCKSIZE)
    if plan.optimizer == "sgd":
        return state
    tensors = (*layer_tensors(arch) * arch.num_layers, *embedding_tensors(arch), *head_tensors(arch))
    total = sum(t.numel for t in tensors)
    factored = sum(4 * (t.rows + t.cols) if t.is_matrix else 4 * t.numel for t in tensors)
    return factored / total


def _master_bytes(plan: Plan) -> int:
    """A separate high-precision copy of the weights: fp32 in mixed precision; DeepSpeed's
    bf16_master_weights_and_grads keeps a bf16 one in pure-bf16; none in fp32 training."""
    if plan.precision == "fp32":
        return 0
    if plan.precision == "pure-bf16":
        return 2 if plan.engine == "deepspeed" else 0
    return 4


def state_layout(arch: Architecture, plan: Plan) -> list[StateTerm]:
    """The per-parameter state terms of the plan's engine, precision, optimizer, ZeRO stage and offload.

    PEFT plans (LoRA, QLoRA, freeze) keep the engine's full bookkeeping for the parameters that train,
    and add the frozen base:
    * the trained parameters are created as the engine's layout says: PEFT upcasts bf16 adapters to fp32
      (get_peft_model's autocast_adapter_dtype=True, tuners_utils.cast_adapter_dtype; LLaMA-Factory also
      casts freeze-tuned blocks to fp32), which is the fp32 weight of the DDP/FSDP rows; DeepSpeed casts
      the whole module to bf16 and keeps an fp32 master of what trains, the DeepSpeed rows. Only
      parameters with requires_grad get gradients, DDP buckets and optimizer states.
    * frozen weights stay in the compute dtype (2 bytes in bf16), sharded only under ZeRO-3/FULL_SHARD.
    * QLoRA: block linears in NF4 (0.5 bytes) plus their double-quantized constants, which bitsandbytes keeps
      outside the sharded parameter (`constants_shard_with_weights`)."""
    terms = _engine_layout(arch, plan)
    if not plan.peft:
        return terms
    if plan.method in ("lora", "qlora"):
        terms = [replace(t, name=PEFT_TERM_NAMES.get(t.name, t.name)) for t in terms]
    low = 4 if plan.precision == "fp32" else 2
    sharded = plan.zero >= 3
    terms.append(StateTerm("frozen_weights", low, sharded=sharded, group="frozen"))
    if plan.method == "qlora":
        terms += [
            StateTerm("quantized_weights", NF4_BITS / 8, sharded=sharded, group="quantized"),
            StateTerm(
                "quantization_constants",
                quantization_constant_bytes_per_param(arch),
                sharded=sharded and constants_shard_with_weights(plan),
                group="quantized",
            ),
        ]
    return terms


def trained_term(terms: list[StateTerm], name: str) -> StateTerm | None:
    """The term `weights`, `gradients` or `optimizer_states` of the trained parameters, under either name."""
    for term in terms:
        if term.name in (name, PEFT_TERM_NAMES.get(name)):
            return term
    return None


def _engine_layout(arch: Architecture, plan: Plan) -> list[StateTerm]:
    """The engine's terms for the parameters that train (all of them in full fine-tuning)."""
    opt = optimizer_bytes_per_param(arch, plan)
    low = 4 if plan.precision == "fp32" else 2  # weights/grads in the compute dtype
    master = _master_bytes(plan)
    zero = plan.zero
    offload_opt = plan.offload != "none"
    offload_params = plan.offload == "optimizer+params"
    terms: list[StateTerm] = []

    if plan.engine == "deepspeed":
        terms.append(StateTerm("weights", low, sharded=zero >= 3, offloaded=offload_params))
        # ZeRO-3 allocates its flat gradient partition at init; ZeRO-0/1/2 gradients live from backward to
        # the step. ZeRO-2/3 stream reduced gradients to the host when the optimizer is offloaded.
        terms.append(
            StateTerm(
                "gradients",
                low,
                sharded=zero >= 2,
                lifetime="persistent" if zero == 3 else "gradient",
                offloaded=offload_opt and zero >= 2,
            )
        )
        if master:
            terms.append(StateTerm("master_weights", master, sharded=zero >= 1, offloaded=offload_opt))
        terms.append(StateTerm("optimizer_states", opt, sharded=zero >= 1, offloaded=offload_opt))
        terms.append(
            StateTerm(
                "optimizer_step_temporaries",
                _deepspeed_step_bytes(plan, low, master),
                sharded=zero >= 1,
                lifetime="step",
                offloaded=offload_opt,
            )
        )
    elif plan.engine == "fsdp":
        sharded = zero >= 2
        if zero == 0 and plan.precision in ("bf16", "fp16", "fp8"):
            # DDP under autocast: fp32 weights and grads, plus DDP's flat gradient buckets (a second copy
            # of every gradient unless gradient_as_bucket_view=True).
            terms += [
                StateTerm("weights", 4, sharded=False),
                StateTerm("gradients", 4, sharded=False, lifetime="gradient"),
                StateTerm("ddp_gradient_buckets", 4 * (plan.shard_degree > 1), sharded=False),
            ]
        else:
            # FSDP2 keeps the sharded parameter in its original dtype (fp32 in mixed precision; it is
            # also the master copy) and casts to bf16 per unit on all-gather.
            weight_bytes = 4 if plan.precision in ("bf16", "fp16", "fp8", "fp32") else low
            terms += [
                StateTerm("weights", weight_bytes, sharded=sharded, offloaded=offload_params),
                StateTerm("gradients", weight_bytes, sharded=sharded, lifetime="gradient", offloaded=offload_params),
            ]
            if zero == 0:  # DDP without autocast (one rank: no DDP wrapper, no buckets)
                terms.append(StateTerm("ddp_gradient_buckets", weight_bytes * (plan.shard_degree > 1), sharded=False))
        terms.append(StateTerm("optimizer_states", opt, sharded=sharded, offloaded=offload_params))
        if sharded:
            # torch.distributed.pipelining turns off FSDP gradient sync for all but the last micro-batch
            # (set_requires_gradient_sync(False)): gradients accumulate unsharded in the reduce dtype.
            no_sync = (plan.pp > 1) & (plan.grad_accum > 1)
            reduce_bytes = gradient_reduce_bytes(plan)
            terms.append(
                StateTerm("unsharded_gradient_accumulators", reduce_bytes * no_sync, sharded=False, lifetime="gradient")
            )
    else:  # megatron
        # The main_grad buffer, never sharded: fp32, or bf16 with --grad-reduce-in-bf16 / pure bf16.
        grad_bytes = gradient_reduce_bytes(plan)
        terms += [StateTerm("weights", low, sharded=False), StateTerm("gradients", grad_bytes, sharded=False)]
        if master:
            terms.append(StateTerm("master_weights", master, sharded=zero >= 1, offloaded=offload_opt))
        terms.append(StateTerm("optimizer_states", opt, sharded=zero >= 1, offloaded=offload_opt))
        if master > grad_bytes:
            # The step casts the (shard of the) bf16 main_grad to fp32 for the fp32 master weights:
            # `shard_main_param.grad = shard_model_grad.float()` (distrib_optimizer.py
            # _copy_model_grads_to_main_grads; optimizer.py Float16OptimizerWithFloat16Params likewise).
            terms.append(
                StateTerm(
                    "optimizer_step_temporaries", master, sharded=zero >= 1, lifetime="step", offloaded=offload_opt
                )
            )

    if plan.precision == "fp8" and plan.engine == "megatron":
        terms.append(StateTerm("fp8_weight_copies", FP8_WEIGHT_CACHE_BYTES, sharded=False))
    return terms


def _deepspeed_step_bytes(plan: Plan, low: int, master: int) -> float:
    """What DeepSpeed allocates inside step(), per parameter of the partition.

    ZeRO-1/2/3 flatten the gradient partition (low-precision copy) and cast it to the master dtype,
    both alive at the cast (stage_1_and_2.py step; stage3.py _prepare_fp32_grad_for_sub_group); the cast
    is a no-op when the dtypes match. ZeRO-0 in mixed precision (FP16_Optimizer) builds one flat fp32
    gradient for all parameters; in fp32 the wrapped optimizer steps on the gradients directly."""
    if plan.zero == 0:
        return 4 if plan.precision != "fp32" else 0
    return low + (master if master not in (0, low) else 0)


def state_term_bytes(term: StateTerm, params: int, shard_degree: int) -> float:
    """Bytes of one state term for `params` parameters on this rank."""
    per_param = term.bytes_per_param / (shard_degree if term.sharded else 1)
    return params * per_param


def stage_state_bytes(term: StateTerm, stage, plan: Plan) -> float:
    """Bytes of one state term on a pipeline stage. The routed experts' share shards over the
    expert-data-parallel group (dp x cp / ep, Plan.expert_shard_degree), the rest over dp x cp: Megatron's
    distributed optimizer builds separate buffers for expert and non-expert parameters, each sharded over its
    own data-parallel group (core/distributed/param_and_grad_buffer.py, expert_data_parallel_group), and
    torchtitan shards the experts with FSDP over the dp_shard x cp ranks left after EP."""
    params = group_params(term, stage)
    experts = stage.expert_params if term.group == "trainable" else 0
    dense = state_term_bytes(term, params - experts, plan.shard_degree)
    return dense + state_term_bytes(term, experts, plan.expert_shard_degree)


def group_params(term: StateTerm, stage) -> object:
    """Parameters of the stage a term is counted over (planner.memory.stages.StageShard)."""
    if term.group == "frozen":
        return stage.frozen_params
    if term.group == "quantized":
        return stage.quantized_params
    return stage.trainable_params


def deepspeed_step_cap_bytes(term: StateTerm, plan: Plan) -> float | None:
    """ZeRO-3 runs the step one sub-group at a time, so its temporaries are capped at one sub-group."""
    if plan.engine == "deepspeed" and plan.zero == 3 and term.name == "optimizer_step_temporaries":
        return term.bytes_per_param * DEEPSPEED_SUB_GROUP_SIZE
    return None


def dequantized_weight_bytes(stage) -> float:
    """QLoRA's bf16 copy of one NF4 weight: bitsandbytes' MatMul4Bit dequantizes the weight it multiplies
    (forward up to 0.49, backward in every version: autograd/_functions.py, F.dequantize_4bit(B,
    ctx.state)), one at a time, and first expands the double-quantized absmax to fp32 (4 bytes per 64
    weights). The largest linear sets the size (the MLP's h x f)."""
    return stage.largest_quantized_params * (2 + 4 / NF4_BLOCKSIZE)
