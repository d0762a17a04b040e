"""The memory model: per-GPU peak of a training plan, term by term (pure functions of a Plan).

Where each term is computed:
- which parameters a GPU holds: `stages`
- weights, gradients, master weights, optimizer states, step temporaries: `states`
- activations, logits and cross-entropy: `activations`
- buckets, gathered parameters, autocast copies: `buffers`
- CUDA context, NCCL, allocator fragmentation: `runtime`
- phases, stages and the peak: `model`
"""

from planner.memory.model import DEFAULT_SAFETY_MARGIN, TERMS, MemoryEstimate, estimate_memory

__all__ = ["DEFAULT_SAFETY_MARGIN", "TERMS", "MemoryEstimate", "estimate_memory"]
