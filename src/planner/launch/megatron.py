"""Megatron-LM `pretrain_gpt.py` arguments for a plan (Megatron-LM core_r0.9 and later, main of 2026-08).

The model flags describe the architecture the prediction was made for; the parallel, batch, recompute
and precision flags are the plan. Megatron's rules (launch-configs.md B.6) are checked by the plan
itself: tp x pp x cp divides the GPUs, tp divides the heads, sequence parallelism only with tp > 1, full
recompute with a method and a layer count, distributed optimizer for ZeRO-1 and optimizer offload.
`--overlap-grad-reduce` and `--overlap-param-gather` are on unless the plan turns them off (the
performance model hides the data-parallel traffic the way they do); `--grad-reduce-in-bf16` when the plan
reduces in bf16; `--num-layers-per-virtual-pipeline-stage` for the interleaved schedule.

Mixture-of-Experts models add the expert layout (experts, top-k, expert width, shared experts, which blocks
are MoE), the router and load balancing as the model's Hugging Face config states them (ROUTERS), the plan's
expert-parallel and expert-tensor-parallel degrees, token dispatcher and capacity factor, grouped GEMMs,
and DeepSeek's multi-head latent attention. Megatron places the EP group as the plan does (expert rank
order tp-ep-dp over the dense layers' ranks, expert TP = TP unless --expert-tensor-parallel-size says
otherwise).
"""

from dataclasses import dataclass

from planner.catalog import ModelSpec
from planner.catalog.models import moe_layer_count
from planner.errors import PlannerError
from planner.memory.stages import layers_on_stage, model_chunk_blocks, stage_blocks
from planner.plan import Plan, embedding_and_loss_as_layers

FP8_FORMAT = "hybrid"
"""E4M3 forward, E5M2 gradients: TransformerEngine's recipe for training."""
CLIP_GRAD = 1.0


def flag_lines(args: list[str]) -> list[str]:
    """One flag with its values per line (the layout of megatron_args.txt)."""
    lines: list[str] = []
    for arg in args:
        if arg.startswith("--") or not lines:
            lines.append(arg)
        else:
            lines[-1] += f" {arg}"
    return lines


def megatron_arguments(model: ModelSpec, plan: Plan) -> list[str]:
    """Flags for `torchrun ... pretrain_gpt.py`, model first, then the plan. Data, tokenizer, learning rate
    and checkpoint paths are the user's and are left out."""
    if plan.engine != "megatron":
        raise PlannerError(
            f"Megatron arguments need a megatron plan, got {plan.engine}",
            "planner launch writes them for the plan's Megatron variant",
        )
    return (
        _model_flags(model, plan)
        + _moe_flags(model, plan)
        + _parallel_flags(model, plan)
        + _memory_flags(model, plan)
        + _precision_flags(plan)
    )


def _model_flags(model: ModelSpec, plan: Plan) -> list[str]:
    arch = model.architecture
    _check_buildable(model)
    flags = ["--use-mcore-models", "--transformer-impl", "transformer_engine"]
    flags += ["--num-layers", str(arch.num_layers), "--hidden-size", str(arch.hidden_size)]
    flags += ["--ffn-hidden-size", str(arch.ffn_hidden_size), "--num-attention-heads", str(arch.num_attention_heads)]
    if arch.num_kv_heads != arch.num_attention_heads:
        flags += ["--group-query-attention", "--num-query-groups", str(arch.num_kv_heads)]
    if arch.head_dim and arch.head_dim * arch.num_attention_heads != arch.hidden_size:
        flags += ["--kv-channels", str(arch.head_dim)]
    flags += ["--seq-length", str(plan.seq_len)]
    flags += ["--max-position-embeddings", str(max(plan.seq_len, arch.max_position_embeddings))]
    flags += ["--position-embedding-type", {"rope": "rope", "learned": "learned_absolute"}[_position(model)]]
    flags += ["--normalization", "RMSNorm" if arch.norm == "rmsnorm" else "LayerNorm"]
    if arch.mlp == "swiglu":
        flags.append("--swiglu")
    if not (arch.mlp_bias or arch.attn_out_bias):
        flags.append("--disable-bias-linear")
    if arch.qkv_bias and not (arch.mlp_bias or arch.attn_out_bias):
        flags.append("--add-qkv-bias")
    if not arch.tied_embeddings:
        flags.append("--untie-embeddings-and-output-weights")
    if arch.qk_norm == "head":
        flags.append("--qk-layernorm")  # the --normalization kind on each head's queries and keys (Qwen3)
    flags += _window_flags(arch)
    flags += ["--hidden-dropout", _number(arch.hidden_dropout), "--attention-dropout", _number(arch.attention_dropout)]
    return flags


