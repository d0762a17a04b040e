"""Step time, throughput, MFU/HFU of a plan (pure functions of model, GPU and plan).

Per micro-batch on the slowest pipeline stage:

    t_mb = compute + exposed tensor-parallel comm + exposed context-parallel comm + pipeline p2p

    compute = matmul FLOPs / (peak[matmul dtype] x eff) + attention FLOPs / (peak[bf16] x eff)
              (+ score-matrix memory traffic for eager attention)
    eff     = max x T/(T + half_tokens) x w/(w + half_width)   (GPU-specific, fitted: hardware/*.yaml)

Per step: the 1F1B pipeline runs (grad_accum + pp - 1) micro-batch slots (the (pp-1)/(m+pp-1) bubble),
then the data-parallel communication that compute could not hide, the optimizer update and CPU offload.
"""

from dataclasses import asdict, dataclass, field

from planner.catalog import GpuSpec, ModelSpec
from planner.catalog.hardware import ComputeEfficiency
from planner.memory.activations import compute_bytes
from planner.memory.buffers import compute_param_bytes
from planner.memory.stages import layers_on_stage, stage_shards
from planner.memory.states import optimizer_bytes_per_param, state_layout
from planner.performance import comm
from planner.performance.flops import FlopsPerToken, flops_per_token
from planner.plan import Plan

UNFITTED_EFFICIENCY = ComputeEfficiency(
    max=0.5, half_tokens=256.0, half_width=256.0, source="not fitted for this GPU: a conservative default"
)
"""Used only for GPUs whose catalog file has no fitted `compute_efficiency` (the output says so)."""

EAGER_ATTENTION_SCORE_PASSES = 10
"""Memory passes over the s x s score matrix without flash attention: forward writes the scores, the
softmax reads them and writes probabilities, the weighted sum reads them (4); backward reads the
probabilities twice, writes and reads their gradient and writes the scores' gradient (6)."""

HOST_MEMORY_BANDWIDTH_GBPS_PER_NODE = 280.0
"""Host DRAM bandwidth of a dual-socket GPU server: 2 sockets x 6 channels x DDR4-2933 (23.5 GB/s) =
282 GB/s (AWS p4d's Xeon 8275CL). CPU Adam is bound by it and shares it among the node's GPUs."""

HBM_EFFICIENCY = 0.8
"""Share of peak HBM bandwidth memory-bound kernels (optimizer update, eager softmax) reach."""

COMPILE_POINTWISE_REMAINING = 0.5
"""Share of the pointwise (norm, activation, RoPE, residual) overhead left after torch.compile fuses it:
the width term's half_width is scaled by this. Derived from torchtitan's Llama-3.1-8B on 8 and 128 H100s
(benchmarks/llama3_h100_202412_torchtitan.md, Tables 1 and 3): 5,762 -> 6,667 and 5,605 -> 6,514 tokens/s
per GPU with compile (+16%); the hopper fit gives +17% with this value."""

TP_COLLECTIVES_PER_LAYER = 8
"""Per block and micro-batch with sequence parallelism: all-gather + reduce-scatter around attention and
around the MLP in forward (4) and their mirrors in backward (4) (Korthikanti et al. 2022, Fig. 5);
without sequence parallelism the 4 all-reduces move the same volume."""


