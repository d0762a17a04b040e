"""How much reserved memory does a run of varying-length batches leave behind? A check of the ms-swift rows.

ms-swift's LLM benchmark (tests/data/lora_memory_cases.yaml, swift-*) reports `torch.cuda.max_memory_reserved`
of runs whose batches change length every step: samples above max_length are dropped, each batch is padded to
its own longest sample, and the order is random. The planner predicts the reserved memory of steps of one
shape. This script replays the allocation pattern of such a run through the rules of PyTorch's CUDA caching
allocator and compares the reserved peak with that of one step at the longest length.

Allocator rules (c10/cuda/CUDACachingAllocator.cpp; the constants are its kMinBlockSize, kSmallSize,
kMinLargeAlloc, kLargeBuffer, kRoundLarge): sizes round up to 512 B; requests up to 1 MiB use the small pool
(left out here: they cannot hold large tensors); a larger request takes the smallest cached free block that
fits (best fit by size, then address) and splits it when more than 1 MiB would remain; otherwise a new segment
is reserved (20 MiB below 10 MiB, else the size rounded up to 2 MiB). A freed block merges with free
neighbours of its segment. Without memory pressure nothing is returned to the driver, so reserved only grows.

Allocation pattern of one training step (batch x length tokens), as the swift rows ran it (Qwen's modelling
code, reentrant gradient checkpointing of every block, flash attention, bf16 under autocast): the forward keeps
each block's input and frees the block's transients (norm's fp32 copy and output, fused q/k/v, attention and
projection outputs, residual, second norm, gate, up, activation, product, down projection); the logits path
allocates and frees what planner.memory.activations.logits_bytes counts for this code (bf16 logits, their
shifted bf16 copy, the fp32 upcast and log-softmax's fp32 output, Accelerate's fp32 copy of the returned
logits; in backward nll_loss's and log-softmax's fp32 gradients, the bf16 gradient and the full-size gradient of
the slice); the backward recomputes each block (its saved set alive), makes the MLP's gradients, and frees the
block's input. The order inside a block is an approximation of the real one (small tensors and cuBLAS
workspaces are left out), so the result is an order of magnitude, not a prediction.

Sample lengths: the benchmark's published statistics of cls-fudan-news-zh (4959 rows, 3234.4 +- 2547.5 tokens
with Qwen's tokenizer, min 91, max 19548: Benchmark.md and Supported-models-datasets.md @46922151e) matched by a
gamma distribution shifted to the minimum (an assumption: the shape of the distribution is not published; it
puts about 1.6 of 4959 samples above the published maximum). run_single.py at 97e4d198b uses the whole dataset
at max_length <= 2048 and 1000 sampled rows above.

    python scripts/allocator_history.py [--seeds N]

Prints, per swift Qwen-7B row, the simulated reserved peak of the step's tensors (weights excluded) for the
varying-length run and for one step at its longest batch, beside what the row measured above the bf16 weights.
"""

import argparse
import bisect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.architecture import total_params
from planner.catalog.models import load_model
from planner.units import GIB

MIB = 1 << 20
MIN_BLOCK = 512
SMALL_SIZE = 1 * MIB
MIN_LARGE_ALLOC = 10 * MIB
LARGE_BUFFER = 20 * MIB
ROUND_LARGE = 2 * MIB

ROOT = Path(__file__).resolve().parent.parent
QWEN_7B = ROOT / "tests" / "data" / "models" / "qwen-7b.yaml"
DATASET_ROWS, LENGTH_MEAN, LENGTH_STD, LENGTH_MIN, LENGTH_MAX = 4959, 3234.4, 2547.5, 91, 19548
SAMPLED_ROWS_ABOVE_2048 = 1000
# (micro-batch, max_length, measured max_memory_reserved GiB): Benchmark.md @46922151e, qwen-7b-chat rows
SWIFT_ROWS = ((1, 512, 18.01), (1, 1024, 21.73), (1, 2048, 27.74), (1, 4096, 35.31), (1, 8192, 48.41))
SWIFT_BATCH_ROWS = ((2, 2048, 43.11), (4, 2048, 63.81))


