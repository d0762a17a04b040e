"""`planner calibrate trace`: fake-tensor traces of transformers' code, and how the memory model uses them."""

from pathlib import Path

import pytest
import yaml
from tests.conftest import plan_for

from planner.architecture import total_params
from planner.catalog import load_model
from planner.memory import activations as act
from planner.memory import calibration
from planner.memory.model import memory_arrays

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "examples" / "tiny-llama.yaml")  # h 64, f 176, 4 heads, 2 kv heads, head_dim 16, V 256


@pytest.fixture
def torch_and_transformers():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


def test_traced_states_equal_the_modelled_bytes_per_parameter(torch_and_transformers):
    from planner.calibrate.trace import trace_states, traced_params

    model = load_model(TINY)
    params = traced_params(model, layers=1)
    # 1 block: q 64x64, k and v 64x32, o 64x64, gate/up/down 3 x 64x176, 2 norms x 64; embedding and head 256x64
    # each; final norm 64: 46,208 + 2 x 16,384 + 64 = 79,040 parameters in 12 tensors.
    assert params == 79_040
    for implementation, (weight, opt) in {"hf": (2, 4), "autocast": (4, 8)}.items():
        traced = trace_states(model, implementation)
        assert traced["param_tensors"] == 12
        assert traced["weights"] == weight * params
        assert traced["gradients"] == weight * params
        # AdamW's exp_avg and exp_avg_sq in the parameter dtype, plus one fp32 step counter per tensor
        assert traced["optimizer_states"] == opt * params + 4 * 12


def test_fitted_activation_constants_equal_the_saved_tensors_by_hand(torch_and_transformers):
    from planner.calibrate.trace import fit_activations

    model = load_model(TINY)
    h, f, heads = 64, 176, 4
    # hf (bf16): per norm fp32 input 4h + fp32 rstd 4 + normalised 2h + weighted output 2h; q, k, v after
    # repeat_kv 3 x 2h; fp32 log-sum-exp 4 per head; attention output 2h; SwiGLU gate, act, up, product 4 x 2f.
    by_hand = 2 * (8 * h + 4) + 6 * h + 4 * heads + 2 * h + 8 * f
    fit = fit_activations(model, "hf", "none")
    assert by_hand == 2968
    assert fit.per_token_per_layer == by_hand
    assert fit.per_layer == 0 and fit.residual_bytes == 0
    assert fit.per_token_sq_per_layer == 2  # the bf16 causal mask fake mode materialises: dropped
    # full checkpointing keeps the block input, bf16
    assert fit_activations(model, "hf", "full").per_token_per_layer == 2 * h
    # autocast (fp32 weights): fp32 residual and norms (8h + 4 each), one bf16 cast per consuming linear
    # (3 + 2 inputs x 2h), the same attention and MLP tensors; plus the bf16 weight copies (2 bytes per
    # matrix parameter: 4096 + 2 x 2048 + 4096 + 3 x 11,264 = 46,080) kept for backward.
    autocast = fit_activations(model, "autocast", "none")
    assert autocast.per_token_per_layer == 2 * (8 * h + 4) + 10 * h + 6 * h + 4 * heads + 2 * h + 8 * f == 3608
    assert autocast.per_layer == 2 * 46_080
    assert fit_activations(model, "autocast", "full").per_token_per_layer == 4 * h


@pytest.mark.parametrize("path", sorted((ROOT / "calibration" / "traced").glob("*.yaml")), ids=lambda p: p.stem)
def test_committed_traces_still_match_the_walk(path):
    """The walk may not drift from the traced code: each committed trace names the walk value it was
    compared with, and the walk must still give it (ratio 1 means the walk is complete)."""
    from planner.calibrate.trace import walk_bytes_per_token_per_layer

    record = yaml.safe_load(path.read_text())
    model = load_model(record["model"])
    assert model.family == path.stem
    for implementation, modes in record["activations"].items():
        for mode, entry in modes.items():
            walk = walk_bytes_per_token_per_layer(model, implementation, mode)
            assert walk == entry["walk_bytes_per_token_per_layer"] == entry["traced_bytes_per_token_per_layer"]
            assert entry["ratio"] == 1.0
    # The loss/backward seam (12 V of fp32 log-softmax work beside the bf16 logits, plus the final norm):
    # traced and modelled agree within 0.5% (a check; not applied).
    assert record["loss_seam_outside_blocks"]["ratio"] == pytest.approx(1.0, abs=0.005)
    for states in record["states_after_one_adamw_step"].values():
        for entry in states.values():
            assert entry["traced_bytes_per_param"] == pytest.approx(entry["modelled_bytes_per_param"], abs=1e-4)


def _write_trace(folder: Path, family: str, model: str, ratio: float) -> None:
    entry = {"ratio": ratio}
    record = {
        "family": family,
        "model": model,
        "traced_with": {"transformers": "test"},
        "activations": {"hf": {"none": entry, "full": entry}},
    }
    (folder / "calibration" / "traced").mkdir(parents=True)
    (folder / "calibration" / "traced" / f"{family}.yaml").write_text(yaml.safe_dump(record))


def test_memory_model_scales_the_walk_by_the_traced_ratio(tmp_path, monkeypatch):
    model, _, plan = plan_for(model="llama-2-7b", engine="fsdp", zero=3, gpus=8, micro_batch=2)
    calibration.clear_cache()
    baseline = memory_arrays(model, plan)
    _write_trace(tmp_path, "llama-2", "llama-2-7b", 1.25)
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path))
    calibration.clear_cache()
    try:
        scaled = memory_arrays(model, plan)
    finally:
        calibration.clear_cache()
    saved = (
        plan.micro_batch
        * plan.seq_len
        * model.architecture.num_layers
        * act.saved_bytes_per_layer(model.architecture, plan)
    )
    extra_gib = 0.25 * saved / 2**30
    assert float(scaled.breakdown_gib["activations"] - baseline.breakdown_gib["activations"]) == pytest.approx(
        extra_gib
    )
    assert scaled.activations_source.startswith("traced: calibration/traced/llama-2.yaml (llama-2-7b")
    assert "x1.25000" in scaled.activations_source


def test_untraced_families_and_modes_say_textbook():
    calibration.clear_cache()
    megatron = plan_for(model="llama-2-7b", engine="megatron", gpus=8)
    assert calibration.activation_calibration(megatron[0], megatron[2]).label == calibration.TEXTBOOK
    selective = plan_for(model="llama-2-7b", engine="fsdp", zero=3, gpus=8, checkpointing="selective")
    assert calibration.activation_calibration(selective[0], selective[2]).ratio == 1.0
    gpt = plan_for(model="mpt-7b", gpus=8, zero=3)
    assert calibration.activation_calibration(gpt[0], gpt[2]).label == calibration.TEXTBOOK
    traced = plan_for(model="llama-2-13b", gpus=8, zero=3)
    assert calibration.activation_calibration(traced[0], traced[2]).label.startswith("traced:")
    assert total_params(traced[0].architecture) == 13_015_864_320