@dataclass(frozen=True)
class PerformanceEstimate:
    step_time_s: float
    tokens_per_s: float
    """Whole job."""
    tokens_per_s_per_gpu: float
    mfu: float
    """Model FLOPs utilisation against the dense peak of the plan's matmul dtype."""
    hfu: float
    tflops_per_gpu: float
    """Model TFLOP/s per GPU."""
    compute_efficiency: float
    """The matmul efficiency the compute time used."""
    efficiency_source: str
    flops_per_token: dict[str, float]
    breakdown_s: dict[str, float]
    """Where the step time goes (sums to step_time_s)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "tflops_per_gpu"):
            out[key] = round(out[key], 6 if key == "step_time_s" else 3)
        out["mfu"] = round(self.mfu, 4)
        out["hfu"] = round(self.hfu, 4)
        out["compute_efficiency"] = round(self.compute_efficiency, 4)
        out["breakdown_s"] = {k: round(v, 6) for k, v in self.breakdown_s.items()}
        out["flops_per_token"] = {k: round(v) for k, v in self.flops_per_token.items()}
        return out


def matmul_dtype(plan: Plan) -> str:
    """Tensor-core dtype of the matmuls: fp32 training runs TF32 matmuls (Megatron and torchtitan enable
    it; `torch.backends.cuda.matmul.allow_tf32`), FP8 recipes run linears in fp8."""
    return {"bf16": "bf16", "pure-bf16": "bf16", "fp16": "fp16", "fp32": "tf32", "fp8": "fp8"}[plan.precision]


def _peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    value = gpu.peak_tflops(dtype) or gpu.peak_tflops("fp16") or gpu.peak_tflops("fp32")
    return float(value)


def efficiency(gpu: GpuSpec, tokens: float, width: float, compiled: bool = False) -> tuple[float, ComputeEfficiency]:
    """Achieved fraction of peak for GEMMs with `tokens` rows and `width` = hidden size per TP shard.
    The width factor stands for pointwise work, whose cost relative to the matmuls falls as 1/width;
    torch.compile fuses part of it away."""
    params = gpu.compute_efficiency or UNFITTED_EFFICIENCY
    half_width = params.half_width * (COMPILE_POINTWISE_REMAINING if compiled else 1.0)
    value = params.max * tokens / (tokens + params.half_tokens) * width / (width + half_width)
    return value, params


@dataclass(frozen=True)
class _StageWork:
    matmul_flops: float
    attention_flops: float
    forward_share: float
    layers: int


def _stage_work(flops: FlopsPerToken, plan: Plan, num_layers: int, stage: int) -> _StageWork:
    """Hardware FLOPs per token one pipeline stage executes (before dividing by TP)."""
    layers = layers_on_stage(num_layers, plan.pp, stage)
    share = layers / num_layers
    head = flops.lm_head if stage == plan.pp - 1 else 0.0
    attention = (flops.attention + flops.flash_backward_recompute) * share
    block_recompute = flops.recompute * share
    matmul = flops.block_matmuls * share + head + block_recompute
    if plan.checkpointing == "selective":  # selective recompute is attention work
        matmul -= block_recompute
        attention += block_recompute
    total = matmul + attention
    forward = (flops.block_matmuls + flops.attention) * share / 3 + head / 3
    return _StageWork(matmul, attention, forward / total if total else 0.0, layers)


def _dp_exposed_s(plan: Plan, gpu: GpuSpec, params: float, fwd_s: float, bwd_s: float) -> tuple[float, float]:
    """(per-step exposed data-parallel communication, per-step total) for the plan's engine and ZeRO stage.

    Volumes: DeepSpeed reduces and gathers bf16 (ZeRO-1/2: reduce-scatter + all-gather per step, ZeRO-2
    reduce-scatters every micro-batch; ZeRO-3 gathers parameters in forward and backward and reduce-
    scatters every micro-batch); FSDP2 gathers bf16 and reduce-scatters fp32; Megatron reduces fp32
    main_grads (all-reduce, or reduce-scatter + bf16 all-gather with the distributed optimizer).
    Overlap: DeepSpeed ZeRO-0/1/2 default overlap_comm=false (exposed); ZeRO-3, FSDP and DDP overlap with
    the compute of the same pass; Megatron with --overlap-grad-reduce/--overlap-param-gather (the launch
    configs enable them) hides the step's reduction behind the last micro-batch's backward and the
    gather behind the next step's first forward."""
    n = plan.shard_degree
    if n <= 1:
        return 0.0, 0.0
    bw = comm.group_bandwidth_gbps(gpu, n, plan.tp, plan.gpus_per_node)
    c = compute_param_bytes(plan)
    ga = plan.grad_accum

    def ag(bytes_per_param: float) -> float:
        return comm.all_gather_s(params * bytes_per_param, n, bw)

    def ar(bytes_per_param: float) -> float:
        return comm.all_reduce_s(params * bytes_per_param, n, bw)

    if plan.engine == "deepspeed":
        if plan.zero == 0:
            total = ar(c)
            return total, total
        if plan.zero in (1, 2):
            reductions = ag(c) * (ga if plan.zero == 2 else 1)
            total = reductions + ag(c)
            return total, total
        per_mb_exposed = max(0.0, ag(c) - fwd_s) + max(0.0, ag(c) + ag(c) - bwd_s)
        return ga * per_mb_exposed, ga * 3 * ag(c)
    if plan.engine == "fsdp":
        reduce_bytes = 4 if plan.precision in ("bf16", "fp16", "fp8") else c
        if plan.zero == 0:
            grad_bytes = 4 if plan.precision in ("bf16", "fp16", "fp8", "fp32") else c
            total = ar(grad_bytes)
            return max(0.0, total - bwd_s), total
        gathers_per_mb = 2 if plan.zero == 3 else 1
        if plan.pp > 1:  # pipelining keeps parameters unsharded and skips gradient sync until the last micro-batch
            total = ag(c) + ag(reduce_bytes)
            return max(0.0, ag(c) - fwd_s) + max(0.0, ag(reduce_bytes) - bwd_s), total
        forward = ag(c)
        backward = ag(c) * (gathers_per_mb - 1) + ag(reduce_bytes)
        per_mb_exposed = max(0.0, forward - fwd_s) + max(0.0, backward - bwd_s)
        return ga * per_mb_exposed, ga * (forward + backward)
    # megatron: fp32 main_grad reduction
    if plan.zero == 0:
        total = ar(4)
        return max(0.0, total - bwd_s), total
    reduce, gather = ag(4), ag(c)
    return max(0.0, reduce - bwd_s) + max(0.0, gather - fwd_s), reduce + gather


