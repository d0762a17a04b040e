"""scripts/allocator_history.py: the caching-allocator rules it replays, and that a run of varying batch lengths
reserves more than one step at its longest batch while a run of equal batches does not."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from planner.catalog.models import load_model

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("allocator_history", ROOT / "scripts" / "allocator_history.py")
history = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(history)
MIB = 1 << 20


def test_large_requests_get_their_own_segment_rounded_to_2_mib():
    alloc = history.CachingAllocator()
    alloc.malloc(100 * MIB + 1)
    assert alloc.reserved_bytes == 102 * MIB
    alloc.malloc(3 * MIB)  # between 1 and 10 MiB: a 20 MiB segment, whose rest stays cached
    assert alloc.reserved_bytes == 122 * MIB


def test_a_freed_block_is_split_for_a_smaller_request_and_merged_back():
    alloc = history.CachingAllocator()
    big = alloc.malloc(100 * MIB)
    alloc.free(big)
    small = alloc.malloc(60 * MIB)  # best fit: the cached 100 MiB block, split
    other = alloc.malloc(40 * MIB)  # the 40 MiB remainder
    assert alloc.reserved_bytes == 100 * MIB
    alloc.free(small)
    alloc.free(other)
    alloc.malloc(100 * MIB)  # the two halves merged back into one block
    assert alloc.reserved_bytes == 100 * MIB


def test_a_request_larger_than_every_cached_block_reserves_a_new_segment():
    alloc = history.CachingAllocator()
    for handle in [alloc.malloc(60 * MIB), alloc.malloc(60 * MIB)]:
        alloc.free(handle)
    alloc.malloc(100 * MIB)  # 120 MiB are cached, but in two segments
    assert alloc.reserved_bytes == 220 * MIB


def test_small_requests_stay_out_of_the_large_pool():
    alloc = history.CachingAllocator()
    alloc.malloc(MIB)
    assert alloc.reserved_bytes == 0


@pytest.fixture(scope="module")
def tiny():
    """Qwen-7B's shape cut to 2 blocks and a 4096 vocabulary, so that a run takes milliseconds."""
    arch = load_model(str(history.QWEN_7B)).architecture
    return replace(arch, num_layers=2, vocab_size=4096)


def test_equal_batches_reserve_what_one_step_reserves(tiny):
    run, single = history.reserved_peaks_gib(tiny, [512] * 5)
    assert run == pytest.approx(single)


def test_varying_batches_reserve_more_than_one_step_at_the_longest(tiny):
    run, single = history.reserved_peaks_gib(tiny, [300, 512, 200, 450, 512, 100])
    assert run > single


def test_batches_are_padded_to_their_longest_sample():
    assert history.batch_tokens(history.np.array([5, 9, 3, 4, 7]), 2) == [18, 8]


def test_sample_lengths_follow_the_published_bounds():
    lengths = history.sample_lengths(2048, seed=0)
    assert lengths.min() >= history.LENGTH_MIN and lengths.max() <= 2048
    everything = history.sample_lengths(history.LENGTH_MAX, seed=0)
    assert len(everything) == history.SAMPLED_ROWS_ABOVE_2048
