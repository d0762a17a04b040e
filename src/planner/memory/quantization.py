"""QLoRA's 4-bit storage: NF4 weights and their double-quantized constants (bitsandbytes defaults as
QLoRA uses them). One place for the sizes, used by the state terms and the gathered-parameter buffers."""

from planner.architecture import layer_tensors
from planner.catalog.models import Architecture
from planner.plan import Plan

NF4_BITS = 4
"""bitsandbytes stores each NF4 weight in 4 bits, two per byte (functional.quantize_4bit)."""

NF4_BLOCKSIZE = 64
"""Params4bit's blocksize default (bitsandbytes nn/modules.py): one absmax per 64 weights."""

NESTED_BLOCKSIZE = 256
"""Double quantization (compress_statistics=True) quantizes the absmax values themselves with
quantize_blockwise(absmax, blocksize=256): one uint8 per block of 64 weights plus one fp32 absmax per
256 blocks (bitsandbytes functional.quantize_4bit, tag 0.45.5, commit d72cb9cb)."""


def quantization_constant_bytes(numel: int) -> int:
    """Bytes of the quantization constants of one NF4 tensor with double quantization: ceil(n/64) uint8
    absmax values and ceil(ceil(n/64)/256) fp32 second-level absmax values. Left out: the per-tensor fp32
    offset and the 16-entry NF4 code (a few hundred bytes per tensor) and the 256-entry dynamic map,
    which bitsandbytes caches once per device."""
    blocks = -(-numel // NF4_BLOCKSIZE)
    return blocks + 4 * -(-blocks // NESTED_BLOCKSIZE)


def quantization_constant_bytes_per_param(arch: Architecture) -> float:
    """Quantization constants per NF4 weight, averaged over a block's linears (about 0.0159 bytes, the
    QLoRA paper's 0.127 bits per parameter)."""
    matrices = [t for t in layer_tensors(arch) if t.is_matrix]
    return sum(quantization_constant_bytes(t.numel) for t in matrices) / sum(t.numel for t in matrices)


def nf4_storage_bytes_per_param(arch: Architecture) -> float:
    """Bytes one NF4 weight occupies with its share of the quantization constants (about 0.516)."""
    return NF4_BITS / 8 + quantization_constant_bytes_per_param(arch)


def constants_shard_with_weights(plan: Plan) -> bool:
    """Whether sharding the 4-bit weights (ZeRO-3 / FULL_SHARD) also shards their quantization constants.

    bitsandbytes keeps them outside the parameter: Params4bit's `quant_state` (absmax, nested absmax and code tensors),
    which Linear4bit also holds as a module attribute and hands back to its weight when FSDP's flattening has dropped it
    (bitsandbytes nn/modules.py, Linear4bit.forward). FSDP1 flattens and shards only parameters and DeepSpeed ZeRO-3
    partitions only parameters, so every rank keeps all the constants: fms-acceleration's Llama-2-70B QLoRA holds 17.94
    GiB after training on each of 2 GPUs under FSDP1 and 34.63 GiB on one GPU (scripts/benchmarks/refs/a100_80gb.csv
    rows 67, 95 and 94): 0.63 GiB over half, the replicated constants being 0.51 GiB of it. torchao's NF4Tensor
    (torchtune's QLoRA under FSDP2) carries its scales inside the tensor and shards them with the packed data."""
    return plan.engine == "fsdp" and plan.fsdp_version == 2


def nf4_gathered_bytes_per_param(arch: Architecture, plan: Plan) -> float:
    """Bytes per NF4 weight a sharded unit all-gathers: the packed 4 bits, plus the constants where they are
    sharded with the weights (`constants_shard_with_weights`)."""
    constants = quantization_constant_bytes_per_param(arch) if constants_shard_with_weights(plan) else 0.0
    return NF4_BITS / 8 + constants
