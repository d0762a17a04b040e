"""A training plan: how one job is laid out over GPUs, and the checks that it can exist.

`PlanRequest` holds what the user asked for, keyed exactly like the `planner estimate` flags (without
dashes), so that the CLI, validation cases and search all speak one language. `resolve_plan` checks
it against the model and GPU and returns the frozen `Plan` the models compute on.
"""

from dataclasses import dataclass, fields, replace
from math import gcd
from typing import Any, Literal, get_args

from planner.catalog import Architecture, GpuSpec, ModelSpec, load_gpu, load_model
from planner.errors import PlanError
from planner.inputs import quoted

Checkpointing = Literal["none", "selective", "full"]
Precision = Literal["bf16", "fp16", "fp32", "pure-bf16", "fp8"]
Optimizer = Literal["adamw", "adamw-8bit", "sgd", "adafactor"]
Offload = Literal["none", "optimizer", "optimizer+params"]
Engine = Literal["deepspeed", "fsdp", "megatron"]
Loss = Literal["standard", "chunked", "fused", "flash-ce", "shifted"]
FlashAttentionVersion = Literal[1, 2, 3]
PipelineSchedule = Literal["1f1b", "interleaved"]
FsdpVersion = Literal[1, 2]
Method = Literal["full", "lora", "qlora", "freeze"]
LoraTargets = Literal["attention", "all-linear"]
Fp8Recipe = Literal["tensorwise", "rowwise", "delayed", "mxfp8"]
MoeDispatcher = Literal["alltoall", "allgather", "flex"]

CHECKPOINTING: tuple[str, ...] = get_args(Checkpointing)
PRECISIONS: tuple[str, ...] = get_args(Precision)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
OFFLOADS: tuple[str, ...] = get_args(Offload)
ENGINES: tuple[str, ...] = get_args(Engine)
LOSSES: tuple[str, ...] = get_args(Loss)
FLASH_ATTENTION_VERSIONS: tuple[int, ...] = get_args(FlashAttentionVersion)
PP_SCHEDULES: tuple[str, ...] = get_args(PipelineSchedule)
FSDP_VERSIONS: tuple[int, ...] = get_args(FsdpVersion)
METHODS: tuple[str, ...] = get_args(Method)
LORA_TARGETS: tuple[str, ...] = get_args(LoraTargets)
DEFAULT_TRAINABLE_LAYERS = 2
"""LLaMA-Factory's `freeze_trainable_layers` default (hparams/finetuning_args.py): the last 2 blocks."""
FP8_RECIPES: tuple[str, ...] = get_args(Fp8Recipe)
MOE_DISPATCHERS: tuple[str, ...] = get_args(MoeDispatcher)
RECOMPUTE_MODULES = ("layernorm", "moe_act", "mla_up_proj")
"""Megatron's output-discarding recompute modules the memory model states (--recompute-modules): the two
block norms' outputs, the routed experts' activation output, MLA's up-projected query/key/value."""

EXPERT_PARALLEL_ENGINES = ("megatron", "fsdp")
"""Engines that run expert parallelism: Megatron-Core (--expert-model-parallel-size) and torchtitan on FSDP2
(parallelism.expert_parallel_degree, its MoE models). DeepSpeed runs the Hugging Face MoE blocks, whose experts
are ordinary parameters: every rank of a ZeRO shard group holds (its shard of) all experts, EP = 1."""

_MAX_GPUS = 1_000_000
_MAX_SEQ_LEN = 16 * 1024 * 1024
_MAX_BATCH = 10_000_000


