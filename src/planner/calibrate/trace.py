"""`planner calibrate trace`: the memory of the real model code, counted on fake tensors on a CPU.

For a catalog model, the transformers implementation is built with random weights inside
`FakeTensorMode` (shapes and dtypes only: a 70B layer costs nothing) and run under PyTorch's
`MemTracker` (torch.distributed._tools.mem_tracker), which files every live tensor as parameter,
gradient, optimizer state, activation or temporary. After the forward, the activation bytes are
fitted over 1-2 layers and 4 sequence lengths (micro-batch 1) as

    ACT(L, s) = L (a s + b s^2 + w) + (n s + m s^2 + c)

a   bytes per token per layer that autograd keeps: the constant the analytic walk predicts
    (planner.memory.activations.saved_bytes_per_layer);
b   bytes per token^2 per layer: the causal mask that fake mode makes the model materialise and every
    layer's SDPA save (s x s in bf16). On a GPU, transformers passes `is_causal` to the flash kernel and
    keeps no mask, so b is reported and dropped: this is the correction between the CPU trace and CUDA
    flash attention (the CPU SDPA kernel itself saves q, k, v, the output and the fp32 log-sum-exp,
    as CUDA flash does);
w   bytes per layer independent of tokens: the bf16 weight copies autocast keeps for backward;
n, m, c  the same outside the blocks (embedding, final norm, logits and loss at the forward's end).

Two implementation families are traced, per checkpointing mode (none, full): `hf` (bf16 weights, the
code under DeepSpeed or FSDP2 mixed precision) and `autocast` (fp32 weights under torch.autocast, the
DDP path). The result is one YAML per model family in calibration/traced/, which the memory model
reads (planner.memory.calibration): it scales its walk by traced/walk and says so in its output.
Known traps handled here: fake CUDA tensors fail in backward without a GPU, so everything runs on the
CPU; AdamW runs single-tensor (foreach inflates optimizer memory under fake mode).
"""

import platform
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from planner.architecture import params_per_layer
from planner.catalog import ModelSpec, load_model
from planner.errors import PlannerError
from planner.memory import activations as act
from planner.plan import Plan, PlanRequest, make_plan
from planner.progress import track

