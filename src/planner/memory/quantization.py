"""QLoRA's 4-bit storage: NF4 weights and their double-quantized constants (bitsandbytes defaults as
QLoRA uses them). One place for the sizes, used by the state terms and the gathered-parameter buffers."""

from planner.architecture import layer_tensors
from planner.catalog.models import Architecture

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