@dataclass
class CachingAllocator:
    """The large pool of PyTorch's CUDA caching allocator on one stream, without memory pressure."""

    free_blocks: list[tuple[int, int, int]] = field(default_factory=list)
    """Sorted (size, segment, offset) of the cached free blocks."""
    segments: dict[int, list[list]] = field(default_factory=dict)
    """segment -> its blocks as [offset, size, is_free], by offset."""
    live: dict[int, tuple[int, int, int] | None] = field(default_factory=dict)
    reserved_bytes: int = 0
    allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    peak_allocated_bytes: int = 0
    _next_id: int = 0

    def malloc(self, nbytes: int) -> int:
        """Allocate `nbytes`; returns a handle for `free`."""
        size = max(MIN_BLOCK, -(-nbytes // MIN_BLOCK) * MIN_BLOCK)
        self._next_id += 1
        if size <= SMALL_SIZE:
            self.live[self._next_id] = None
            return self._next_id
        i = bisect.bisect_left(self.free_blocks, (size, -1, -1))
        if i < len(self.free_blocks):
            block_size, segment, offset = self.free_blocks.pop(i)
            blocks = self.segments[segment]
            j = next(k for k, b in enumerate(blocks) if b[0] == offset)
            if block_size - size > SMALL_SIZE:
                blocks[j] = [offset, size, False]
                blocks.insert(j + 1, [offset + size, block_size - size, True])
                bisect.insort(self.free_blocks, (block_size - size, segment, offset + size))
            else:
                blocks[j][2] = False
                size = block_size
        else:
            segment_size = LARGE_BUFFER if size < MIN_LARGE_ALLOC else -(-size // ROUND_LARGE) * ROUND_LARGE
            segment, offset = len(self.segments) + 1, 0
            self.segments[segment] = [[0, size, False]]
            if segment_size > size:
                self.segments[segment].append([size, segment_size - size, True])
                bisect.insort(self.free_blocks, (segment_size - size, segment, size))
            self.reserved_bytes += segment_size
        self.live[self._next_id] = (segment, offset, size)
        self.allocated_bytes += size
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return self._next_id

    def free(self, handle: int) -> None:
        """Return a block to the cache, merged with its free neighbours."""
        where = self.live.pop(handle)
        if where is None:
            return
        segment, offset, size = where
        self.allocated_bytes -= size
        blocks = self.segments[segment]
        j = next(k for k, b in enumerate(blocks) if b[0] == offset)
        blocks[j][2] = True
        if j + 1 < len(blocks) and blocks[j + 1][2]:
            after = blocks.pop(j + 1)
            self.free_blocks.remove((after[1], segment, after[0]))
            blocks[j][1] += after[1]
        if j > 0 and blocks[j - 1][2]:
            before = blocks[j - 1]
            self.free_blocks.remove((before[1], segment, before[0]))
            before[1] += blocks.pop(j)[1]
            j -= 1
        bisect.insort(self.free_blocks, (blocks[j][1], segment, blocks[j][0]))


def training_step(alloc: CachingAllocator, arch, tokens: int) -> None:
    """One micro-batch of `tokens` tokens through the allocator (module docstring: the pattern)."""
    h, f, v, bf16, fp32 = arch.hidden_size, arch.ffn_hidden_size, arch.vocab_size, 2, 4
    m = alloc.malloc
    inputs = [m(bf16 * h * tokens)]
    for _ in range(arch.num_layers):  # forward under no_grad: the block keeps its input only
        norm32 = m(fp32 * h * tokens)
        normed = m(bf16 * h * tokens)
        alloc.free(norm32)
        qkv = m(bf16 * 3 * h * tokens)
        attn = m(bf16 * h * tokens)
        alloc.free(qkv)
        proj = m(bf16 * h * tokens)
        alloc.free(attn)
        residual = m(bf16 * h * tokens)
        alloc.free(proj)
        alloc.free(normed)
        normed2 = m(bf16 * h * tokens)
        gate, up, act = m(bf16 * f * tokens), m(bf16 * f * tokens), m(bf16 * f * tokens)
        alloc.free(gate)
        product = m(bf16 * f * tokens)
        alloc.free(act)
        alloc.free(up)
        down = m(bf16 * h * tokens)
        alloc.free(product)
        alloc.free(normed2)
        inputs.append(m(bf16 * h * tokens))
        alloc.free(down)
        alloc.free(residual)
    logits, shifted, upcast, log_probs = (m(n * v * tokens) for n in (bf16, bf16, fp32, fp32))
    alloc.free(upcast)
    alloc.free(shifted)
    returned = m(fp32 * v * tokens)  # Accelerate's convert_outputs_to_fp32
    alloc.free(logits)
    alloc.free(returned)
    nll_grad, lsm_grad = m(fp32 * v * tokens), m(fp32 * v * tokens)
    alloc.free(nll_grad)
    alloc.free(log_probs)
    grad16 = m(bf16 * v * tokens)
    alloc.free(lsm_grad)
    slice_grad = m(bf16 * v * tokens)
    alloc.free(grad16)
    grad_h = m(bf16 * h * tokens)
    alloc.free(slice_grad)
    for layer in range(arch.num_layers, 0, -1):  # recompute, then the block's gradients
        saved = [m(n * width * tokens) for n, width in ((fp32, h), (bf16, h), (bf16, 3 * h), (bf16, h), (bf16, h))]
        saved += [m(bf16 * f * tokens) for _ in range(4)]
        for grad in [m(bf16 * f * tokens) for _ in range(3)]:
            alloc.free(grad)
        grad_in = m(bf16 * h * tokens)
        for t in saved:
            alloc.free(t)
        alloc.free(grad_h)
        grad_h = grad_in
        alloc.free(inputs[layer])
    alloc.free(grad_h)
    alloc.free(inputs[0])


def sample_lengths(max_length: int, seed: int) -> np.ndarray:
    """Token counts of the samples one epoch trains on, in random order (module docstring: the assumption)."""
    rng = np.random.default_rng(seed)
    excess_mean = LENGTH_MEAN - LENGTH_MIN
    lengths = LENGTH_MIN + rng.gamma((excess_mean / LENGTH_STD) ** 2, LENGTH_STD**2 / excess_mean, DATASET_ROWS)
    lengths = np.minimum(lengths, LENGTH_MAX).astype(int)
    if max_length > 2048:
        lengths = rng.permutation(lengths)[:SAMPLED_ROWS_ABOVE_2048]
    return rng.permutation(lengths[lengths <= max_length])


def batch_tokens(lengths: np.ndarray, micro_batch: int) -> list[int]:
    """Tokens per micro-batch when each batch is padded to its longest sample."""
    whole = len(lengths) // micro_batch * micro_batch
    return [int(lengths[i : i + micro_batch].max()) * micro_batch for i in range(0, whole, micro_batch)]


def reserved_peaks_gib(arch, batches: list[int]) -> tuple[float, float]:
    """(reserved peak of the whole run, reserved peak of one step at its largest batch), GiB."""
    run, single = CachingAllocator(), CachingAllocator()
    for tokens in batches:
        training_step(run, arch, tokens)
    training_step(single, arch, max(batches))
    return run.peak_reserved_bytes / GIB, single.peak_reserved_bytes / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="sample orders per row (default 3)")
    seeds = range(parser.parse_args().seeds)
    model = load_model(str(QWEN_7B))
    weights_gib = 2 * total_params(model.architecture) / GIB
    print(f"Qwen-7B, bf16 weights {weights_gib:.2f} GiB; reserved GiB of the step's tensors (weights excluded)")
    print("| batch x max_length | measured above weights | varying lengths (per seed) | one step at the longest |")
    print("|---|---:|---:|---:|")
    for micro_batch, max_length, measured in SWIFT_ROWS + SWIFT_BATCH_ROWS:
        runs = [
            reserved_peaks_gib(model.architecture, batch_tokens(sample_lengths(max_length, s), micro_batch))
            for s in seeds
        ]
        varying = " / ".join(f"{r[0]:.1f}" for r in runs)
        print(f"| {micro_batch} x {max_length} | {measured - weights_gib:.1f} | {varying} | {runs[0][1]:.1f} |")


if __name__ == "__main__":
    main()