TRACE_SEQ_LENS = (256, 512, 1024, 2048)
TRACE_LAYERS = (1, 2)
IMPLEMENTATIONS = ("hf", "autocast")
MODES = ("none", "full")
DEFAULT_MODELS = ("llama-2-7b", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b")
"""One catalog model per family whose code calibration builds (llama, mistral, qwen2)."""


@dataclass(frozen=True)
class ActivationFit:
    """The fitted coefficients of ACT(L, s) for one implementation family and checkpointing mode."""

    per_token_per_layer: float
    per_token_sq_per_layer: float
    per_layer: float
    per_token_outside: float
    per_token_sq_outside: float
    outside: float
    residual_bytes: float
    """Largest absolute misfit of the 8 traced points, bytes (0 when the form above is exact)."""


def reference_plan(model: ModelSpec, implementation: str, checkpointing: str, seq_len: int = 1024) -> Plan:
    """The one-GPU plan whose activation family is `implementation` (hf: FSDP2 mixed precision over
    bf16 compute; autocast: fp32 weights under torch.autocast), as the memory model sees it."""
    from planner.catalog import load_gpu

    zero = 3 if implementation == "hf" else 0
    request = PlanRequest(
        model=model.name, gpus=1, engine="fsdp", zero=zero, checkpointing=checkpointing, seq_len=seq_len
    )
    plan = make_plan(request, model, load_gpu("A100-80GB"))
    if act.implementation_family(plan) != implementation:
        raise PlannerError(f"no reference plan for the {implementation} family", "this is a bug")
    return plan


Stop = Literal["forward", "backward", "step"]


def fake_step(
    model: ModelSpec, layers: int, seq_len: int, implementation: str, mode: str = "none", stop: Stop = "forward"
) -> dict[str, int | dict[str, int]]:
    """Run the transformers model on fake tensors under MemTracker up to `stop` (the forward with its loss,
    its backward, or one AdamW step too). Returns MemTracker's `current` and `peak` bytes by category
    (PARAM, GRAD, ACT, TEMP, OPT, Total) and the number of parameter tensors."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from planner.calibrate.hf_model import build_hf_model, enable_full_checkpointing

    autocast = implementation == "autocast"
    with FakeTensorMode():
        built = build_hf_model(model, num_layers=layers, dtype=torch.float32 if autocast else torch.bfloat16)
        if mode == "full":
            enable_full_checkpointing(built)
        built.train()
        optimizer = torch.optim.AdamW(built.parameters(), lr=1e-4, foreach=False)  # foreach inflates fake OPT
        tokens = torch.randint(0, model.architecture.vocab_size, (1, seq_len))
        tracker = MemTracker()
        tracker.track_external(built, optimizer)
        with tracker:
            # The loss is computed inside autocast and read after it: leaving the context drops autocast's
            # cache of bf16 weights, so what remains is what autograd keeps for backward.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = built(input_ids=tokens, labels=tokens).loss
            if stop != "forward":
                loss.backward()
            if stop == "step":
                optimizer.step()
            current, peak = (next(iter(tracker.get_tracker_snapshot(k).values())) for k in ("current", "peak"))
        tensors = sum(1 for _ in built.parameters())

    def by_category(snapshot) -> dict[str, int]:
        return {str(k).rsplit(".", 1)[-1]: v for k, v in snapshot.items()}

    return {"current": by_category(current), "peak": by_category(peak), "param_tensors": tensors}


def fit_activations(model: ModelSpec, implementation: str, mode: str) -> ActivationFit:
    """Trace the 8 (layers, seq_len) points and solve for the six coefficients."""
    rows, values = [], []
    for layers in TRACE_LAYERS:
        for s in TRACE_SEQ_LENS:
            rows.append([layers * s, layers * s * s, layers, s, s * s, 1.0])
            values.append(fake_step(model, layers, s, implementation, mode)["current"]["ACT"])
    design, target = np.array(rows, dtype=float), np.array(values, dtype=float)
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = float(np.max(np.abs(design @ coefficients - target)))
    rounded = [_clean(c, 3) for c in coefficients]
    return ActivationFit(*rounded, residual_bytes=_clean(residual, 3))


ADAMW_STEP_COUNTER_BYTES = 4
"""torch.optim.AdamW keeps one fp32 `step` scalar per parameter tensor (not modelled: bytes per tensor)."""

STATE_PRECISION = {"hf": "pure-bf16", "autocast": "bf16"}
"""The plan precision whose per-parameter states each traced implementation has: bf16 weights with bf16
AdamW states (`hf` here is traced with bf16 parameters), or fp32 weights under autocast."""


def trace_states(model: ModelSpec, implementation: str, layers: int = 1, seq_len: int = 64) -> dict[str, int]:
    """Weights, gradients and AdamW states after one real training step on fake tensors (MemTracker), and
    the number of parameter tensors (AdamW keeps a step counter per tensor)."""
    run = fake_step(model, layers, seq_len, implementation, stop="step")
    current = run["current"]
    return {
        "weights": current["PARAM"],
        "gradients": current["GRAD"],
        "optimizer_states": current["OPT"],
        "param_tensors": run["param_tensors"],
    }


def modelled_state_bytes_per_param(model: ModelSpec, implementation: str) -> dict[str, float]:
    """The memory model's bytes per parameter for the same one-GPU plan (planner.memory.states)."""
    from planner.catalog import load_gpu
    from planner.memory.states import state_layout

    request = PlanRequest(model=model.name, gpus=1, engine="fsdp", zero=0, precision=STATE_PRECISION[implementation])
    plan = make_plan(request, model, load_gpu("A100-80GB"))
    return {t.name: float(t.bytes_per_param) for t in state_layout(model.architecture, plan)}


SEAM_SEQ_LENS = (4096, 8192, 16384)
"""Long enough that the loss/backward seam, not the end of backward (gradients), is the step's peak."""


def trace_loss_seam(model: ModelSpec) -> dict[str, float]:
    """Bytes per token outside the blocks at the step's peak (start of backward: logits, their fp32
    log-softmax and its gradient, final norm, ids), traced with one bf16 block, against the model's
    `logits_and_loss` + final norm + ids/labels terms for the same plan. A check, not applied."""
    rows, values = [], []
    for s in SEAM_SEQ_LENS:
        rows.append([s, s * s, 1.0])
        values.append(fake_step(model, 1, s, "hf", stop="backward")["peak"]["Total"])
    per_token, _, _ = np.linalg.solve(np.array(rows), np.array(values, dtype=float))
    plan = reference_plan(model, "hf", "none")
    arch = model.architecture
    traced = per_token - walk_bytes_per_token_per_layer(model, "hf", "none")
    modelled = float(act.logits_bytes(arch, plan) + act.final_norm_bytes(arch, plan) + act.INPUT_IDS_AND_LABELS_BYTES)
    return {
        "traced_bytes_per_token": _clean(traced, 3),
        "modelled_bytes_per_token": _clean(modelled, 3),
        "traced_in_vocab_units": _clean(traced / arch.vocab_size, 4),
        "ratio": _clean(traced / modelled),
    }


def walk_bytes_per_token_per_layer(model: ModelSpec, implementation: str, mode: str) -> float:
    """What the analytic walk says one block keeps per token (tp = 1, flash attention)."""
    plan = reference_plan(model, implementation, mode)
    return float(act.saved_bytes_per_layer(model.architecture, plan))


def trace_model(model: ModelSpec) -> dict:
    """The calibration record of one model: per implementation family and mode, traced vs walk."""
    import torch
    import transformers

    activations: dict = {}
    copies = None
    for implementation in IMPLEMENTATIONS:
        activations[implementation] = {}
        for mode in MODES:
            fit = fit_activations(model, implementation, mode)
            walk = walk_bytes_per_token_per_layer(model, implementation, mode)
            activations[implementation][mode] = {
                "traced_bytes_per_token_per_layer": fit.per_token_per_layer,
                "walk_bytes_per_token_per_layer": _clean(walk, 3),
                "ratio": _clean(fit.per_token_per_layer / walk),
                "fake_mode_mask_bytes_per_token_sq_per_layer": fit.per_token_sq_per_layer,
                "per_layer_bytes": fit.per_layer,
                "outside_blocks": {
                    "bytes_per_token": fit.per_token_outside,
                    "bytes_per_token_sq": fit.per_token_sq_outside,
                    "bytes": fit.outside,
                },
                "fit_residual_bytes": fit.residual_bytes,
            }
            if implementation == "autocast" and mode == "none":
                copies = _clean(fit.per_layer / params_per_layer(model.architecture))
    states = {}
    for implementation in IMPLEMENTATIONS:
        traced = trace_states(model, implementation, layers=1)
        params = traced_params(model, layers=1)
        modelled = modelled_state_bytes_per_param(model, implementation)
        counters = ADAMW_STEP_COUNTER_BYTES * traced["param_tensors"]
        states[STATE_PRECISION[implementation]] = {
            name: {
                "traced_bytes_per_param": _clean(
                    (traced[name] - (counters if name == "optimizer_states" else 0)) / params
                ),
                "modelled_bytes_per_param": modelled.get(name, 0.0),
            }
            for name in ("weights", "gradients", "optimizer_states")
        }
    return {
        "family": model.family,
        "model": model.name,
        "traced_with": {
            "torch": str(torch.__version__),
            "transformers": str(transformers.__version__),
            "python": platform.python_version(),
            "date": date.today().isoformat(),
            "seq_lens": list(TRACE_SEQ_LENS),
            "layers": list(TRACE_LAYERS),
            "micro_batch": 1,
        },
        "activations": activations,
        "autocast_weight_copy_bytes_per_param": copies,
        "states_after_one_adamw_step": states,
        "loss_seam_outside_blocks": trace_loss_seam(model),
    }


def traced_params(model: ModelSpec, layers: int) -> int:
    """Parameters of the model cut to `layers` blocks (what the state trace builds)."""
    from planner.architecture import embedding_tensors, head_tensors, numel

    arch = model.architecture
    return params_per_layer(arch) * layers + numel(embedding_tensors(arch)) + numel(head_tensors(arch))


def _clean(value: float, digits: int = 5) -> float:
    return round(float(value), digits) + 0.0  # + 0.0 turns -0.0 into 0.0


HEADER = """# Traced by `planner calibrate trace` (src/planner/calibrate/trace.py): the transformers code of {model},
# run on fake tensors on a CPU under MemTracker. activations.<family>.<checkpointing>: bytes one block keeps
# per token after the forward, traced and as the analytic walk gives them; the memory model scales its walk
# by `ratio` for models of this family and says so in its output. The s^2 term is the causal mask fake mode
# materialises (none on a GPU with flash attention) and is not used. Regenerate with:
#   planner calibrate trace --models {model}
"""


def render_calibration(record: dict) -> str:
    return HEADER.format(model=record["model"]) + yaml.safe_dump(record, sort_keys=False)


def trace(models: tuple[str, ...], out_dir: Path) -> list[Path]:
    """Trace each model and write calibration/traced/<family>.yaml (atomically, one file per family)."""
    from planner.files import check_output_folder

    check_output_folder(out_dir, "--out", own_name=False)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise PlannerError(
            f"planner calibrate needs torch and transformers ({error})", "pip install '.[calibrate]'"
        ) from None
    from planner.calibrate.measure import write_text_atomically

    written = []
    for name in track(models, "tracing models"):
        model = load_model(name)
        record = trace_model(model)
        path = out_dir / f"{model.family}.yaml"
        written.append(write_text_atomically(path, render_calibration(record)))
    return written