@dataclass(frozen=True)
class Plan:
    """One fully resolved training plan. Degrees multiply to the GPU count: dp * tp * pp * cp = gpus."""

    gpus: int
    """GPUs the job uses."""
    gpus_per_node: int
    """GPUs per server; groups that span servers communicate over the network."""
    tp: int
    """Tensor-parallel degree (Megatron-style column/row split, with sequence parallelism)."""
    pp: int
    """Pipeline-parallel stages (1F1B schedule). When pp does not divide the layers, the first
    `layers % pp` stages take one block more (torchtitan and Megatron allow uneven splits)."""
    cp: int
    """Context-parallel degree: the sequence is split over cp GPUs (ring attention)."""
    dp: int
    """Data-parallel replicas = gpus / (tp * pp * cp)."""
    zero: int
    """ZeRO stage 0-3: 0 replicates everything; 1 shards optimizer states (Megatron's distributed
    optimizer); 2 also gradients (FSDP SHARD_GRAD_OP); 3 also parameters (FSDP FULL_SHARD)."""
    micro_batch: int
    """Sequences per GPU per forward/backward pass."""
    grad_accum: int
    """Micro-batches per optimizer step per data-parallel replica (= pipeline micro-batches)."""
    global_batch: int
    """Sequences per optimizer step = micro_batch * grad_accum * dp."""
    seq_len: int
    """Tokens per sequence."""
    checkpointing: Checkpointing
    """Activation checkpointing: `none`; `selective` (Megatron: recompute core attention; FSDP/torch:
    torchtitan's op-level policy); `full` (recompute every transformer block)."""
    precision: Precision
    """`bf16`/`fp16`: mixed precision with fp32 master weights; `fp32`; `pure-bf16`: weights, grads and
    optimizer states all bf16; `fp8`: bf16 mixed precision with FP8 matmuls (TransformerEngine/float8)."""
    optimizer: Optimizer
    offload: Offload
    """CPU offload: `optimizer` (states + step on CPU) or `optimizer+params` (ZeRO-3/FSDP params too)."""
    engine: Engine
    """Training stack whose memory bookkeeping applies: DeepSpeed (Hugging Face model code), PyTorch FSDP
    (FSDP2 / torchtitan; ZeRO 0 = DDP with autocast) or Megatron-LM (TransformerEngine layers)."""
    flash_attention: bool
    """Attention kernel that does not store the s x s score matrix (FlashAttention / SDPA flash)."""
    loss: Loss
    """`standard` cross-entropy over materialised logits, `chunked` (torchtune-style 8 chunks),
    `fused` (linear + cross-entropy fused, e.g. Liger; logits never materialised), `flash-ce` (a fused
    cross-entropy kernel over the materialised logits: flash-attn's CrossEntropyLoss, llm-foundry's default) or
    `shifted` (`standard` as Hugging Face code wrote it before transformers 4.49: the fp32 logits are copied once
    more, shifted by one token, before the cross-entropy; see planner.memory.activations.logits_bytes)."""
    sequence_parallel: bool = False
    """Shard the norm/dropout regions over the TP ranks (Korthikanti et al. 2022); only with tp > 1."""
    compile: bool = False
    """torch.compile the blocks: the partitioner saves matmul and attention outputs and recomputes
    pointwise ops (norms, activations, RoPE) in backward. Not applicable to Megatron (TE kernels)."""
    flash_attention_version: FlashAttentionVersion = 2
    """Which flash-attention kernel generation runs, for its speed (memory is the same): 1 =
    FlashAttention-1 or the Triton/xformers kernels of its time, 2 = FlashAttention-2 (also PyTorch SDPA's
    flash backend), 3 = FlashAttention-3 or cuDNN attention on Hopper. Ignored without flash attention."""
    pp_schedule: PipelineSchedule = "1f1b"
    """Pipeline schedule: `1f1b` (PipeDream-Flush) or `interleaved` (Narayanan et al. 2021: each rank holds
    `virtual_stages` model chunks; Megatron's virtual pipeline, torchtitan's Interleaved1F1B)."""
    virtual_stages: int = 1
    """Model chunks per pipeline rank (V); 1 with `1f1b`, at least 2 with `interleaved`."""
    grad_reduce_bf16: bool | None = None
    """Reduce data-parallel gradients in bf16 (Megatron `--grad-reduce-in-bf16`, NeMo `grad_sync_dtype:
    bf16`, torchtitan `mixed_precision_reduce = "bfloat16"`). None: the engine's default (fp32 for Megatron
    and FSDP, the model dtype for DeepSpeed)."""
    overlap_grad_reduce: bool | None = None
    """Overlap the gradient reduction with backward (Megatron `--overlap-grad-reduce`, DeepSpeed
    `overlap_comm`). None: the engine's default as the launch configs set it (on for Megatron and
    DeepSpeed ZeRO-3, off for DeepSpeed ZeRO-1/2; FSDP always overlaps)."""
    overlap_param_gather: bool | None = None
    """Overlap the parameter all-gather of the distributed optimizer with the next forward (Megatron
    `--overlap-param-gather`, ZeRO-1 only). None: on for Megatron ZeRO-1 (as the launch configs set it)."""
    checkpointing_every: int = 1
    """With `checkpointing: full`, checkpoint every N-th block only (torchtitan's selective layer mode
    `selective_ac_option: N`); the other blocks keep all their activations. 1 = every block."""
    fsdp_version: FsdpVersion = 2
    """PyTorch FSDP generation for `engine: fsdp`: 2 (per-parameter DTensor sharding, torchtitan,
    Accelerate `fsdp_version: 2`) or 1 (FlatParameter, `record_stream`; Accelerate/Trainer default)."""
    method: Method = "full"
    """Which parameters train: `full` (all); `lora` (PEFT LoRA adapters on a frozen bf16 base); `qlora`
    (LoRA on a base whose block linears are NF4 with double quantization, bf16 compute, as in the QLoRA
    paper); `freeze` (only the last `trainable_layers` blocks, as LLaMA-Factory's freeze tuning)."""
    lora_rank: int = 16
    """LoRA rank r (PEFT LoraConfig.r); used by lora and qlora."""
    lora_targets: LoraTargets = "all-linear"
    """`attention`: q, k, v and o projections; `all-linear`: also the MLP's (PEFT's "all-linear", which
    leaves out the LM head)."""
    lora_dropout: float = 0.0
    """PEFT LoraConfig.lora_dropout (PEFT's default is 0.0): above 0 each adapter drops out a copy of its
    input, which autograd keeps with its mask."""
    trainable_layers: int = 0
    """Blocks that train under `freeze` (the last ones); 0 for other methods."""

    @property
    def peft(self) -> bool:
        """Only part of the parameters train (LoRA, QLoRA, freeze)."""
        return self.method != "full"

    tp_comm_overlap: bool = False
    """Overlap the tensor-parallel all-gathers and reduce-scatters with the GEMMs next to them (Megatron
    `--tp-comm-overlap`: Transformer Engine's userbuffers split each GEMM into chunks and exchange the next
    chunk while the current one multiplies; NeMo's `ub_tp_comm_overlap`, Megatron-Bridge's
    `CommOverlapConfig(tp_comm_overlap=True)`). Megatron only, with tp > 1 and sequence parallelism
    (megatron/training/arguments.py refuses it without)."""

    fp8_recipe: Fp8Recipe = "tensorwise"
    """How fp8 linears are scaled (used only with `precision: fp8`): `tensorwise` (one scale per tensor
    from this step's amax: torchao's default, TransformerEngine's Float8CurrentScaling; under FSDP the
    weights are all-gathered in fp8), `rowwise` (torchao: one scale per row, bf16 all-gather),
    `delayed` (TransformerEngine's DelayedScaling: scales from an amax history, no amax pass before the
    cast) or `mxfp8` (one scale per 32 elements, Blackwell tensor cores only)."""

    fp8_param_gather: bool = False
    """Keep the linear weights in fp8 and all-gather them in fp8 after the optimizer step (Megatron
    `--fp8-param-gather`: "keep the compute param in fp8 ... and perform the param all-gather in fp8", which
    builds the model under TransformerEngine's fp8_model_init; NeMo's `fp8_params`). Megatron only, with fp8
    and the distributed optimizer (zero 1). Time: the parameter gather moves 1 byte per linear weight instead
    of 2. Memory is left as without it: the fp8 weight replaces the bf16 one and the separate fp8 weight cache
    (FP8_WEIGHT_CACHE_BYTES) goes, but what TE and the optimizer keep beside it instead is not measured here."""

    ep: int = 1
    """Expert-parallel degree: each MoE block's routed experts are divided over `ep` ranks, which exchange the
    routed tokens all-to-all. As in Megatron-Core (parallel_state.initialize_model_parallel: the expert
    rank generator, order tp-ep-dp, spans the same tp x cp x dp ranks as the dense layers), ep x etp divides
    tp x cp x dp, and the experts' own data-parallel (ZeRO) group is tp x cp x dp / (ep x etp) ranks; with
    the default etp = tp the EP group is carved out of the data-parallel x context-parallel ranks."""
    etp: int = 0
    """Expert-tensor-parallel degree (Megatron --expert-tensor-parallel-size): each expert split over etp
    ranks, which together take the tokens of etp sequence-parallel shards. 0 (the default) = tp, Megatron's
    default; 1 keeps experts whole while attention uses tensor parallelism (the EP group then spans TP ranks)."""
    moe_capacity_factor: float | None = None
    """Tokens an expert accepts per step, as a multiple of its even share (Megatron
    --moe-expert-capacity-factor): the excess is dropped. None: dropless routing (every token reaches its
    top-k experts; the busiest expert sets the pace and the buffer size)."""
    moe_dispatcher: MoeDispatcher = "alltoall"
    """How routed tokens reach their experts' ranks (Megatron --moe-token-dispatcher-type): `alltoall`
    sends each token to the ranks of its experts; `allgather` gathers every token of the EP x TP group on
    every rank, which then keeps its experts' share; `flex` is Megatron's flex dispatcher with DeepEP's
    kernels (HybridEP on GB200 racks): across nodes a token travels once per destination node and is fanned
    out to its experts over NVLink there."""
    moe_ep_overlap: bool = False
    """Megatron's combined 1F1B (--overlap-moe-expert-parallel-comm): each micro-batch's dispatch and combine
    run while an adjacent micro-batch computes (forward beside backward), instead of on the critical path."""
    recompute_modules: tuple[str, ...] = ()
    """Megatron's fine-grained recomputation (--recompute-granularity selective --recompute-modules) of
    RECOMPUTE_MODULES, beside `checkpointing` none or selective (whose core attention Megatron lists as
    core_attn): their outputs are discarded after use in forward and recomputed in backward."""
    mtp_layers: int = 0
    """Multi-token-prediction depths trained (Megatron --mtp-num-layers; the model's `mtp_layers`): each adds
    two norms, an eh_proj linear, one transformer block and one more LM-head pass and loss, all on the last
    pipeline stage, which also keeps its own copy of the embedding (Megatron-Core GPTModel builds the embedding
    on the MTP stage). 0: none."""
    first_stage_layers: int | None = None
    """Blocks on the first pipeline rank, with `last_stage_layers` on the last and the rest split evenly over the
    ranks between (Megatron --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers; NeMo's
    num_layers_in_first/last_pipeline_stage): recipes lighten the first rank for the embedding and the last for
    the loss and the MTP depths. With the interleaved schedule every chunk holds the middle ranks' chunk size
    except the first chunk of the first rank and the last chunk of the last rank, which hold the difference
    (Megatron-Bridge's DeepSeek-V3 --pipeline-model-parallel-layout tables). None: the planner's split."""
    last_stage_layers: int | None = None
    """Blocks on the last pipeline rank (see `first_stage_layers`)."""

    @property
    def expert_tp(self) -> int:
        """The expert-tensor-parallel degree in effect (etp, or tp when etp is 0)."""
        return self.etp or self.tp

    @property
    def expert_shard_degree(self) -> int:
        """Ranks that hold the same experts and share their ZeRO / distributed-optimizer shards: the
        expert-data-parallel group, tp x cp x dp / (ep x etp) (Megatron's expert_data_parallel_group)."""
        return self.tp * self.dp * self.cp // (self.ep * self.expert_tp)

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    @property
    def shard_degree(self) -> int:
        """Ranks that hold identical weights and so share ZeRO/FSDP shards: the data-parallel group
        including context-parallel ranks (Megatron's dp x cp group; torchtitan shards over dp_shard x cp)."""
        return self.dp * self.cp

    @property
    def tokens_per_micro_batch(self) -> int:
        """Tokens one GPU processes per micro-batch (sequence split over cp)."""
        return self.micro_batch * self.seq_len // self.cp

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["recompute_modules"] = list(self.recompute_modules)  # as JSON reads it back
        out["nodes"] = self.nodes
        return out


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for. Keys are the `planner estimate` flag names without dashes; None means
    "use the default" (documented per field)."""

    model: str
    gpu: str = "A100-80GB"
    gpu_memory_gib: float | None = None
    """Override the catalog capacity (e.g. for a MIG slice or a card with a different memory size)."""
    network_gbps_per_gpu: float | None = None
    """Override the catalog's inter-node bandwidth, GB/s per GPU one way (your cluster's network)."""
    gpus: int = 1
    gpus_per_node: int | None = None
    """None: the catalog node size of the GPU, capped at `gpus`."""
    tp: int = 1
    pp: int = 1
    cp: int = 1
    zero: int = 0
    micro_batch: int = 1
    global_batch: int | None = None
    """Sequences per optimizer step; None: one micro-batch per data-parallel replica (grad_accum 1)."""
    seq_len: int = 2048
    checkpointing: str = "none"
    precision: str = "bf16"
    optimizer: str = "adamw"
    offload: str = "none"
    engine: str = "deepspeed"
    flash_attention: bool = True
    flash_attention_version: int = 2
    """1, 2 or 3 (see Plan); the GPU catalog says which run on which GPU and how fast."""
    loss: str = "standard"
    sequence_parallel: bool | None = None
    """None: on whenever tp > 1 for Megatron and FSDP (torchtitan's TP plan always uses it; the launch
    configs pass --sequence-parallel), off for DeepSpeed AutoTP, which has none."""
    compile: bool = False
    pp_schedule: str = "1f1b"
    virtual_stages: int = 1
    grad_reduce_bf16: bool | None = None
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None
    checkpointing_every: int = 1
    fsdp_version: int = 2
    method: str = "full"
    lora_rank: int = 16
    lora_targets: str = "all-linear"
    lora_dropout: float = 0.0
    trainable_layers: int | None = None
    """Blocks that train under --method freeze; None: LLaMA-Factory's default, 2."""
    fp8_recipe: str = "tensorwise"
    """Used only with --precision fp8 (see Plan)."""
    tp_comm_overlap: bool = False
    """Megatron --tp-comm-overlap (see Plan); needs tp > 1 and sequence parallelism."""
    fp8_param_gather: bool = False
    """Megatron --fp8-param-gather (see Plan); needs --precision fp8 and --zero 1."""
    ep: int = 1
    """Expert-parallel degree (MoE models, Megatron or FSDP/torchtitan; see Plan)."""
    etp: int | None = None
    """Expert-tensor-parallel degree; None or 0: equal to tp (Megatron's default; see Plan)."""
    moe_capacity_factor: float | None = None
    """None: dropless routing (see Plan)."""
    moe_dispatcher: str = "alltoall"
    moe_ep_overlap: bool = False
    """Megatron's EP all-to-all overlap (see Plan)."""
    recompute_modules: tuple[str, ...] | list[str] | str = ()
    """Megatron --recompute-modules from RECOMPUTE_MODULES (a list or comma-separated; see Plan)."""
    mtp_layers: int | None = None
    """Multi-token-prediction depths to train: 0 or the model's own. None: the model's under Megatron (as the
    NeMo and Megatron-Bridge DeepSeek-V3 recipes train it), 0 under the other engines: transformers has no MTP
    module, and the MTP decoder of recent torchtitan (torchtitan/models/deepseek_v3/mtp.py, no pipeline
    parallelism yet) is not modelled here."""
    first_stage_layers: int | None = None
    """Blocks on the first pipeline rank (with last_stage_layers; Megatron only; see Plan). None: the planner's."""
    last_stage_layers: int | None = None
    """Blocks on the last pipeline rank (see Plan). None: the planner's split."""

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "PlanRequest":
        """Build from a mapping with exactly these keys (validation cases, search rows)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"unknown plan key(s): {', '.join(unknown)}", f"valid keys: {', '.join(sorted(known))}")
        if not isinstance(data.get("model"), str):
            raise PlanError("a plan needs a model", "add `model: <name or config.json>`")
        return cls(**{k: v for k, v in data.items() if v is not None})


def _positive_int(value: Any, name: str, upper: int) -> int:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(f"{flag} must be a whole number, got {quoted(value)}", "pass an integer")
    if isinstance(value, float) and not value.is_integer():  # also NaN and infinities
        raise PlanError(f"{flag} must be a whole number, got {quoted(value)}", "pass an integer")
    value = int(value)
    if value < 1:
        raise PlanError(f"{flag} must be at least 1, got {value}", "pass a positive value")
    if value > upper:
        raise PlanError(f"{flag} = {value} is beyond what this tool models ({upper:,})", "check the number")
    return value


def _choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise PlanError(
            f"--{name.replace('_', '-')} must be one of {', '.join(options)}, got {quoted(value)}", "pick one of those"
        )
    return value


def resolve(request: PlanRequest) -> tuple[ModelSpec, GpuSpec, Plan]:
    """Load model and GPU from the catalogs and check the plan; every failure is one PlanError line."""
    model = load_model(request.model)
    gpu = load_gpu(request.gpu)
    if request.gpu_memory_gib is not None:
        memory = request.gpu_memory_gib
        if isinstance(memory, bool) or not isinstance(memory, int | float) or not 0 < memory <= 4096:
            raise PlanError(f"--gpu-memory-gib must be between 0 and 4096, got {quoted(memory)}", "pass GiB, e.g. 80")
        gpu = replace(gpu, memory_gib=float(memory), memory_overridden=True)
    gpu = gpu.with_network(request.network_gbps_per_gpu)
    return model, gpu, make_plan(request, model, gpu)


def make_plan(request: PlanRequest, model: ModelSpec, gpu: GpuSpec) -> Plan:
    """Check a request against the model and GPU and derive dp and grad_accum."""
    arch = model.architecture
    gpus = _positive_int(request.gpus, "gpus", _MAX_GPUS)
    tp = _positive_int(request.tp, "tp", 4096)
    pp = _positive_int(request.pp, "pp", 4096)
    cp = _positive_int(request.cp, "cp", 4096)
    micro_batch = _positive_int(request.micro_batch, "micro_batch", _MAX_BATCH)
    seq_len = _positive_int(request.seq_len, "seq_len", _MAX_SEQ_LEN)
    per_node_default = min(gpus, gpu.node.gpus_per_node)
    requested_per_node = per_node_default if request.gpus_per_node is None else request.gpus_per_node
    gpus_per_node = _positive_int(requested_per_node, "gpus_per_node", 1024)
    gpus_per_node = min(gpus_per_node, gpus)
    if isinstance(request.zero, bool) or request.zero not in (0, 1, 2, 3):
        raise PlanError(f"--zero must be 0, 1, 2 or 3, got {request.zero!r}", "pick a ZeRO stage")
    checkpointing = _choice(request.checkpointing, "checkpointing", CHECKPOINTING)
    precision = _choice(request.precision, "precision", PRECISIONS)
    optimizer = _choice(request.optimizer, "optimizer", OPTIMIZERS)
    offload = _choice(request.offload, "offload", OFFLOADS)
    engine = _choice(request.engine, "engine", ENGINES)
    loss = _choice(request.loss, "loss", LOSSES)
    for flag in ("flash_attention", "compile"):
        if not isinstance(getattr(request, flag), bool):
            raise PlanError(f"{flag} must be true or false, got {getattr(request, flag)!r}", "fix it")
    if request.compile and engine == "megatron":
        raise PlanError("Megatron-LM runs TransformerEngine kernels, not torch.compile", "drop --compile")
    if loss == "shifted" and engine == "megatron":
        raise PlanError(
            "--loss shifted is Hugging Face model code's loss; Megatron-LM's makes no shifted copy",
            "use --loss standard",
        )
    if precision == "fp8" and engine == "deepspeed":
        raise PlanError(
            "FP8 training is modelled for Megatron (TransformerEngine) and FSDP (torchao float8)",
            "use --engine megatron or fsdp, or --precision bf16",
        )

    model_parallel = tp * pp * cp
    if gpus % model_parallel:
        raise PlanError(
            f"tp*pp*cp = {tp}*{pp}*{cp} = {model_parallel} does not divide --gpus {gpus}",
            f"use a GPU count that is a multiple of {model_parallel}",
        )
    dp = gpus // model_parallel
    if arch.num_attention_heads % tp or arch.num_kv_heads % tp:
        raise PlanError(
            f"--tp {tp} must divide the {arch.num_attention_heads} attention heads and "
            f"{arch.num_kv_heads} key/value heads of {model.name}",
            f"use a TP degree from {_divisors(gcd(arch.num_attention_heads, arch.num_kv_heads))}",
        )
    if pp > arch.num_layers:
        raise PlanError(
            f"--pp {pp} exceeds the {arch.num_layers} layers of {model.name}",
            f"use a PP degree of at most {arch.num_layers}",
        )
    if seq_len % cp:
        raise PlanError(f"--cp {cp} must divide --seq-len {seq_len}", "pick a sequence length that splits evenly")
    if cp > 1 and not request.flash_attention:
        raise PlanError(
            "context parallelism needs flash attention (ring attention on blockwise kernels)",
            "drop --no-flash-attention or use --cp 1",
        )
    if arch.position_embedding == "learned" and seq_len > arch.max_position_embeddings:
        raise PlanError(
            f"--seq-len {seq_len} exceeds the {arch.max_position_embeddings} learned positions of {model.name}",
            f"use --seq-len {arch.max_position_embeddings} or less",
        )

    global_batch = request.global_batch if request.global_batch is not None else micro_batch * dp
    global_batch = _positive_int(global_batch, "global_batch", _MAX_BATCH * 1000)
    if global_batch % (micro_batch * dp):
        raise PlanError(
            f"--global-batch {global_batch} is not a multiple of micro_batch * dp = "
            f"{micro_batch} * {dp} = {micro_batch * dp}",
            f"use a global batch of {_nearest_multiple(global_batch, micro_batch * dp)} or change the micro-batch",
        )
    grad_accum = global_batch // (micro_batch * dp)

    sequence_parallel = request.sequence_parallel
    if sequence_parallel is None:
        sequence_parallel = tp > 1 and engine != "deepspeed"
    elif not isinstance(sequence_parallel, bool):
        raise PlanError(f"sequence_parallel must be true or false, got {sequence_parallel!r}", "fix it")
    if sequence_parallel and engine == "deepspeed":
        raise PlanError("DeepSpeed AutoTP has no sequence parallelism", "drop --sequence-parallel")
    sequence_parallel = sequence_parallel and tp > 1
    tp_comm_overlap = _tp_comm_overlap(request.tp_comm_overlap, engine, tp, sequence_parallel)

    _check_engine(engine, request.zero, tp, pp, cp, checkpointing, offload, precision)
    _check_precision_on_gpu(precision, gpu)
    stated_split = _stated_split(request, arch.num_layers, pp, engine)
    pp_schedule, virtual_stages = _pipeline_schedule(request, arch.num_layers, pp, grad_accum, engine, stated_split)
    if stated_split is not None:
        _check_stated_chunks(stated_split, arch.num_layers, pp, virtual_stages)
    options = _engine_options(request, engine, request.zero, checkpointing, precision, arch.num_layers)
    if options["checkpointing_every"] > 1 and pp_schedule == "interleaved":
        raise PlanError(
            "checkpointing every N-th block is counted per model chunk under interleaving, which is not modelled",
            "use --checkpointing-every 1 or --pp-schedule 1f1b",
        )
    moe_fields = _moe_fields(request, model, engine, dp, cp, tp)
    moe_fields["recompute_modules"] = _recompute_modules(request, arch, engine, checkpointing)
    moe_fields["mtp_layers"] = _mtp_layers(request.mtp_layers, model, engine)
    moe_fields["first_stage_layers"], moe_fields["last_stage_layers"] = stated_split or (None, None)
    method_fields = _method_fields(request, arch)
    check_peft_target(method_fields["method"], model)
    if arch.is_moe and method_fields["method"] != "full":
        raise PlanError(
            f"--method {method_fields['method']} is not modelled for Mixture-of-Experts models",
            "use --method full",
        )
    _check_method(method_fields["method"], engine, tp, pp, cp, checkpointing, offload, precision, request.compile)
    return Plan(
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        tp=tp,
        pp=pp,
        cp=cp,
        dp=dp,
        zero=request.zero,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        global_batch=global_batch,
        seq_len=seq_len,
        checkpointing=checkpointing,
        precision=precision,
        optimizer=optimizer,
        offload=offload,
        engine=engine,
        flash_attention=request.flash_attention,
        flash_attention_version=_flash_attention_version(request, gpu, arch),
        loss=loss,
        sequence_parallel=sequence_parallel,
        compile=request.compile,
        pp_schedule=pp_schedule,
        virtual_stages=virtual_stages,
        fp8_recipe=_fp8_recipe(request.fp8_recipe, precision, gpu),
        tp_comm_overlap=tp_comm_overlap,
        fp8_param_gather=_fp8_param_gather(request.fp8_param_gather, engine, precision, request.zero),
        **options,
        **method_fields,
        **moe_fields,
    )


def _moe_fields(request: PlanRequest, model: ModelSpec, engine: str, dp: int, cp: int, tp: int) -> dict[str, Any]:
    """ep, etp, moe_capacity_factor and moe_dispatcher, checked against the model and engine: the experts
    divide evenly over EP, ep x etp fits in the tp x cp x dp ranks the expert groups are carved from (EP
    out of dp x cp with the default etp = tp), and the engine runs it (EXPERT_PARALLEL_ENGINES)."""
    arch = model.architecture
    ep = _positive_int(request.ep, "ep", 4096)
    # None or 0 (how a resolved Plan records "equal to tp", e.g. in report.json): Megatron's default, etp = tp
    etp = tp if request.etp is None or (request.etp == 0 and not isinstance(request.etp, bool)) else None
    etp = etp or _positive_int(request.etp, "etp", 4096)
    dispatcher = _choice(request.moe_dispatcher, "moe_dispatcher", MOE_DISPATCHERS)
    overlap = _optional_bool(request.moe_ep_overlap, "moe_ep_overlap") or False
    capacity = request.moe_capacity_factor
    if not arch.is_moe:
        if ep > 1 or etp != tp or capacity is not None or dispatcher != "alltoall" or overlap:
            raise PlanError(
                f"{model.name} is a dense model: --ep, --etp, --moe-capacity-factor, --moe-dispatcher and "
                "--moe-ep-overlap apply to Mixture-of-Experts models",
                "drop them or pick a MoE model",
            )
        return {"ep": 1, "etp": 0, "moe_capacity_factor": None, "moe_dispatcher": "alltoall", "moe_ep_overlap": False}
    if ep > 1 and engine not in EXPERT_PARALLEL_ENGINES:
        raise PlanError(
            f"--engine {engine} has no expert parallelism: every rank of its ZeRO group holds all experts",
            "use --engine megatron or fsdp (torchtitan) for --ep, or --ep 1",
        )
    if arch.num_experts % ep:
        raise PlanError(
            f"--ep {ep} does not divide the {arch.num_experts} experts of {model.name}",
            f"use an EP degree from {_divisors(arch.num_experts)}",
        )
    if tp % etp:
        raise PlanError(f"--etp {etp} does not divide --tp {tp}", f"use an expert TP degree from {_divisors(tp)}")
    if etp != tp and engine not in EXPERT_PARALLEL_ENGINES:  # its experts are ordinary linears, split over tp
        raise PlanError(
            f"--engine {engine} has no expert tensor parallelism: its experts are split over tp like every linear",
            "leave --etp out, or use --engine megatron or fsdp (torchtitan)",
        )
    if etp not in (1, tp) and engine != "megatron":
        raise PlanError("torchtitan's expert tensor parallelism is 1 or tp", f"use --etp 1 or {tp}")
    ranks = tp * cp * dp // etp
    if ranks % ep:
        what = "dp x cp" if etp == tp else f"tp x cp x dp / etp = {tp * cp * dp} / {etp}"
        raise PlanError(
            f"--ep {ep} does not divide {what} = {ranks}: the expert-parallel group is carved out of the "
            "data-parallel ranks",
            f"use an EP degree from {_divisors(gcd(arch.num_experts, ranks))}",
        )
    if capacity is not None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | float) or not 0 < capacity <= arch.num_experts:
            raise PlanError(
                f"--moe-capacity-factor must be a number above 0 and at most the {arch.num_experts} experts, "
                f"got {quoted(capacity)}",
                "use e.g. 1.0 or 1.25, or leave it out for dropless routing",
            )
        if engine != "megatron":
            raise PlanError(
                "token dropping with a capacity factor is Megatron's (torchtitan and Hugging Face route dropless)",
                "use --engine megatron or leave --moe-capacity-factor out",
            )
        capacity = float(capacity)
    if dispatcher in ("allgather", "flex") and engine != "megatron":
        raise PlanError(f"the {dispatcher} token dispatcher is Megatron's", "use --moe-dispatcher alltoall")
    if overlap:
        _check_ep_overlap(request, engine, ep)
    return {
        "ep": ep,
        "etp": 0 if etp == tp else etp,
        "moe_capacity_factor": capacity,
        "moe_dispatcher": dispatcher,
        "moe_ep_overlap": overlap,
    }


def _recompute_modules(request: PlanRequest, arch, engine: str, checkpointing: str) -> tuple[str, ...]:
    """Megatron's recompute modules, checked: known names, Megatron only, not under full recomputation (which
    recomputes whole blocks), and each applying to the model (moe_act: routed experts; mla_up_proj: MLA)."""
    raw = request.recompute_modules
    names = [n.strip() for n in raw.split(",") if n.strip()] if isinstance(raw, str) else list(raw or ())
    if not names:
        return ()
    unknown = [n for n in names if n not in RECOMPUTE_MODULES]
    if unknown or not all(isinstance(n, str) for n in names):
        raise PlanError(
            f"unknown recompute module(s) {', '.join(map(quoted, unknown))}",
            f"use some of {', '.join(RECOMPUTE_MODULES)}",
        )
    if engine != "megatron":
        raise PlanError("--recompute-modules is Megatron's fine-grained recomputation", "drop it or use Megatron")
    if checkpointing == "full":
        raise PlanError("--recompute-modules with full checkpointing: full already recomputes every block", "drop one")
    if "moe_act" in names and not arch.is_moe:
        raise PlanError("the moe_act recompute module applies to Mixture-of-Experts models", "drop moe_act")
    if "mla_up_proj" in names and not arch.is_mla:
        raise PlanError("the mla_up_proj recompute module applies to latent-attention models", "drop mla_up_proj")
    return tuple(m for m in RECOMPUTE_MODULES if m in names)


def _mtp_layers(value: Any, model: ModelSpec, engine: str) -> int:
    """The multi-token-prediction depths the plan trains: the model's own (Megatron's default here, as NeMo's
    and Megatron-Bridge's DeepSeek-V3 recipes set mtp_num_layers 1) or 0; only Megatron-Core has the module."""
    depth = model.architecture.mtp_layers
    if value is None:
        return depth if engine == "megatron" else 0
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, depth):
        choices = "0" if depth == 0 else f"0 or {depth}"
        raise PlanError(
            f"--mtp-layers must be {choices} for {model.name} (its multi-token-prediction depths), got {quoted(value)}",
            f"use --mtp-layers {choices.split()[-1]}",
        )
    if value and engine != "megatron":
        raise PlanError(
            f"multi-token prediction is modelled for Megatron-Core (--mtp-num-layers) only, not --engine {engine}",
            "use --engine megatron, or --mtp-layers 0",
        )
    return value


