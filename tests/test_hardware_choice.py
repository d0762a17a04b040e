"""Issue 13: today's GPUs in the catalog (prices with sources, NVLink domains, extrapolated speed) and
hardware choice across GPU types in `solve`."""

import pytest
from click.testing import CliRunner

from planner.catalog import list_gpus, load_gpu
from planner.cli import main
from planner.estimate import estimate_plan
from planner.performance import comm
from planner.plan import PlanRequest

NEW_GPUS = ("B200", "GB200", "H20", "L20", "L40", "L4", "RTX-A6000", "RTX-3090", "RTX-5090", "MI300X", "MI325X")


def test_catalog_holds_todays_gpus_with_every_number_sourced():
    names = {g.name for g in list_gpus()}
    assert set(NEW_GPUS) <= names
    for name in NEW_GPUS:
        gpu = load_gpu(name)
        assert gpu.memory_gib > 0 and gpu.hbm_bandwidth_gbps > 0 and gpu.tdp_w, name
        assert gpu.tflops["bf16"] and gpu.node.gpus_per_node >= 1 and gpu.architecture, name
        assert gpu.price.source and gpu.price.currency == "USD", name
        if gpu.price.usd_per_gpu_hour is not None:
            assert gpu.price.date and gpu.price.instance, name


def test_fp4_where_the_part_has_it():
    # HGX B200 datasheet: FP4 144 PF sparse for 8 GPUs = 9 PF dense per GPU; GB200 NVL72: 1,440 PF / 72 / 2.
    assert load_gpu("B200").tflops["fp4"] == 9000.0
    assert load_gpu("GB200").tflops["fp4"] == 10000.0
    assert load_gpu("H100").tflops["fp4"] is None


def test_gb200_groups_up_to_72_stay_on_nvlink():
    gb200 = load_gpu("GB200")
    nvlink = comm.intra_node_bandwidth_gbps(gb200)
    assert nvlink == pytest.approx(1800 / 2 * comm.NVLINK_BUS_EFFICIENCY)
    # 4 GPUs per tray, but a TP group of 72 (or 8 x 9) is still one NVLink fabric.
    assert float(comm.group_bandwidth_gbps(gb200, 72, 1, 4)) == pytest.approx(nvlink)
    assert float(comm.group_bandwidth_gbps(gb200, 8, 9, 4)) == pytest.approx(nvlink)
    # A data-parallel pair of ranks 72 apart (one per rack) crosses the InfiniBand network: 50 GB/s x 0.9.
    assert float(comm.group_bandwidth_gbps(gb200, 2, 72, 4)) == pytest.approx(50 * comm.NETWORK_BUS_EFFICIENCY)
    # A node-sized domain is unchanged: on H100 (8 per node) the same pair 72 apart, and a pair 8 apart,
    # cross the network.
    h100 = load_gpu("H100")
    assert float(comm.group_bandwidth_gbps(h100, 2, 8, 8)) == pytest.approx(50 * comm.NETWORK_BUS_EFFICIENCY)


def test_gb200_plans_may_use_tensor_parallelism_across_trays():
    request = PlanRequest(model="llama-2-70b", gpu="GB200", gpus=16, tp=8, seq_len=4096, engine="megatron")
    est = estimate_plan(request)
    assert est.plan.gpus_per_node == 4 and est.performance.tokens_per_s > 0


@pytest.mark.parametrize(
    "gpu,family", [("B200", "hopper"), ("GB200", "hopper"), ("MI300X", "hopper"), ("L40", "ampere")]
)
def test_borrowed_efficiency_marks_the_speed_extrapolated(gpu, family):
    est = estimate_plan(PlanRequest(model="llama-2-7b", gpu=gpu, gpus=1, checkpointing="full", zero=0))
    assert load_gpu(gpu).speed_extrapolated_from == family
    assert any(note.startswith("speed extrapolated") for note in est.performance.notes)


@pytest.mark.parametrize("gpu", ["H100", "H20", "A100", "RTX-A6000"])
def test_own_family_fit_is_not_extrapolated(gpu):
    assert load_gpu(gpu).speed_extrapolated_from is None


def test_h800_has_a_price_and_emit_no_longer_crashes(tmp_path):
    """`planner solve --model 13b --budget 16xH800 --tokens 1B --emit all` used to raise a TypeError in the
    launch README writer (hours known, dollars unknown)."""
    args = ["solve", "--model", "13b", "--budget", "16xH800", "--tokens", "1B", "--emit", "all"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "h800")])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "h800" / "launch-1" / "README.md").read_text()
    assert "hours and $" in readme
    assert load_gpu("H800").price.usd_per_gpu_hour == 2.0
