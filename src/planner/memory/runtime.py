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
    nccl_gib_per_group: float = 1.48
    """NCCL buffers of one communicator carrying bulk traffic (more than two ranks): 688 MiB after a
    first all-reduce on 4xA100 NVLink (NVIDIA/nccl #964), about 1.6 GB on another system (#864); NCCL
    maintainers: memory grows with the channel count, which grows with link bandwidth (#986).
    Source range 0.64-1.5 GiB; the value is fitted within it."""
    nccl_gib_per_pair: float = 0.53
    """A two-rank communicator: 544 MiB measured (NVIDIA/nccl #964); PyTorch makes one per pipeline
    send/receive peer."""
    allocator_fragmentation: float = 0.12
    """Reserved-but-unused fraction of PyTorch's caching allocator at the peak: reserved = allocated x
    (1 + this). Reported: 2.4% (75.3 GiB allocated, compressed-tensors PR #587) to 35-50% (axolotl PR
    #2183, torchtune #1185) and 2.1x in an RL trainer (cosmos-rl PR #388); fitted."""


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