def _check_ep_overlap(request: PlanRequest, engine: str, ep: int) -> None:
    """Megatron's combined 1F1B schedule runs with EP > 1, without full recomputation, and under pipelining only
    with virtual stages (Megatron-Core docs, 'Combined 1F1B: Expert-Parallel All-to-All Overlap')."""
    if engine != "megatron":
        raise PlanError("the EP all-to-all overlap (combined 1F1B) is Megatron's", "drop --moe-ep-overlap")
    if ep == 1:
        raise PlanError("--moe-ep-overlap hides expert-parallel exchanges, and --ep is 1", "raise --ep or drop it")
    if request.checkpointing == "full":
        raise PlanError("Megatron's EP all-to-all overlap does not run with full recomputation", "drop one of them")
    if request.pp != 1 and request.pp_schedule != "interleaved":
        raise PlanError(
            "Megatron's EP all-to-all overlap under pipelining needs the interleaved schedule",
            "add --pp-schedule interleaved --virtual-stages N, or drop --moe-ep-overlap",
        )


def _fp8_recipe(recipe: Any, precision: str, gpu: GpuSpec) -> str:
    """The fp8 scaling recipe; mxfp8 needs Blackwell's block-scaled tensor cores (torchao's MX training
    requires CUDA capability 10.0+; TransformerEngine's MXFP8BlockScaling likewise)."""
    recipe = _choice(recipe, "fp8_recipe", FP8_RECIPES)
    if precision == "fp8" and recipe == "mxfp8" and gpu.architecture != "blackwell":
        raise PlanError(
            f"--fp8-recipe mxfp8 needs Blackwell tensor cores; {gpu.name} is {gpu.architecture or 'not Blackwell'}",
            "use --fp8-recipe tensorwise, rowwise or delayed, or a Blackwell GPU",
        )
    return recipe