@dataclass(frozen=True)
class Router:
    """How a MoE model routes and balances, in Megatron's terms, as its Hugging Face config.json states it."""

    score: str = "softmax"
    """`scoring_func` (DeepSeek): softmax or sigmoid over the expert logits."""
    normalize_topk: bool = True
    """`norm_topk_prob`: the top-k weights are renormalised to sum to 1 (Megatron's default top-k-then-softmax);
    False = softmax over all experts, top-k taken without renormalising (`--moe-router-pre-softmax`)."""
    groups: int = 1
    """`n_group` / `topk_group`: experts are split into groups and each token picks its top groups first."""
    group_topk: int = 1
    scaling: float = 1.0
    """`routed_scaling_factor`: multiplies the routed experts' weights."""
    expert_bias: bool = False
    """Auxiliary-loss-free balancing (`topk_method: noaux_tc`): a per-expert bias steers the top-k choice."""
    balancing: str = "aux_loss"
    """aux_loss (per micro-batch), seq_aux_loss (per sequence: DeepSeek `seq_aux`) or none."""
    aux_loss_coeff: float = 0.0
    """`router_aux_loss_coef` / `aux_loss_alpha`."""


ROUTERS: dict[str, Router] = {
    "mixtral-8x7b": Router(aux_loss_coeff=0.02),
    "mixtral-8x22b": Router(aux_loss_coeff=0.001),
    "qwen3-30b-a3b": Router(aux_loss_coeff=0.001),
    "qwen3-235b-a22b": Router(aux_loss_coeff=0.001),
    "qwen2-57b-a14b": Router(normalize_topk=False, aux_loss_coeff=0.001),
    "olmoe-1b-7b": Router(normalize_topk=False, aux_loss_coeff=0.01),
    "gpt-oss-20b": Router(aux_loss_coeff=0.9),
    "gpt-oss-120b": Router(aux_loss_coeff=0.9),
    "deepseek-v2-lite": Router(normalize_topk=False, balancing="seq_aux_loss", aux_loss_coeff=0.001),
    "deepseek-v3": Router(
        score="sigmoid", groups=8, group_topk=4, scaling=2.5, expert_bias=True, balancing="none", aux_loss_coeff=0.0
    ),
}
"""The catalog's MoE models, from their configs in tests/data/hf_configs (tests/test_launch_moe.py reads them
back). Another MoE model (a config.json of another checkpoint) gets Megatron's default router: softmax
top-k, aux_loss with coefficient 0; set the checkpoint's own there."""


