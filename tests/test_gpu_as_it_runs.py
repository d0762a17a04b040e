"""GPU parts as they run (issue 10, item 1): peaks under the part's power limit, the architecture family of
every fitted part, and the attention kernel Transformer Engine picks on Hopper."""

from dataclasses import replace

import pytest

from planner.catalog import load_gpu
from planner.catalog.hardware import POWER_CLOCK_EXPONENT, list_gpus
from planner.performance import comm, estimate_performance
from planner.performance.model import CUDNN_ATTENTION_SPEEDUP, flash_attention_speed
from planner.plan import PlanRequest, resolve

H100_SXM_BF16_TFLOPS = 989.5
"""NVIDIA H100 datasheet, SXM column, dense (sparse 1,979 / 2), rated at 700 W."""
H100_NVL_BF16_TFLOPS = 835.5
"""NVIDIA H100 product page, NVL column: 1,671 bf16 TFLOP/s with sparsity, dense half of it, at 400 W."""


def test_the_500w_h100_runs_at_the_cube_root_of_its_power_share():
    gpu = load_gpu("H100-96GB")
    ratio = (500 / 700) ** (1 / 3)
    assert gpu.clock_ratio == pytest.approx(ratio)
    assert gpu.peak_tflops("bf16") == pytest.approx(H100_SXM_BF16_TFLOPS * ratio)
    assert gpu.peak_tflops("fp8") == pytest.approx(1979.0 * ratio)
    assert gpu.peak_derated
    assert H100_NVL_BF16_TFLOPS < gpu.peak_tflops("bf16") < H100_SXM_BF16_TFLOPS  # torchtitan: between NVL and SXM


def test_the_clock_power_law_reproduces_nvidias_nvl_rating_within_2_percent():
    predicted = H100_SXM_BF16_TFLOPS * (400 / 700) ** POWER_CLOCK_EXPONENT
    assert predicted == pytest.approx(H100_NVL_BF16_TFLOPS, rel=0.02)


def test_parts_rated_at_their_own_power_keep_their_datasheet_peak():
    for name in ("H100-80GB", "H100-PCIe", "H800-80GB", "A100-80GB"):
        gpu = load_gpu(name)
        assert gpu.clock_ratio == 1.0 and not gpu.peak_derated
        assert gpu.peak_tflops("bf16") == gpu.tflops["bf16"]


def test_a_part_at_or_above_its_rated_power_is_not_boosted():
    gpu = replace(load_gpu("H100-96GB"), power_limit_w=700.0)
    assert gpu.clock_ratio == 1.0
    gpu = replace(load_gpu("H100-96GB"), power_limit_w=800.0)
    assert gpu.clock_ratio == 1.0


def test_every_fitted_part_names_its_architecture_family():
    for gpu in list_gpus():
        if gpu.compute_efficiency is not None:
            assert gpu.architecture, gpu.name


def test_the_derated_peak_is_said_in_the_estimate():
    def notes(gpu: str) -> list[str]:
        request = PlanRequest("llama-3.1-8b", gpu, gpus=8, zero=3, engine="fsdp", seq_len=8192)
        return estimate_performance(*resolve(request)).notes

    assert any("peak extrapolated" in n and "500 W" in n for n in notes("H100-96GB"))
    assert not any("peak extrapolated" in n for n in notes("H100-80GB"))


@pytest.mark.parametrize(
    ("gpu_name", "engine", "expected"),
    [
        ("H100-80GB", "megatron", 0.47 * CUDNN_ATTENTION_SPEEDUP),  # TE picks cuDNN attention on sm90
        ("H100-80GB", "fsdp", 0.47),  # flash-attn 2
        ("B200", "megatron", 0.47 * CUDNN_ATTENTION_SPEEDUP),  # and on sm100
        ("GB200", "megatron", 0.47 * CUDNN_ATTENTION_SPEEDUP),
        ("B200", "fsdp", 0.47),
        ("A100-80GB", "megatron", 1.0),  # TE picks flash-attn on sm80
    ],
)
def test_megatron_attention_runs_cudnn_on_hopper_and_blackwell(gpu_name, engine, expected):
    _, gpu, plan = resolve(
        PlanRequest("llama-3.1-8b", gpu_name, gpus=8, engine=engine, zero=3 - 2 * (engine == "megatron"))
    )
    assert float(flash_attention_speed(gpu, plan)) == pytest.approx(expected)


@pytest.mark.parametrize(("name", "nvlink_gbps"), [("A800-80GB", 400), ("H800-80GB", 400), ("A100-80GB", 600)])
def test_export_parts_keep_their_cut_nvlink(name, nvlink_gbps):
    """A800/H800: the A100/H100 with NVLink cut to 400 GB/s (bidirectional); collectives inside a node run at
    half of it times the NVLink bus efficiency."""
    gpu = load_gpu(name)
    assert gpu.nvlink_bandwidth_gbps == nvlink_gbps
    assert comm.intra_node_bandwidth_gbps(gpu) == pytest.approx(nvlink_gbps / 2 * comm.NVLINK_BUS_EFFICIENCY)


def test_a_part_without_nvlink_collects_over_pcie():
    gpu = load_gpu("L40S")
    assert gpu.nvlink_bandwidth_gbps == 0
    assert comm.intra_node_bandwidth_gbps(gpu) == pytest.approx(gpu.pcie_bandwidth_gbps / 2 * comm.PCIE_BUS_EFFICIENCY)