def _stated_split(request: PlanRequest, num_layers: int, pp: int, engine: str) -> tuple[int, int] | None:
    """(first, last) rank blocks of an uneven split the request states, checked as Megatron-Core's
    get_num_layers_to_build does: both given, Megatron, pp > 1, the rest dividing evenly over the ranks between."""
    first, last = request.first_stage_layers, request.last_stage_layers
    if first is None and last is None:
        return None
    if first is None or last is None:
        raise PlanError(
            "--first-stage-layers and --last-stage-layers go together",
            "give both (the blocks on the first and last rank)",
        )
    if engine != "megatron":
        raise PlanError(
            "stated first/last pipeline-stage blocks are Megatron's (--decoder-first/last-pipeline-num-layers)",
            "use --engine megatron, or drop --first-stage-layers/--last-stage-layers",
        )
    if pp == 1:
        raise PlanError("--first-stage-layers/--last-stage-layers need pipeline parallelism", "add --pp 2 or more")
    values = []
    for name, value in (("first_stage_layers", first), ("last_stage_layers", last)):
        # At least one block: a rank with none has no block time or activations to scale (0/0 in the model).
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_layers:
            flag = f"--{name.replace('_', '-')}"
            raise PlanError(f"{flag} must be a block count from 1 to {num_layers}, got {quoted(value)}", "fix it")
        values.append(value)
    rest = num_layers - first - last
    if pp > 2 and rest < pp - 2:
        raise PlanError(
            f"--first-stage-layers {first} and --last-stage-layers {last} leave {max(rest, 0)} of the {num_layers} "
            f"blocks for the {pp - 2} ranks between, which need at least one block each",
            "lower --first-stage-layers/--last-stage-layers",
        )
    if rest < 0 or (pp == 2 and rest) or (pp > 2 and rest % (pp - 2)):
        raise PlanError(
            f"--first-stage-layers {first} and --last-stage-layers {last} leave {rest} of the {num_layers} blocks, "
            f"which do not split evenly over the {pp - 2} ranks between",
            "pick first and last counts whose remainder divides by pp - 2",
        )
    return values[0], values[1]


