"""Memory outside PyTorch's allocated tensors: allocator fragmentation, CUDA context, NCCL.

These are the few global constants of the memory model, grouped in `RuntimeOverheads`. Each has a
physical meaning and a range from public sources; within those ranges they are fitted once on the
measured runs by `scripts/fit_memory_overheads.py` (values and fit report in the README)."""

from dataclasses import dataclass

import numpy as np

from planner.plan import Plan


@dataclass(frozen=True)
class RuntimeOverheads:
    """Per-process memory the tensor accounting cannot see."""

    cuda_context_gib: float = 0.5
    """CUDA context, loaded kernel modules (cuBLAS, cuDNN, attention, NCCL kernels) and cuBLAS
    workspaces. 0.27 GiB for the bare context with lazy loading (pytorch PR #86509), 0.62 GiB eager,
    1.31 GiB on CUDA 11.2 (transformers' model_memory_anatomy); each cuBLAS handle and stream adds a
    32 MiB workspace on Hopper."""
    nccl_gib_per_group: float = 1.5
    """NCCL buffers of one communicator carrying bulk traffic (more than two ranks): 688 MiB after a
    first all-reduce on 4xA100 NVLink (NVIDIA/nccl #964), about 1.6 GB on another system (#864); NCCL
    maintainers: memory grows with the channel count, which grows with link bandwidth (#986).
    Source range 0.64-1.5 GiB; the value is fitted within it (the fit lands on the range's top)."""
    nccl_gib_per_pair: float = 0.53
    """A two-rank communicator: 544 MiB measured (NVIDIA/nccl #964); PyTorch makes one per pipeline
    send/receive peer."""
    allocator_fragmentation: float = 0.17
    """Reserved-but-unused fraction of PyTorch's caching allocator at the peak of a run with memory to spare:
    reserved = allocated x (1 + this). Reported: 2.4% (75.3 GiB allocated, compressed-tensors PR #587) to
    35-50% (axolotl PR #2183, torchtune #1185) and 2.1x in an RL trainer (cosmos-rl PR #388); fitted
    (scripts/fit_memory_overheads.py) with reserved measurements compared to the reserved peak, which holds
    neither the CUDA context nor NCCL's buffers (`planner.validate.memory.comparable_gib`)."""
    allocator_fragmentation_at_capacity: float = 0.024
    """The part of that cache the allocator cannot give back when the card is full. On a failed cudaMalloc
    the caching allocator frees every cached block that holds no live tensor and retries (c10
    CUDACachingAllocator: release_cached_blocks, counted in memory_stats()['num_alloc_retries']; PyTorch
    CUDA semantics notes: max_split_size_mb lets "borderline workloads" finish), so only the free space
    inside segments split by live tensors stays reserved. At the cap that is small: 1.83 GiB at 75.3 GiB
    allocated on an 80 GB card (2.4%, compressed-tensors PR #587); an OOM report with 77.65 GiB allocated
    shows 77.66 GiB reserved (hiyouga/LlamaFactory #1158). The sourced 2.4% is used as is (not fitted)."""


DEFAULT_OVERHEADS = RuntimeOverheads()


def nccl_communicators(plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS) -> dict[str, object]:
    """GiB of NCCL buffers per process group this rank communicates in (a group of one needs none).
    Values are arrays when the plan's degrees are."""

    def size(ranks):
        return np.where(ranks == 2, overheads.nccl_gib_per_pair, np.where(ranks > 2, overheads.nccl_gib_per_group, 0.0))

    return {
        "data_parallel": size(plan.shard_degree),
        "tensor_parallel": size(plan.tp),
        "context_parallel": size(plan.cp),
        # Interior stages talk to two neighbours; the busiest rank is what matters.
        "pipeline": overheads.nccl_gib_per_pair * np.minimum(plan.pp - 1, 2),
    }
