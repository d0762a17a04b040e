"""Render one estimate as a terminal table (rich) or JSON."""

import json
from io import StringIO

from rich import box
from rich.console import Console
from rich.table import Table

from planner.architecture import moe_plan_text, parameter_text
from planner.estimate import Estimate, trainable_params
from planner.memory import TERMS

TERM_LABELS = {
    "weights": "weights",
    "frozen_weights": "frozen weights (bf16)",
    "quantized_weights": "quantized weights (NF4)",
    "quantization_constants": "quantization constants (double-quantized absmax)",
    "adapter_weights": "LoRA adapter weights",
    "master_weights": "master weights (fp32)",
    "gradients": "gradients",
    "adapter_gradients": "LoRA adapter gradients",
    "unsharded_gradient_accumulators": "unsharded gradient accumulators (PP)",
    "ddp_gradient_buckets": "DDP gradient buckets",
    "optimizer_states": "optimizer states",
    "adapter_optimizer_states": "LoRA adapter optimizer states",
    "fp8_weight_copies": "FP8 weight copies",
    "optimizer_step_temporaries": "optimizer-step temporaries",
    "activations": "activations (saved for backward)",
    "logits_and_loss": "logits + cross-entropy",
    "recompute_and_backward": "block recompute + backward workspace",
    "gathered_parameters": "gathered (unsharded) parameters",
    "dequantized_weight_buffer": "dequantized weight (QLoRA, one at a time)",
    "communication_buckets": "communication buckets",
    "autocast_weight_copies": "autocast bf16 weight copies",
    "pipeline_buffers": "pipeline send/recv buffers",
    "allocator_fragmentation": "allocator fragmentation (reserved - allocated)",
    "fsdp1_stream_blocks": "FSDP1 side-stream blocks (record_stream)",
    "cuda_context": "CUDA context + kernels",
    "nccl_communicators": "NCCL communicators",
}
PHASE_LABELS = {
    "loss": "forward/backward seam at the loss",
    "backward": "backward through the blocks",
    "optimizer_step": "optimizer step",
}


def render_json(estimate: Estimate) -> str:
    return json.dumps(estimate.to_dict(), indent=2) + "\n"


def _model_line(estimate: Estimate) -> str:
    model = estimate.model
    alias = f" (alias '{model.resolved_from}' resolves to {model.name})" if model.resolved_from else ""
    line = f"{model.name}{alias}, {parameter_text(model.architecture)}"
    if estimate.plan.peft:
        line += f", {trainable_params(model, estimate.plan):,} trainable"
    return line


def _plan_lines(estimate: Estimate) -> list[str]:
    p = estimate.plan
    gpu = estimate.gpu
    capacity_note = " (capacity overridden)" if gpu.memory_overridden else ""
    return [
        f"{p.gpus} x {gpu.name}{capacity_note} on {p.nodes} node(s) of {p.gpus_per_node}"
        + (
            f", network {gpu.node.inter_node_bandwidth_gbps_per_gpu:g} GB/s per GPU (overridden)"
            if gpu.network_overridden
            else ""
        ),
        f"dp {p.dp} x tp {p.tp} x pp {p.pp} x cp {p.cp}; {p.engine}, ZeRO-{p.zero}"
        + (", sequence parallel" if p.sequence_parallel else "")
        + (", TP comm overlap" if p.tp_comm_overlap else "")
        + (", fp8 parameter gather" if p.fp8_param_gather else "")
        + (f"; {moe_plan_text(p)}" if estimate.model.architecture.is_moe else "")
        + (f"; interleaved schedule, {p.virtual_stages} chunks per stage" if p.pp_schedule == "interleaved" else "")
        + (
            f"; blocks on the first/last rank {p.first_stage_layers}/{p.last_stage_layers}"
            if p.first_stage_layers is not None
            else ""
        ),
        f"micro-batch {p.micro_batch} x grad-accum {p.grad_accum} x dp {p.dp} = global batch {p.global_batch}"
        f" sequences of {p.seq_len} tokens",
        f"checkpointing {p.checkpointing}"
        + (f" + recompute {', '.join(p.recompute_modules)}" if p.recompute_modules else "")
        + f", precision {p.precision}"
        + (f" ({p.fp8_recipe} scaling)" if p.precision == "fp8" else "")
        + f", optimizer {p.optimizer}, offload {p.offload}",
        f"flash attention {f'on (FlashAttention-{p.flash_attention_version})' if p.flash_attention else 'off'}, "
        f"loss {p.loss}" + (", torch.compile" if p.compile else ""),
        *([_method_line(p)] if p.peft else []),
    ]


def _method_line(p) -> str:
    if p.method == "freeze":
        return f"method freeze: the last {p.trainable_layers} blocks train, the rest is frozen (bf16)"
    base = "NF4 base (double quantization, bf16 compute)" if p.method == "qlora" else "bf16 base"
    return (
        f"method {p.method}: rank {p.lora_rank} adapters on {p.lora_targets} linears, dropout {p.lora_dropout:g}, "
        f"{base}"
    )