def _moe_flags(model: ModelSpec, plan: Plan) -> list[str]:
    arch = model.architecture
    flags = _latent_attention_flags(model)
    if not arch.is_moe:
        return flags
    flags += ["--num-experts", str(arch.num_experts), "--moe-router-topk", str(arch.experts_per_token)]
    flags += ["--moe-ffn-hidden-size", str(arch.moe_ffn_hidden_size)]
    if arch.shared_experts:
        flags += ["--moe-shared-expert-intermediate-size", str(arch.shared_expert_ffn_hidden_size)]
        if arch.shared_expert_gate:
            flags.append("--moe-shared-expert-gate")
    pattern = moe_layer_pattern(model)
    if pattern is not None:
        flags += ["--moe-layer-freq", pattern]
    flags += _router_flags(ROUTERS.get(model.name, Router()))
    flags += ["--moe-router-dtype", "fp32"]  # the router's logits and probabilities in fp32
    flags += ["--expert-model-parallel-size", str(plan.ep), "--moe-grouped-gemm"]
    if plan.etp:  # experts split over fewer ranks than the dense layers (Megatron's default is tp)
        flags += ["--expert-tensor-parallel-size", str(plan.etp)]
    flags += ["--moe-token-dispatcher-type", plan.moe_dispatcher]
    if plan.moe_dispatcher == "flex":
        flags += ["--moe-flex-dispatcher-backend", "deepep"]
    if plan.moe_ep_overlap:
        flags.append("--overlap-moe-expert-parallel-comm")
    if plan.moe_capacity_factor is not None:
        flags += ["--moe-expert-capacity-factor", _number(plan.moe_capacity_factor)]
    return flags


def moe_layer_pattern(model: ModelSpec) -> str | None:
    """`--moe-layer-freq` as Megatron's list expression when some blocks keep a dense MLP (1 = MoE block),
    e.g. DeepSeek-V3's "([0]*3+[1]*58)"; None when every block is MoE (Megatron's default 1)."""
    arch = model.architecture
    kinds = [moe_layer_count(arch, i + 1) - moe_layer_count(arch, i) for i in range(arch.num_layers)]
    if all(kinds):
        return None
    runs: list[tuple[int, int]] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return "(" + "+".join(f"[{kind}]*{count}" for kind, count in runs) + ")"


def _router_flags(router: Router) -> list[str]:
    flags: list[str] = []
    if router.score != "softmax":
        flags += ["--moe-router-score-function", router.score]
    if not router.normalize_topk:
        flags.append("--moe-router-pre-softmax")
    if router.groups > 1:
        flags += ["--moe-router-num-groups", str(router.groups), "--moe-router-group-topk", str(router.group_topk)]
    if router.scaling != 1.0:
        flags += ["--moe-router-topk-scaling-factor", _number(router.scaling)]
    if router.expert_bias:
        flags.append("--moe-router-enable-expert-bias")
    flags += ["--moe-router-load-balancing-type", router.balancing]
    if router.balancing != "none":
        flags += ["--moe-aux-loss-coeff", _number(router.aux_loss_coeff)]
    return flags


def _latent_attention_flags(model: ModelSpec) -> list[str]:
    """DeepSeek's multi-head latent attention: low-rank queries (absent for DeepSeek-V2-Lite) and key/value
    latents, per-head widths of the RoPE and non-RoPE parts."""
    arch = model.architecture
    if not arch.is_mla:
        return []
    flags = ["--multi-latent-attention"]
    if arch.q_lora_rank:
        flags += ["--q-lora-rank", str(arch.q_lora_rank)]
    flags += ["--kv-lora-rank", str(arch.kv_lora_rank), "--qk-head-dim", str(arch.qk_nope_head_dim)]
    flags += ["--qk-pos-emb-head-dim", str(arch.qk_rope_head_dim), "--v-head-dim", str(arch.v_head_dim)]
    return flags


def _window_flags(arch) -> list[str]:
    """Sliding-window attention: Megatron's (left, right) window in keys, which transformers sets to
    (sliding_window - 1, ...) for flash-attn (modeling_flash_attention_utils: the query itself is one of the
    window's keys); with local and global layers, one full-attention layer after every N - 1 windowed ones
    (--window-attn-skip-freq N, the HF layer pattern: Gemma 2 N = 2, Gemma 3 N = 6)."""
    if not arch.sliding_window:
        return []
    flags = ["--window-size", f"{arch.sliding_window - 1},0"]
    if arch.global_attention_every:
        flags += ["--window-attn-skip-freq", str(arch.global_attention_every)]
    return flags


