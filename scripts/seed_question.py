"""Print the README's answer to "How much memory does full fine-tuning of LLaMA-7B need?".

LLaMA-7B (Llama-2-7B shape), 8 x A100-80GB, seq 2048, global batch 32 (micro-batch 4 on each of 8 GPUs,
no accumulation), DeepSpeed ZeRO 0-3, checkpointing off/full, bf16 mixed precision, AdamW. A second table
gives LoRA (rank 8 and 16, all linears) and QLoRA (rank 16) with the same batch and sequence (ZeRO-0: every
GPU holds the whole frozen base, as DDP does), and a third the "14 GB" case: one sequence of 512 tokens.

    python scripts/seed_question.py
"""

from planner.architecture import total_params
from planner.estimate import estimate_plan
from planner.plan import PlanRequest
from planner.units import GIB

STATES_TERMS = (
    "weights",
    "frozen_weights",
    "quantized_weights",
    "quantization_constants",
    "adapter_weights",
    "master_weights",
    "gradients",
    "adapter_gradients",
    "optimizer_states",
    "adapter_optimizer_states",
    "optimizer_step_temporaries",
)
DYNAMIC_TERMS = ("activations", "logits_and_loss", "recompute_and_backward")
PEFT_METHODS = (("lora", 8), ("lora", 16), ("qlora", 16))


def peft_table(micro_batch: int, seq_len: int, gpus: int) -> None:
    """LoRA/QLoRA rows for one batch shape (DeepSpeed ZeRO-0, bf16 autocast, AdamW on the adapters)."""
    print(
        "| method | rank | checkpointing | trainable params | weights + adapter states GiB "
        "| activations + logits GiB | other GiB | peak GiB (nvidia-smi) | allocated GiB |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for method, rank in PEFT_METHODS:
        for checkpointing in ("none", "full"):
            est = estimate_plan(
                PlanRequest(
                    model="7b",
                    gpu="A100-80GB",
                    gpus=gpus,
                    micro_batch=micro_batch,
                    seq_len=seq_len,
                    checkpointing=checkpointing,
                    method=method,
                    lora_rank=rank,
                )
            )
            m = est.memory
            states = sum(m.breakdown_gib[t] for t in STATES_TERMS)
            dynamic = sum(m.breakdown_gib[t] for t in DYNAMIC_TERMS)
            trainable = est.to_dict()["model"]["trainable_params"]
            print(
                f"| {method} | {rank} | {checkpointing} | {trainable:,} | {states:.1f} | {dynamic:.1f} "
                f"| {m.peak_gib - states - dynamic:.1f} | {m.peak_gib:.1f} | {m.allocated_peak_gib:.1f} |"
            )


def main() -> None:
    print(
        "| ZeRO | checkpointing | states GiB | activations + logits GiB | other GiB | peak GiB (nvidia-smi) "
        "| peak phase | fits 80 GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    states_terms = STATES_TERMS
    dynamic_terms = DYNAMIC_TERMS
    for zero in range(4):
        for checkpointing in ("none", "full"):
            est = estimate_plan(
                PlanRequest(
                    model="7b",
                    gpu="A100-80GB",
                    gpus=8,
                    zero=zero,
                    micro_batch=4,
                    global_batch=32,
                    seq_len=2048,
                    checkpointing=checkpointing,
                )
            )
            m = est.memory
            states = sum(m.breakdown_gib[t] for t in states_terms)
            dynamic = sum(m.breakdown_gib[t] for t in dynamic_terms)
            other = m.peak_gib - states - dynamic
            print(
                f"| {zero} | {checkpointing} | {states:.1f} | {dynamic:.1f} | {other:.1f} | {m.peak_gib:.1f} "
                f"| {m.peak_phase.replace('_', ' ')} | {'yes' if m.fits else 'no'} |"
            )
    params = total_params(est.model.architecture)
    print(
        f"\nparameters: {params:,}; 16 B/param = {16 * params / GIB:.1f} GiB in total, "
        f"{16 * params / GIB / 8:.1f} GiB per GPU if fully sharded over 8; 20 B/param = {20 * params / GIB:.1f} GiB"
    )

    print("\nLoRA and QLoRA, same batch and sequence (micro-batch 4 x 2048 tokens per GPU, 8 GPUs, ZeRO-0):\n")
    peft_table(micro_batch=4, seq_len=2048, gpus=8)
    print("\nThe same on one GPU with one sequence of 512 tokens:\n")
    peft_table(micro_batch=1, seq_len=512, gpus=1)


if __name__ == "__main__":
    main()
