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

Latency (alpha-beta): every collective also pays NCCL's latency, which grows with the ranks it passes
through. The constants and formulas are NCCL's own tuning model (src/graph/tuning.cc, which NCCL uses to
pick an algorithm), for the Simple protocol that bulk buffers (gradient buckets, parameter gathers) use:
a ring pays a base latency plus one hop per step, NVLink hops cheaper than network hops (the group is
hierarchical: (members per node - 1) NVLink hops between two network hops); a tree all-reduce pays
log2(nodes) network hops up and down plus the chain inside each node. NCCL picks the faster of the two
for an all-reduce (ring only for all-gather, reduce-scatter and broadcast), so a collective costs
`messages` x latency + bytes / bandwidth for the engine's buckets or per-module fetches.
"""

from dataclasses import dataclass

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

NCCL_BASE_LATENCY_US = 8.4
"""NCCL's base latency of a ring or tree collective with the Simple protocol (baseLatencies in
src/graph/tuning.cc, NVIDIA/nccl @5067397c: 8.4 us for Tree and Ring, Simple)."""

NCCL_RING_HOP_LATENCY_US = {"nvlink": 3.4, "pcie": 5.7, "network": 14.0}
"""Latency of one ring step, Simple protocol (hwLatencies in tuning.cc @5067397c: NVLINK 3.4, PCI 5.7, NET 14
us for Ring/Simple)."""

NCCL_TREE_HOP_LATENCY_US = {"nvlink": 4.0, "pcie": 4.0, "network": 14.0}
"""Latency of one tree hop, Simple protocol (hwLatencies in tuning.cc @5067397c: NVLINK 4.0, PCI 4.0, NET 14
us for Tree/Simple)."""

NCCL_RING_ALLREDUCE_PLATEAU = {"volta": 1.9, "other": 1.4}
"""Factor on the latency of a multi-node ring all-reduce of a bulk buffer ("plateau effect of ring" in
ncclTopoGetAlgoTime, tuning.cc @5067397c: 1.9 below compute capability 8.0, 1.4 from Ampere on)."""

NCCL_TREE_BANDWIDTH_SHARE = 0.92 * 0.5
"""A tree all-reduce's algorithm bandwidth over the ring's bus bandwidth: NCCL rates the tree's bus bandwidth
at 0.92 of the graph's and converts it to algorithm bandwidth with a factor 0.5 (tuning.cc @5067397c), i.e.
each byte of the buffer crosses the busiest link about twice."""


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


@dataclass(frozen=True)
class GroupLatency:
    """NCCL's latency (s) of one collective over a process group, per algorithm (arrays allowed); zero for a
    group of one rank."""

    ring_gather_s: object
    """Ring all-gather, reduce-scatter (n - 1 steps)."""
    ring_all_reduce_s: object
    """Ring all-reduce (2 (n - 1) steps, with the multi-node plateau factor)."""
    tree_all_reduce_s: object
    """Tree all-reduce (chain in the node, binary tree across nodes, up and down)."""


NO_LATENCY = GroupLatency(0.0, 0.0, 0.0)


def _hop_kind(gpu: GpuSpec) -> str:
    return "nvlink" if gpu.nvlink_bandwidth_gbps > 0 else "pcie"


def group_latency(gpu: GpuSpec, size, stride, gpus_per_node) -> GroupLatency:
    """NCCL's Simple-protocol latency of a collective over `size` ranks spaced `stride` apart (tuning.cc
    @5067397c, ncclTopoTuneModel): the group has k = min(size, NVLink domain / stride) members per node on
    N = ceil(size / k) nodes. Ring all-gather / reduce-scatter: base + (size - N) NVLink hops + (N - 1)
    network hops; ring all-reduce twice the hops, times the plateau factor across nodes; tree all-reduce:
    base + 2 ((k - 1) NVLink hops + log2(N) network hops). A group inside one NVLink domain pays NVLink (or
    PCIe) hops only."""
    size = np.asarray(size)
    domain = gpu.nvlink_domain(gpus_per_node)
    per_node = np.maximum(1, np.minimum(size, domain // stride))
    nodes = -(-size // per_node)
    kind = _hop_kind(gpu)
    ring_local, ring_net = NCCL_RING_HOP_LATENCY_US[kind], NCCL_RING_HOP_LATENCY_US["network"]
    tree_local, tree_net = NCCL_TREE_HOP_LATENCY_US[kind], NCCL_TREE_HOP_LATENCY_US["network"]
    gather_hops = (size - nodes) * ring_local + (nodes - 1) * ring_net
    plateau = NCCL_RING_ALLREDUCE_PLATEAU["volta" if gpu.architecture == "volta" else "other"]
    ring_reduce = (NCCL_BASE_LATENCY_US + 2 * gather_hops) * np.where(nodes > 1, plateau, 1.0)
    log_nodes = np.floor(np.log2(np.maximum(nodes, 1)))
    tree_reduce = NCCL_BASE_LATENCY_US + 2 * ((per_node - 1) * tree_local + log_nodes * tree_net)
    alone = size <= 1
    return GroupLatency(
        np.where(alone, 0.0, (NCCL_BASE_LATENCY_US + gather_hops) * 1e-6),
        np.where(alone, 0.0, ring_reduce * 1e-6),
        np.where(alone, 0.0, tree_reduce * 1e-6),
    )


def all_reduce_s(buffer_bytes, size, bandwidth_gbps, messages=1, latency: GroupLatency = NO_LATENCY):
    """All-reduce of `buffer_bytes` sent as `messages` equal collectives (the engine's buckets): each costs
    the faster of NCCL's ring (latency + 2(n-1)/n of its bytes over the bus bandwidth) and tree (latency +
    its bytes over NCCL_TREE_BANDWIDTH_SHARE of the bus bandwidth). Without latency the ring's bandwidth
    term alone (the tree never wins then)."""
    ring = latency.ring_all_reduce_s * messages + 2 * (size - 1) / size * buffer_bytes / (bandwidth_gbps * 1e9)
    tree = latency.tree_all_reduce_s * messages + buffer_bytes / (NCCL_TREE_BANDWIDTH_SHARE * bandwidth_gbps * 1e9)
    return np.minimum(ring, tree)


def all_gather_s(full_buffer_bytes, size, bandwidth_gbps, messages=1, latency: GroupLatency = NO_LATENCY):
    """All-gather (or reduce-scatter) of a buffer whose unsharded size is `full_buffer_bytes`, sent as
    `messages` ring collectives each paying NCCL's latency; zero for a group of one."""
    return latency.ring_gather_s * messages + (size - 1) / size * full_buffer_bytes / (bandwidth_gbps * 1e9)


reduce_scatter_s = all_gather_s


def send_recv_s(buffer_bytes, bandwidth_gbps, latency_s=0.0):
    """One step of a point-to-point ring (each rank sends `buffer_bytes` to the next rank while it receives as
    much from the previous one, as ring attention passes key/value blocks): the buffer over the link's bus
    bandwidth plus `latency_s`, one ring hop (`group_latency` of the two neighbours' group, ring_gather_s)."""
    return latency_s + buffer_bytes / (bandwidth_gbps * 1e9)


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
