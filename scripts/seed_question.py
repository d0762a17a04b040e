"""Print the README's answer to "How much memory does full fine-tuning of LLaMA-7B need?".

LLaMA-7B (Llama-2-7B shape), 8 x A100-80GB, seq 2048, global batch 32 (micro-batch 4 on each of 8 GPUs,
no accumulation), DeepSpeed ZeRO 0-3, checkpointing off/full, bf16 mixed precision, AdamW.

    python scripts/seed_question.py
"""

from planner.architecture import total_params
from planner.estimate import estimate_plan
from planner.plan import PlanRequest
from planner.units import GIB


def main() -> None:
    print(
        "| ZeRO | checkpointing | states GiB | activations + logits GiB | other GiB | peak GiB (nvidia-smi) "
        "| peak phase | fits 80 GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    states_terms = ("weights", "master_weights", "gradients", "optimizer_states", "optimizer_step_temporaries")
    dynamic_terms = ("activations", "logits_and_loss", "recompute_and_backward")
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


if __name__ == "__main__":
    main()
