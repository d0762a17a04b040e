"""Memory outside PyTorch's allocated tensors: allocator fragmentation, CUDA context, NCCL.

These are the few global constants of the memory model. Each has a physical meaning and a source; the
fragmentation factor is fitted once on the measured runs (see planner.validate and README)."""

from planner.plan import Plan

CUDA_CONTEXT_GIB = 0.5
"""CUDA context, loaded kernel modules (cuBLAS, cuDNN, attention, NCCL kernels) and cuBLAS workspaces.
0.27 GiB for the bare context with lazy loading (pytorch PR #86509), 0.62 GiB eager; ~0.3-0.4 GB per
PyTorch maintainers; each cuBLAS handle/stream adds a 32 MiB workspace on Hopper."""

NCCL_GIB_PER_GROUP = 0.67
"""NCCL buffers of one communicator with more than two ranks: 688 MiB after a first all-reduce on
4xA100 NVLink (NVIDIA/nccl #964); consistent with 4 MiB SIMPLE + 4.7 MiB LL128 + 0.5 MiB LL buffers per
channel and peer over 2 ring peers and up to 32 channels."""

NCCL_GIB_PER_PAIR = 0.53
"""NCCL buffers of a two-rank communicator (544 MiB measured, NVIDIA/nccl #964); PyTorch creates one per
pipeline send/receive peer."""

ALLOCATOR_FRAGMENTATION = 0.10
"""Reserved-but-unused fraction of PyTorch's caching allocator at the peak: reserved = allocated x (1 +
this). Start value from ../shared/notes/memory-model.md §6 (1.10 on the dynamic part); fitted on the
measured runs by `benchmarks/fit_memory_constants.py`."""


def nccl_communicators(plan: Plan) -> dict[str, float]:
    """GiB of NCCL buffers per process group this rank communicates in (a group of one needs none)."""
    groups: dict[str, float] = {}
    if plan.shard_degree > 1:
        groups["data_parallel"] = NCCL_GIB_PER_PAIR if plan.shard_degree == 2 else NCCL_GIB_PER_GROUP
    if plan.tp > 1:
        groups["tensor_parallel"] = NCCL_GIB_PER_PAIR if plan.tp == 2 else NCCL_GIB_PER_GROUP
    if plan.cp > 1:
        groups["context_parallel"] = NCCL_GIB_PER_PAIR if plan.cp == 2 else NCCL_GIB_PER_GROUP
    if plan.pp > 1:
        # Interior stages talk to two neighbours; the busiest rank is what matters.
        groups["pipeline"] = NCCL_GIB_PER_PAIR * (2 if plan.pp > 2 else 1)
    return groups