def _check_buildable(model: ModelSpec) -> None:
    """Refuse, in one line, a model pretrain_gpt.py's GPT layer cannot build (Megatron-LM d98e8a6,
    2026-08-22: its TransformerLayer has an input and a pre-MLP norm only, TransformerConfig has no
    attention or final-logit soft-capping, and --qk-layernorm normalises each head)."""
    arch = model.architecture
    missing = []
    if arch.post_norms:
        missing.append("norms after attention and MLP")
    if arch.attn_logit_softcap:
        missing.append("attention soft-capping")
    if arch.final_logit_softcap:
        missing.append("final-logit soft-capping")
    if arch.qk_norm == "full":
        missing.append("query/key norms over the whole projection")
    if missing:
        raise PlannerError(
            f"Megatron-LM's GPT model cannot build {model.name}: it has no " + ", no ".join(missing),
            "use the DeepSpeed, Accelerate or Trainer configs, which run the Hugging Face model code",
        )


def _position(model: ModelSpec) -> str:
    kind = model.architecture.position_embedding
    if kind not in ("rope", "learned"):
        raise PlannerError(f"Megatron-LM has no {kind} position embedding", "use a rope or learned-position model")
    return kind


def _number(value: float) -> str:
    return f"{value:g}"


def _parallel_flags(model: ModelSpec, plan: Plan) -> list[str]:
    flags = ["--tensor-model-parallel-size", str(plan.tp), "--pipeline-model-parallel-size", str(plan.pp)]
    flags += ["--context-parallel-size", str(plan.cp)]
    if plan.sequence_parallel:
        flags.append("--sequence-parallel")
    if plan.tp_comm_overlap:  # make_plan allows it with tp > 1 and sequence parallelism only
        flags.append("--tp-comm-overlap")
    num_layers = model.architecture.num_layers
    stated = plan.first_stage_layers is not None
    aware = not stated and embedding_and_loss_as_layers(num_layers, plan.pp, plan.virtual_stages)
    if stated:
        layout = stated_pipeline_layout(num_layers, plan)
    else:
        layout = None if aware else pipeline_layout(num_layers, plan.pp, plan.mtp_layers)
    if layout is not None:
        flags += ["--pipeline-model-parallel-layout", layout]
    if aware:
        # The embedding and the loss count as one layer each, the first and last chunks hold one block fewer.
        flags += ["--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"]
    if plan.mtp_layers:
        flags += ["--mtp-num-layers", str(plan.mtp_layers)]
    if plan.pp_schedule == "interleaved" and not stated:
        chunk = (num_layers + 2 * aware) // (plan.pp * plan.virtual_stages)
        flags += ["--num-layers-per-virtual-pipeline-stage", str(chunk)]
    flags += ["--micro-batch-size", str(plan.micro_batch), "--global-batch-size", str(plan.global_batch)]
    if plan.zero == 1:
        flags.append("--use-distributed-optimizer")
        if plan.overlap_param_gather is not False:
            flags.append("--overlap-param-gather")
        if plan.fp8_param_gather:  # make_plan allows it with fp8 and the distributed optimizer only
            flags.append("--fp8-param-gather")
    if plan.overlap_grad_reduce is not False:
        flags.append("--overlap-grad-reduce")
    if plan.grad_reduce_bf16 and plan.precision != "pure-bf16":  # pure-bf16 sets --main-grads-dtype bf16
        flags.append("--grad-reduce-in-bf16")
    return flags


def pipeline_layout(num_layers: int, pp: int, mtp_layers: int = 0) -> str | None:
    """`--pipeline-model-parallel-layout` when pp does not divide the layers: the earliest stages take one
    block more, the split the memory model assumes (planner.memory.stages). E = embedding, t = block,
    m = multi-token-prediction depth, L = loss, | = next stage. None when the split is even (Megatron's default
    is then the same, with the MTP depths on the last stage)."""
    if num_layers % pp == 0:
        return None
    stages = [f"t*{layers_on_stage(num_layers, pp, stage)}" for stage in range(pp)]
    return "E" + "|".join(stages) + "m" * mtp_layers + "L"