def _check_stated_chunks(split: tuple[int, int], num_layers: int, pp: int, virtual: int) -> None:
    """Under interleaving the middle ranks' blocks split into V equal chunks and the first rank's first chunk
    and the last rank's last chunk take the difference, which must not be negative."""
    if virtual == 1:
        return
    first, last = split
    if pp == 2:
        raise PlanError("a stated interleaved split needs ranks between the first and the last", "use --pp 3 or more")
    middle = (num_layers - first - last) // (pp - 2)
    if middle % virtual or min(first, last) < (virtual - 1) * (middle // virtual):
        raise PlanError(
            f"with {virtual} chunks per rank the middle ranks' {middle} blocks must split into equal chunks and the "
            f"first ({first}) and last ({last}) ranks hold at least {virtual - 1} such chunks "
            f"({(virtual - 1) * (middle // virtual)} blocks)",
            "adjust --first-stage-layers/--last-stage-layers or --virtual-stages",
        )


def _pipeline_schedule(
    request: PlanRequest,
    num_layers: int,
    pp: int,
    grad_accum: int,
    engine: str,
    stated_split: tuple[int, int] | None = None,
) -> tuple[str, int]:
    """The schedule and its virtual stages, with the rules Megatron-LM applies to interleaving
    (megatron/training/arguments.py: the layers split evenly into pp x V chunks; the micro-batches of a step
    are a multiple of pp, as core_r0.9's interleaved schedule asserts). torch.distributed.pipelining's
    ScheduleInterleaved1F1B (torchtitan) is held to the same rules."""
    schedule = _choice(request.pp_schedule, "pp_schedule", PP_SCHEDULES)
    virtual = _positive_int(request.virtual_stages, "virtual_stages", 4096)
    if schedule == "1f1b":
        if virtual != 1:
            raise PlanError(
                f"--virtual-stages {virtual} needs the interleaved schedule", "add --pp-schedule interleaved"
            )
        return schedule, virtual
    if pp == 1:
        raise PlanError("--pp-schedule interleaved needs pipeline parallelism", "add --pp 2 or more")
    if virtual < 2:
        raise PlanError("--pp-schedule interleaved needs --virtual-stages 2 or more", "add --virtual-stages 2")
    if stated_split is None and not interleaved_split_fits(num_layers, pp, virtual):
        raise PlanError(
            f"the {num_layers} layers do not split into pp x virtual stages = {pp} x {virtual} = {pp * virtual} "
            "equal chunks, with or without the embedding and the loss counted as one layer each",
            f"use --virtual-stages from {_virtual_stage_choices(num_layers, pp)}",
        )
    if grad_accum % pp:
        raise PlanError(
            f"the interleaved schedule needs the micro-batches per step ({grad_accum}) to be a multiple of --pp {pp}",
            "raise --global-batch to a multiple of micro_batch x dp x pp",
        )
    return schedule, virtual


def interleaved_split_fits(num_layers: int, pp, virtual):
    """Whether the blocks split into pp x V equal model chunks for the interleaved schedule: the blocks
    alone, or with the embedding and the loss counted as one layer each, so that the first and the last
    chunk hold one block fewer (Megatron-Core's --account-for-embedding-in-pipeline-split and
    --account-for-loss-in-pipeline-split, whose validate_args checks (layers + 2) against pp and V;
    torchtitan's pipeline_parallel_first/last_stage_less_layers). Llama 3 405B: 126 + 2 = 128 = 16 x 8,
    the split of Meta's own schedule, which removed one layer from the first and the last stage (Llama 3
    paper, arXiv 2407.21783, Sec. 3.3.2). Arrays allowed."""
    chunks = pp * virtual
    return (num_layers % chunks == 0) | ((num_layers + 2) % chunks == 0)


def embedding_and_loss_as_layers(num_layers: int, pp: int, virtual: int) -> bool:
    """The interleaved split needs the embedding and the loss counted as layers (the blocks alone do not
    split into pp x V equal chunks)."""
    return virtual > 1 and num_layers % (pp * virtual) != 0 and (num_layers + 2) % (pp * virtual) == 0


def _virtual_stage_choices(num_layers: int, pp: int) -> str:
    values = [v for v in range(2, num_layers + 3) if interleaved_split_fits(num_layers, pp, v)]
    return ", ".join(map(str, values)) or "none (pp must divide the layers, or the layers + 2)"


def _megatron_switch(value: Any, name: str, engine: str, what: str) -> bool:
    """An on/off option only Megatron has (`what` it does, for the message): true or false, and on only with
    --engine megatron."""
    if not isinstance(value, bool):
        raise PlanError(f"{name} must be true or false, got {quoted(value)}", "fix it")
    flag = "--" + name.replace("_", "-")
    if value and engine != "megatron":
        raise PlanError(
            f"{flag} is Megatron's ({what}); --engine {engine} has no such option",
            f"drop {flag} or use --engine megatron",
        )
    return value


def _fp8_param_gather(value: Any, engine: str, precision: str, zero: int) -> bool:
    """--fp8-param-gather, where it exists: Megatron in fp8 with the distributed optimizer."""
    if not _megatron_switch(value, "fp8_param_gather", engine, "fp8 parameters of the distributed optimizer"):
        return False
    if precision != "fp8":
        raise PlanError(
            f"--fp8-param-gather keeps fp8 weights, and --precision {precision} has none", "use --precision fp8"
        )
    if zero != 1:
        raise PlanError(
            f"--fp8-param-gather gathers the distributed optimizer's parameters (--zero 1), not --zero {zero}'s",
            "use --zero 1",
        )
    return True


def _tp_comm_overlap(value: Any, engine: str, tp: int, sequence_parallel: bool) -> bool:
    """--tp-comm-overlap, where it exists: Megatron with Transformer Engine, tp > 1, sequence parallelism."""
    if not _megatron_switch(value, "tp_comm_overlap", engine, "Transformer Engine userbuffers"):
        return False
    if tp == 1:
        raise PlanError("--tp-comm-overlap overlaps tensor-parallel traffic, and --tp 1 has none", "use --tp 2 or more")
    if not sequence_parallel:
        raise PlanError(
            "--tp-comm-overlap needs sequence parallelism (Megatron-LM refuses it without)",
            "drop --no-sequence-parallel or --tp-comm-overlap",
        )
    return True


def _optional_bool(value: Any, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise PlanError(f"{name} must be true or false, got {quoted(value)}", "fix it")
    return value


def _engine_options(
    request: PlanRequest, engine: str, zero: int, checkpointing: str, precision: str, num_layers: int
) -> dict:
    """Engine options of published recipes, with each engine's default where the request leaves one open."""
    reduce_bf16 = _optional_bool(request.grad_reduce_bf16, "grad_reduce_bf16")
    overlap_reduce = _optional_bool(request.overlap_grad_reduce, "overlap_grad_reduce")
    overlap_gather = _optional_bool(request.overlap_param_gather, "overlap_param_gather")
    if reduce_bf16 is False and engine == "deepspeed":
        raise PlanError(
            "DeepSpeed reduces gradients in the model dtype; an fp32 reduction is not modelled",
            "drop --no-grad-reduce-bf16",
        )
    if reduce_bf16 and (precision == "fp32" or (engine == "fsdp" and zero == 0)):
        raise PlanError(
            "bf16 gradient reduction applies to mixed-precision Megatron, FSDP (ZeRO-2/3) and DeepSpeed plans",
            "drop --grad-reduce-bf16",
        )
    if engine == "fsdp" and (overlap_reduce is not None or overlap_gather is not None):
        raise PlanError(
            "FSDP always overlaps its all-gathers and reduce-scatters with compute",
            "drop --overlap-grad-reduce/--overlap-param-gather with --engine fsdp",
        )
    if overlap_gather is not None and not (engine == "megatron" and zero == 1):
        raise PlanError(
            "--overlap-param-gather is the Megatron distributed optimizer's (ZeRO-1) option",
            "use it with --engine megatron --zero 1",
        )
    if overlap_reduce is not None and engine == "deepspeed" and zero == 0:
        raise PlanError("DeepSpeed's overlap_comm needs ZeRO 1-3", "add --zero 1, 2 or 3")
    every = _positive_int(request.checkpointing_every, "checkpointing_every", num_layers)
    if every > 1 and checkpointing != "full":
        raise PlanError("--checkpointing-every N checkpoints every N-th block fully", "add --checkpointing full")
    if every > 1 and engine == "deepspeed":
        raise PlanError(
            "Hugging Face models checkpoint every layer or none (activation_checkpointing_enable)",
            "use --engine fsdp or megatron for --checkpointing-every",
        )
    version = request.fsdp_version
    if isinstance(version, bool) or version not in FSDP_VERSIONS:
        raise PlanError(f"--fsdp-version must be 1 or 2, got {version!r}", "pick one of those")
    if version == 1 and engine != "fsdp":
        raise PlanError("--fsdp-version 1 applies to --engine fsdp", "drop --fsdp-version or use --engine fsdp")
    return {
        "grad_reduce_bf16": reduce_bf16,
        "overlap_grad_reduce": overlap_reduce,
        "overlap_param_gather": overlap_gather,
        "checkpointing_every": every,
        "fsdp_version": version,
    }


def _method_fields(request: PlanRequest, arch) -> dict[str, Any]:
    """method, lora_rank, lora_targets, lora_dropout and trainable_layers, checked against the model."""
    method = _choice(request.method, "method", METHODS)
    rank = request.lora_rank
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= arch.hidden_size:
        raise PlanError(
            f"--lora-rank must be a whole number from 1 to the hidden size {arch.hidden_size}, got {rank!r}",
            "use a rank such as 8, 16 or 64",
        )
    targets = _choice(request.lora_targets, "lora_targets", LORA_TARGETS)
    dropout = request.lora_dropout
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise PlanError(f"--lora-dropout must be in [0, 1), got {dropout!r}", "use e.g. 0.0 or 0.05")
    layers = 0
    if method == "freeze":
        wanted = DEFAULT_TRAINABLE_LAYERS if request.trainable_layers is None else request.trainable_layers
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= arch.num_layers:
            raise PlanError(
                f"--trainable-layers must be from 1 to the model's {arch.num_layers} layers, got {wanted!r}",
                f"use --trainable-layers {min(DEFAULT_TRAINABLE_LAYERS, arch.num_layers)}, or --method full",
            )
        layers = wanted
    elif request.trainable_layers not in (None, 0):
        raise PlanError("--trainable-layers applies to --method freeze only", "drop it or add --method freeze")
    return {
        "method": method,
        "lora_rank": rank,
        "lora_targets": targets,
        "lora_dropout": float(dropout),
        "trainable_layers": layers,
    }


def method_fields_for(method: str, settings: dict[str, Any], arch) -> dict[str, Any]:
    """The method fields of a plan for `method` with the user's LoRA/freeze settings (the search's way in:
    `trainable_layers` applies to freeze only, the others are ignored by methods that do not use them)."""
    keys = ("lora_rank", "lora_targets", "lora_dropout") + (("trainable_layers",) if method == "freeze" else ())
    given = {k: settings[k] for k in keys if settings.get(k) is not None}
    return _method_fields(PlanRequest(model="", method=method, **given), arch)


def check_peft_target(method: str, model: ModelSpec) -> None:
    """LoRA and QLoRA are PEFT wrapping the Hugging Face implementation's linear modules by name; a model with
    no Hugging Face implementation (a Megatron-, NeMo- or Paddle-only checkpoint: no `hf_model_type` in its
    catalog entry) has nothing PEFT can target."""
    if method in ("lora", "qlora") and model.hf_model_type is None:
        raise PlanError(
            f"--method {method} needs a Hugging Face model for PEFT to wrap; {model.name} (family {model.family}) "
            "has no Hugging Face implementation (no hf_model_type in its catalog entry)",
            "use --method full or freeze, or a model from `planner models` or a config.json",
        )


def _check_method(
    method: str,
    engine: str,
    tp: int,
    pp: int,
    cp: int,
    checkpointing: str,
    offload: str,
    precision: str,
    compile_: bool,
) -> None:
    """What is modelled for PEFT plans: the Hugging Face Trainer with PEFT (single GPU, DDP, FSDP or
    DeepSpeed), data parallelism only, whole-layer checkpointing, no offload or torch.compile."""
    if method == "full":
        return
    if method == "qlora" and precision not in ("bf16", "fp16", "pure-bf16"):
        raise PlanError(
            f"QLoRA computes in bf16/fp16 on 4-bit weights, not with --precision {precision}",
            "use --precision bf16",
        )
    if engine == "megatron":
        raise PlanError(
            f"--method {method} is modelled for Hugging Face PEFT under DeepSpeed or FSDP/DDP", "use --engine fsdp"
        )
    if tp * pp * cp > 1:
        raise PlanError(
            f"--method {method} is modelled with data parallelism only (HF Trainer + PEFT)", "use --tp 1 --pp 1 --cp 1"
        )
    if checkpointing == "selective":
        raise PlanError("the Hugging Face Trainer checkpoints whole layers only", "use --checkpointing full or none")
    if offload != "none":
        raise PlanError(f"CPU offload is not modelled for --method {method}", "use --offload none")
    if compile_:
        raise PlanError(f"torch.compile is not modelled for --method {method}", "drop --compile")


SOFTCAP_FLASH_VERSIONS = (2, 3)
"""FlashAttention versions whose kernels soft-cap the attention scores (Gemma 2's attn_logit_softcapping):
FlashAttention 2.6.0 added `softcap` (Dao-AILab/flash-attention PR #1025; transformers PR #31887 passes it
for Gemma 2; LLaMA-Factory requires flash_attn >= 2.6.3 to train Gemma 2 with it), and TransformerEngine
PR #3391 (2026-08) dispatches soft-capped attention to FlashAttention 2.6+ and to FlashAttention-3 builds
that have it (head_dim <= 256). FlashAttention-1 and PyTorch SDPA have no cap: transformers' SDPA path
silently drops it, so a soft-capped model runs with eager attention or one of these kernels."""


def _flash_attention_version(request: PlanRequest, gpu: GpuSpec, arch: Architecture) -> int:
    version = request.flash_attention_version
    if isinstance(version, bool) or version not in FLASH_ATTENTION_VERSIONS:
        raise PlanError(f"--flash-attention-version must be 1, 2 or 3, got {version!r}", "pick one of those")
    if request.flash_attention and version not in gpu.flash_attention_versions():
        raise PlanError(
            f"FlashAttention-{version} does not run on {gpu.name}",
            f"use --flash-attention-version {gpu.flash_attention_versions()[-1]}",
        )
    if request.flash_attention and arch.attn_logit_softcap and version not in SOFTCAP_FLASH_VERSIONS:
        raise PlanError(
            f"FlashAttention-{version} cannot soft-cap the attention scores (cap {arch.attn_logit_softcap:g})",
            "use --flash-attention-version 2 (flash-attn >= 2.6) or --no-flash-attention (eager attention)",
        )
    return version


def _check_engine(
    engine: str, zero: int, tp: int, pp: int, cp: int, checkpointing: str, offload: str, precision: str
) -> None:
    """What each engine can run, as of DeepSpeed 0.16, PyTorch 2.5+ (torchtitan) and Megatron-Core 0.9+."""
    if engine == "deepspeed":
        if pp > 1:
            raise PlanError(
                "DeepSpeed pipeline parallelism needs a PipelineModule model and is not modelled",
                "use --engine megatron or --engine fsdp for --pp > 1",
            )
        if cp > 1:
            raise PlanError("context parallelism is not modelled for DeepSpeed", "use --engine megatron or fsdp")
        if tp > 1 and zero == 3:
            raise PlanError("DeepSpeed AutoTP training supports ZeRO stages 0-2 only", "use --zero 2 or --tp 1")
        if checkpointing == "selective":
            raise PlanError(
                "Hugging Face models under DeepSpeed checkpoint whole layers only", "use --checkpointing full or none"
            )
        if precision == "pure-bf16" and zero == 0:
            raise PlanError(
                "DeepSpeed keeps bf16 master weights (bf16_master_weights_and_grads) only under ZeRO 1-3",
                "add --zero 1, 2 or 3, or use --precision bf16",
            )
    elif engine == "fsdp":
        if zero == 1:
            raise PlanError(
                "FSDP has no optimizer-only sharding (ZeRO-1)",
                "use --zero 2 (SHARD_GRAD_OP), --zero 3 (FULL_SHARD) or --engine deepspeed",
            )
        if offload == "optimizer":
            raise PlanError(
                "FSDP's CPU offload moves parameters, gradients and the optimizer together",
                "use --offload optimizer+params with --zero 3",
            )
    elif engine == "megatron" and precision == "pure-bf16" and zero == 0:
        raise PlanError(
            "Megatron keeps bf16 optimizer states only in its precision-aware distributed optimizer",
            "add --zero 1, or use --precision bf16",
        )
    elif engine == "megatron" and zero > 1:
        raise PlanError(
            "Megatron-LM's distributed optimizer is ZeRO-1",
            "use --zero 1 (or 0) with --engine megatron, or --engine fsdp/deepspeed for ZeRO-2/3",
        )
    if offload == "optimizer" and zero == 0:
        raise PlanError(
            "optimizer offload needs ZeRO-1 or higher (DeepSpeed ZeRO-Offload, Megatron's distributed optimizer)",
            "add --zero 1, 2 or 3",
        )
    if offload == "optimizer+params" and (zero != 3 or engine == "megatron"):
        raise PlanError(
            "parameter offload needs ZeRO-3 (DeepSpeed) or FULL_SHARD (FSDP)",
            "use --zero 3 with --engine deepspeed or fsdp",
        )


def _check_precision_on_gpu(precision: str, gpu: GpuSpec) -> None:
    needs = {"bf16": "bf16", "pure-bf16": "bf16", "fp8": "fp8", "fp16": "fp16"}.get(precision)
    if needs and not gpu.peak_tflops(needs):
        alt = "fp16" if precision in ("bf16", "pure-bf16") else "bf16"
        raise PlanError(
            f"{gpu.name} has no {needs} tensor cores for --precision {precision}",
            f"use --precision {alt} or another GPU",
        )


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _nearest_multiple(value: int, step: int) -> int:
    return max(step, round(value / step) * step)