def render_table(estimate: Estimate, width: int = 100, defaults: tuple[str, ...] = ()) -> str:
    """The terminal report; `defaults` names the settings taken by default where `planner solve` would differ."""
    memory = estimate.memory
    out = StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    console.print(f"model  {_model_line(estimate)}")
    for i, line in enumerate(_plan_lines(estimate)):
        console.print(("plan   " if i == 0 else "       ") + line)
    if defaults:
        console.print("defaults (flags not given, where planner solve differs):")
        for line in defaults:
            console.print(f"       {line}")
    stage = f", pipeline stage {memory.peak_stage}" if estimate.plan.pp > 1 else ""
    console.print(f"\nMemory per GPU at the peak ({PHASE_LABELS[memory.peak_phase]}{stage}):")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("term")
    table.add_column("GiB", justify="right")
    for term in TERMS:
        value = memory.breakdown_gib[term]
        if value:
            table.add_row(TERM_LABELS[term], f"{value:.2f}")
    table.add_section()
    table.add_row("peak per GPU (what nvidia-smi shows)", f"{memory.peak_gib:.2f}")
    table.add_row("  torch max_memory_allocated", f"{memory.allocated_peak_gib:.2f}")
    table.add_row("  torch max_memory_reserved", f"{memory.reserved_peak_gib:.2f}")
    table.add_row("needed to run (cache it cannot release only)", f"{memory.required_gib:.2f}")
    table.add_row("capacity", f"{memory.capacity_gib:.2f}")
    table.add_row(f"usable (keeping {memory.safety_margin:.0%} free)", f"{memory.usable_gib:.2f}")
    table.add_row("headroom (usable - needed to run)", f"{memory.headroom_gib:.2f}")
    console.print(table)
    phases = " | ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in memory.phases_gib.items())
    console.print(f"allocated GiB by phase: {phases}")
    if len(memory.stage_peaks_gib) > 1:
        stages = ", ".join(f"{v:.1f}" for v in memory.stage_peaks_gib)
        console.print(f"allocated GiB by pipeline stage: {stages}")
    if estimate.plan.offload != "none":
        capacity = memory.host_ram_capacity_gib
        cap = f" of {capacity:.0f} GiB" if capacity is not None else " (node RAM unknown)"
        console.print(f"host RAM for offloaded states: {memory.host_ram_gib_per_node:.1f} GiB per node{cap}")
    console.print(f"activation constants: {memory.activations_source}")
    verdict = "FITS" if memory.fits else "DOES NOT FIT"
    console.print(f"verdict: {verdict} (needs {memory.required_gib:.1f} of {memory.usable_gib:.1f} usable GiB)")
    _print_performance(console, estimate)
    return out.getvalue()


PERF_LABELS = {
    "compute": "compute (all micro-batches)",
    "tensor_parallel_comm": "tensor-parallel communication",
    "context_parallel_comm": "context-parallel communication (not hidden)",
    "pipeline_p2p": "pipeline send/receive",
    "expert_parallel_comm": "expert-parallel token exchange (not hidden)",
    "pipeline_bubble": "pipeline bubble",
    "data_parallel_comm": "data-parallel communication (not hidden)",
    "optimizer_step": "optimizer update",
    "offload": "CPU offload (transfers + host optimizer)",
}


def _print_performance(console: Console, estimate: Estimate) -> None:
    perf, cost = estimate.performance, estimate.cost
    console.print(f"\nSpeed (compute efficiency {perf.compute_efficiency:.0%} of peak):")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("step time")
    table.add_column("s", justify="right")
    table.add_column("share", justify="right")
    for key, value in perf.breakdown_s.items():
        if key == "data_parallel_comm" and not value and perf.data_parallel_comm_total_s:
            # fully overlapped: shown, so a reader does not take it for a plan without data-parallel traffic
            label = f"data-parallel communication ({perf.data_parallel_comm_total_s:.3f} s, hidden behind compute)"
            table.add_row(label, "hidden", "0%")
        elif value:
            table.add_row(PERF_LABELS[key], f"{value:.3f}", f"{value / perf.step_time_s:.0%}")
    table.add_section()
    table.add_row("step", f"{perf.step_time_s:.3f}", "100%")
    console.print(table)
    console.print(
        f"throughput: {perf.tokens_per_s:,.0f} tokens/s ({perf.tokens_per_s_per_gpu:,.0f} per GPU), "
        f"{perf.tflops_per_gpu:.0f} model TFLOP/s per GPU, MFU {perf.mfu:.1%}, HFU {perf.hfu:.1%}"
    )
    for note in perf.notes:
        console.print(f"note: {note}")
    if cost.usd_per_gpu_hour is None:
        console.print(f"cost: {cost.price_source}")
        return
    line = (
        f"cost: ${cost.usd_per_gpu_hour:.2f}/GPU-hour, ${cost.usd_per_hour:,.2f}/hour, "
        f"${cost.usd_per_million_tokens:.3f} per million tokens"
    )
    if cost.hours is not None:
        line += f"; {cost.tokens:,.0f} tokens take {cost.hours:,.1f} hours and ${cost.total_usd:,.0f}"
    console.print(line)