def _optimizer_step_s(model: ModelSpec, plan: Plan, gpu: GpuSpec, params: float) -> tuple[float, float]:
    """(GPU update time, CPU offload time) of one optimizer step.

    The update is memory-bound: it reads and writes the master weights and optimizer states, reads the
    gradients and writes the low-precision weights. With optimizer offload the update runs on the host
    (bound by host DRAM bandwidth shared by the node's GPUs) and gradients go down / weights come back
    over PCIe; with parameter offload the weights also cross PCIe for every forward and backward."""
    arch = model.architecture
    terms = {t.name: t for t in state_layout(arch, plan)}
    opt = optimizer_bytes_per_param(arch, plan)
    master = terms["master_weights"].bytes_per_param if "master_weights" in terms else 0.0
    grad = terms["gradients"].bytes_per_param if "gradients" in terms else 2.0
    low = compute_param_bytes(plan)
    shard = plan.shard_degree if plan.zero >= 1 else 1
    touched = (2 * master + 2 * opt + grad + low) * params / shard
    if plan.offload == "none":
        return touched / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY), 0.0
    host_bw = HOST_MEMORY_BANDWIDTH_GBPS_PER_NODE / plan.gpus_per_node * 1e9
    pcie = comm.host_link_bandwidth_gbps(gpu) * 1e9
    offload = touched / host_bw + 2 * low * params / shard / pcie
    if plan.offload == "optimizer+params":
        offload += plan.grad_accum * 2 * low * params / shard / pcie
    return 0.0, offload