def stated_pipeline_layout(num_layers: int, plan: Plan) -> str:
    """The plan's stated split (first_stage_layers, last_stage_layers) as a `--pipeline-model-parallel-layout`,
    chunks in Megatron's order (virtual stage-major): every chunk holds the middle ranks' chunk size b, except
    the first (with the embedding) and the last (with the MTP depths and the loss), which hold the first and
    the last rank's blocks less (V - 1) b. 'Et|(tt|)*30mL' of Megatron-Bridge's H100 DeepSeek-V3 recipe is
    pp 8, V 4, first 7, last 6."""
    sizes = [int(model_chunk_blocks(num_layers, plan, chunk)[1]) for chunk in range(plan.pp * plan.virtual_stages)]
    chunks = [f"t*{n}" if n else "" for n in sizes]
    return "E" + "|".join(chunks) + "m" * plan.mtp_layers + "L"


def _memory_flags(model: ModelSpec, plan: Plan) -> list[str]:
    flags: list[str] = []
    checkpointed_blocks = stage_blocks(model.architecture.num_layers, plan, 0) // plan.checkpointing_every
    if plan.recompute_modules:
        # Fine-grained recomputation; Megatron's selective mode is its core_attn module.
        core = ["core_attn"] if plan.checkpointing == "selective" else []
        flags += ["--recompute-granularity", "selective", "--recompute-modules", *core, *plan.recompute_modules]
    elif plan.checkpointing == "selective":
        flags += ["--recompute-granularity", "selective"]
    elif plan.checkpointing == "full" and plan.checkpointing_every == 1:
        # Every block keeps only its input and recomputes in backward (uniform, one block per group).
        flags += ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"]
    elif plan.checkpointing == "full" and checkpointed_blocks > 0:
        # Checkpoint every N-th block: Megatron's nearest is the block method, which recomputes the first K
        # blocks of each stage; K = the number of blocks the memory model checkpoints on the stage.
        flags += ["--recompute-granularity", "full", "--recompute-method", "block"]
        flags += ["--recompute-num-layers", str(checkpointed_blocks)]
    if plan.offload == "optimizer":
        # The hybrid CPU optimizer runs on the precision-aware optimizer's code path (validate_args asserts it).
        flags += ["--optimizer-cpu-offload", "--optimizer-offload-fraction", "1.0", "--use-precision-aware-optimizer"]
    if not plan.flash_attention:
        flags += ["--attention-backend", "unfused"]
    if plan.loss == "fused":
        flags += ["--cross-entropy-loss-fusion"]
    if plan.loss == "flash-ce":
        raise PlannerError("Megatron-LM has no flash-attn cross-entropy", "use --loss standard or fused")
    return flags


def _precision_flags(plan: Plan) -> list[str]:
    flags = {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp8": ["--bf16", "--fp8-format", FP8_FORMAT], "fp32": []}
    # bf16 gradients and Adam states, no fp32 copy (precision-aware distributed optimizer, Megatron-Core >= 0.11).
    flags["pure-bf16"] = ["--bf16", "--main-grads-dtype", "bf16"]
    if plan.offload != "optimizer":
        flags["pure-bf16"].append("--use-precision-aware-optimizer")
    flags["pure-bf16"] += ["--main-params-dtype", "bf16", "--exp-avg-dtype", "bf16", "--exp-avg-sq-dtype", "bf16"]
    if plan.precision not in flags:
        raise PlannerError(f"Megatron-LM has no {plan.precision} mode here", "use --precision bf16")
    optimizer = {"adamw": "adam", "sgd": "sgd"}.get(plan.optimizer)
    if optimizer is None:
        raise PlannerError(f"Megatron-LM has no {plan.optimizer} optimizer", "use --optimizer adamw or sgd")
    return flags[plan.precision] + ["--optimizer", optimizer, "--clip-grad", _number(CLIP_GRAD)]
