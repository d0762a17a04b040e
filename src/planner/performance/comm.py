"""Communication time: ring collectives over the link a process group lands on.

Group placement follows Megatron-LM's rank order (tensor-parallel ranks adjacent, then context-parallel,
then data-parallel, then pipeline stages): a group whose span (size x stride) exceeds the GPUs of one node
crosses the network, otherwise it stays on NVLink (or PCIe on parts without NVLink).

Across nodes NCCL runs one ring per network interface and splits the buffer among them, so a group with
k members on each node moves data through k NICs at once: its bus bandwidth is k x the per-GPU network
bandwidth, capped by what NVLink delivers inside the node (8 x 200 Gb/s HDR lets a DGX A100 reach about
190 GB/s of all-reduce bus bandwidth between nodes in NVIDIA's nccl-tests reports).

Ring algorithms (NCCL; nccl-tests PERFORMANCE.md): all-reduce moves 2(n-1)/n of the buffer per GPU,
all-gather and reduce-scatter (n-1)/n of the full buffer; the time is that volume over the bus bandwidth.
"""

import numpy as np

from planner.catalog import GpuSpec
from planner.errors import PlanError

NVLINK_BUS_EFFICIENCY = 0.80
"""nccl-tests all-reduce bus bandwidth over the unidirectional NVLink bandwidth: about 230 of 300 GB/s on
A100 (NVLink3) and 360-370 of 450 GB/s on H100 (NVLink4) in NVIDIA's published nccl-tests runs."""

NETWORK_BUS_EFFICIENCY = 0.90
"""Bus bandwidth over line rate for inter-node rings on InfiniBand/RoCE (about 23 of 25 GB/s for
200 Gb/s HDR in nccl-tests runs)."""

PCIE_BUS_EFFICIENCY = 0.80
"""Achievable share of a PCIe x16 link's unidirectional bandwidth for peer and host transfers."""


def intra_node_bandwidth_gbps(gpu: GpuSpec) -> float:
    """Bus bandwidth (GB/s) of a collective among GPUs of one node."""
    if gpu.nvlink_bandwidth_gbps > 0:
        return gpu.nvlink_bandwidth_gbps / 2 * NVLINK_BUS_EFFICIENCY
    return gpu.pcie_bandwidth_gbps / 2 * PCIE_BUS_EFFICIENCY


def inter_node_bandwidth_gbps(gpu: GpuSpec, members_per_node=1):
    """Bus bandwidth (GB/s) of a collective that crosses nodes with `members_per_node` ranks per node."""
    bandwidth = gpu.node.inter_node_bandwidth_gbps_per_gpu
    if bandwidth is None:
        raise PlanError(
            f"the GPU catalog has no inter-node bandwidth for {gpu.name}, and this plan spans nodes",
            f"add node.inter_node_bandwidth_gbps_per_gpu to {gpu.name}'s hardware YAML",
        )
    return np.minimum(bandwidth * members_per_node * NETWORK_BUS_EFFICIENCY, intra_node_bandwidth_gbps(gpu))


def host_link_bandwidth_gbps(gpu: GpuSpec) -> float:
    """One direction of the GPU's PCIe link to host memory (CPU offload transfers)."""
    return gpu.pcie_bandwidth_gbps / 2 * PCIE_BUS_EFFICIENCY


def group_bandwidth_gbps(gpu: GpuSpec, size, stride, gpus_per_node):
    """Bus bandwidth of a group of `size` ranks spaced `stride` apart (arrays allowed). Groups of one rank
    get infinite bandwidth (they move nothing). A group stays on NVLink while its span fits the NVLink
    domain: the node, or the whole rack of a multi-node NVLink system (GB200 NVL72: 72 GPUs)."""
    domain = gpu.nvlink_domain(gpus_per_node)
    spans_nodes = size * stride > domain
    inter = 0.0
    if np.any(spans_nodes & (size > 1)):
        members_per_node = np.maximum(1, np.minimum(size, domain // stride))
        inter = inter_node_bandwidth_gbps(gpu, members_per_node)
    bandwidth = np.where(spans_nodes, inter, intra_node_bandwidth_gbps(gpu))
    return np.where(size > 1, bandwidth, np.inf)


def all_reduce_s(buffer_bytes, size, bandwidth_gbps):
    return 2 * (size - 1) / size * buffer_bytes / (bandwidth_gbps * 1e9)


def all_gather_s(full_buffer_bytes, size, bandwidth_gbps):
    """All-gather (or reduce-scatter) of a buffer whose unsharded size is `full_buffer_bytes`; zero for a
    group of one."""
    return (size - 1) / size * full_buffer_bytes / (bandwidth_gbps * 1e9)


reduce_scatter_s = all_gather_s


def all_to_all_s(send_bytes, size, stride, gpu: GpuSpec, gpus_per_node):
    """All-to-all in which each of `size` ranks (spaced `stride` apart) sends `send_bytes` spread evenly over
    the group (1/size stays local). NCCL runs it as point-to-point sends on every link at once (nccl-tests
    PERFORMANCE.md: alltoall bus bandwidth = algorithm bandwidth x (n-1)/n): the share for ranks in the same
    NVLink domain goes over NVLink, the rest through the GPU's own network interface, and the slower of the
    two sets the time. Zero for a group of one."""
    domain = gpu.nvlink_domain(gpus_per_node)
    local = np.maximum(1, np.minimum(size, domain // stride))
    intra = send_bytes * (local - 1) / size / (intra_node_bandwidth_gbps(gpu) * 1e9)
    remote = size > local
    inter = 0.0
    if np.any(remote):
        network = gpu.node.inter_node_bandwidth_gbps_per_gpu
        if network is None:
            raise PlanError(
                f"the GPU catalog has no inter-node bandwidth for {gpu.name}, and this expert-parallel group spans "
                "nodes",
                f"add node.inter_node_bandwidth_gbps_per_gpu to {gpu.name}'s hardware YAML",
            )
        inter = send_bytes * (size - local) / size / (network * NETWORK_BUS_EFFICIENCY * 1e9)
    return np.maximum(intra, np.where(remote, inter, 0.0))