def estimate_performance(model: ModelSpec, gpu: GpuSpec, plan: Plan) -> PerformanceEstimate:
    """Step time and throughput of `plan` for `model` on `gpu`."""
    arch = model.architecture
    flops = flops_per_token(arch, plan)
    tokens = plan.tokens_per_micro_batch
    eff, eff_params = efficiency(gpu, tokens, arch.hidden_size / plan.tp, plan.compile)
    peak_matmul = _peak_tflops(gpu, matmul_dtype(plan)) * 1e12
    peak_attention = _peak_tflops(gpu, "tf32" if plan.precision == "fp32" else "bf16") * 1e12
    a = compute_bytes(plan)

    stages = [_stage_work(flops, plan, arch.num_layers, s) for s in {0, plan.pp - 1}]
    per_stage = []
    for work in stages:
        compute = (
            tokens / plan.tp * (work.matmul_flops / (peak_matmul * eff) + work.attention_flops / (peak_attention * eff))
        )
        if not plan.flash_attention:
            scores = work.layers * tokens * arch.num_attention_heads / plan.tp * plan.seq_len
            compute += scores * EAGER_ATTENTION_SCORE_PASSES * a / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)
        per_stage.append((compute, work))
    compute_s, work = max(per_stage, key=lambda item: item[0])
    forward_s = compute_s * work.forward_share
    backward_s = compute_s - forward_s

    tp_s = 0.0
    if plan.tp > 1:
        bw = comm.group_bandwidth_gbps(gpu, plan.tp, 1, plan.gpus_per_node)
        collectives = TP_COLLECTIVES_PER_LAYER + (4 if plan.checkpointing == "full" else 0)
        tp_s = work.layers * collectives * comm.all_gather_s(tokens * arch.hidden_size * a, plan.tp, bw)
    cp_s = 0.0
    if plan.cp > 1:
        bw = comm.group_bandwidth_gbps(gpu, plan.cp, plan.tp, plan.gpus_per_node)
        kv_bytes = 2 * arch.kv_width * tokens * a / plan.tp
        ring = work.layers * 3 * (plan.cp - 1) * kv_bytes / (bw * 1e9)  # forward k,v; backward k,v and dk,dv
        attention_s = tokens / plan.tp * work.attention_flops / (peak_attention * eff)
        cp_s = max(0.0, ring - attention_s)
    p2p_s = 0.0
    if plan.pp > 1:
        stride = plan.tp * plan.cp * plan.dp
        bw = comm.group_bandwidth_gbps(gpu, 2, stride, plan.gpus_per_node)
        # Sequence parallelism, and Megatron's scatter/gather of the boundary tensor across TP ranks
        # (on by default), send 1/tp of the activation per GPU.
        split = plan.sequence_parallel or plan.engine == "megatron"
        boundary = tokens * arch.hidden_size * a / (plan.tp if split else 1)
        p2p_s = 2 * boundary / (bw * 1e9)

    micro_batch_s = compute_s + tp_s + cp_s + p2p_s
    slots = plan.grad_accum + plan.pp - 1
    bubble_s = (plan.pp - 1) * micro_batch_s
    params = max(s.params for s in stage_shards(arch, plan))
    dp_exposed_s, _ = _dp_exposed_s(plan, gpu, params, forward_s, backward_s)
    optimizer_s, offload_s = _optimizer_step_s(model, plan, gpu, params)

    breakdown = {
        "compute": plan.grad_accum * compute_s,
        "tensor_parallel_comm": plan.grad_accum * tp_s,
        "context_parallel_comm": plan.grad_accum * cp_s,
        "pipeline_p2p": plan.grad_accum * p2p_s,
        "pipeline_bubble": bubble_s,
        "data_parallel_comm": dp_exposed_s,
        "optimizer_step": optimizer_s,
        "offload": offload_s,
    }
    step = micro_batch_s * slots + dp_exposed_s + optimizer_s + offload_s
    tokens_per_s = plan.global_batch * plan.seq_len / step
    per_gpu = tokens_per_s / plan.gpus
    notes = []
    if gpu.compute_efficiency is None:
        notes.append(f"{gpu.name} has no fitted compute efficiency; a conservative default was used")
    return PerformanceEstimate(
        step_time_s=step,
        tokens_per_s=tokens_per_s,
        tokens_per_s_per_gpu=per_gpu,
        mfu=flops.model * per_gpu / peak_matmul,
        hfu=flops.hardware * per_gpu / peak_matmul,
        tflops_per_gpu=flops.model * per_gpu / 1e12,
        compute_efficiency=eff,
        efficiency_source=eff_params.source,
        flops_per_token={"model": flops.model, "hardware": flops.hardware},
        breakdown_s=breakdown,
        notes=notes,
    )
