"""PEFT plans checked against the real packages (the `calibrate`/`engines` extras; skipped without them).

* Adapter parameter counts: `peft.get_peft_model` on the meta device for catalog models, against
  planner.architecture.lora_params_per_layer.
* What a LoRA block keeps for backward: the real transformers Llama block wrapped by PEFT, run on the CPU
  under bf16 autocast (the Trainer's bf16 path), with every tensor autograd saves counted once; the
  per-token, per-layer slope must equal planner.memory.activations.lora_layer_activations.
"""

from dataclasses import replace

import numpy as np
import pytest

from planner.architecture import lora_params_per_layer, lora_targeted
from planner.catalog import load_gpu, load_model
from planner.catalog.models import ModelSpec
from planner.memory.activations import lora_layer_activations
from planner.plan import PlanRequest, make_plan

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

from planner.calibrate.hf_model import build_hf_model  # noqa: E402

pytestmark = pytest.mark.engines

SEQ_LENS = (64, 128, 256)
PEFT_TARGETS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear": "all-linear"}


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b", "llama-2-70b"])
@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_adapter_counts_equal_what_peft_instantiates(name, targets):
    model = load_model(name)
    with torch.device("meta"):
        hf = build_hf_model(model, num_layers=2, dtype=torch.bfloat16, device="meta")
        wrapped = peft.get_peft_model(hf, peft.LoraConfig(r=16, target_modules=PEFT_TARGETS[targets]))
    trainable, _ = wrapped.get_nb_trainable_parameters()
    assert trainable == 2 * lora_params_per_layer(model.architecture, 16, targets)


def _small(model: ModelSpec) -> ModelSpec:
    """A narrow Llama-2 (multi-head attention, SwiGLU) that runs for real on 2 CPU cores."""
    arch = replace(
        model.architecture,
        hidden_size=256,
        ffn_hidden_size=688,
        num_attention_heads=4,
        num_kv_heads=4,
        vocab_size=512,
        max_position_embeddings=512,
    )
    return replace(model, architecture=arch, name="small-llama")


def _saved_bytes(wrapped, tokens: torch.Tensor) -> int:
    """Bytes of distinct storages autograd saves during one forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in wrapped.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = wrapped(input_ids=tokens).logits
    del out
    return sum(seen.values())


@pytest.mark.parametrize(("targets", "dropout"), [("all-linear", 0.0), ("attention", 0.0), ("all-linear", 0.1)])
def test_lora_block_keeps_what_the_walk_counts(targets, dropout):
    torch.manual_seed(0)
    small = _small(load_model("llama-2-7b"))
    saved = {}
    for layers in (1, 2):
        hf = build_hf_model(small, num_layers=layers, dtype=torch.bfloat16)
        config = peft.LoraConfig(r=8, lora_dropout=dropout, target_modules=PEFT_TARGETS[targets])
        wrapped = peft.get_peft_model(hf, config)  # adapters in fp32 (autocast_adapter_dtype)
        wrapped.train()
        for seq in SEQ_LENS:
            saved[layers, seq] = _saved_bytes(wrapped, torch.randint(0, 512, (1, seq)))
    # One block's bytes, fitted as a*s + b*s^2 + w over the sequence lengths: a is per token; b is the s x s
    # causal mask the CPU SDPA kernel keeps (CUDA flash keeps none; planner.calibrate.trace drops it the same
    # way); w the autocast copies of the adapter weights (counted under autocast_weight_copies).
    per_layer = [saved[2, seq] - saved[1, seq] for seq in SEQ_LENS]
    traced = np.linalg.lstsq(np.array([[s, s * s, 1.0] for s in SEQ_LENS]), np.array(per_layer), rcond=None)[0][0]
    request = PlanRequest(
        model="llama-2-7b", engine="fsdp", method="lora", lora_rank=8, lora_targets=targets, lora_dropout=dropout
    )
    plan = make_plan(request, small, load_gpu("A100-80GB"))
    expected = lora_layer_activations(small.architecture, plan).total
    if dropout:
        # On the CPU nn.Dropout multiplies by a mask in the input's dtype (fp32 here: PEFT cast the input to
        # the adapter's dtype), 4 bytes per value; CUDA's fused native_dropout keeps a bool mask, 1 byte.
        expected += (4 - 1) * sum(t.cols for t in lora_targeted(small.architecture, targets))
    assert traced == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_launch_files_load_in_peft_and_transformers(tmp_path, method):
    import json

    from click.testing import CliRunner
    from transformers import BitsAndBytesConfig, TrainingArguments

    from planner.cli import main

    out = tmp_path / "report"
    args = ["solve", "--model", "7b", "--budget", "8xA100", "--method", method, "--seq-len", "2048"]
    result = CliRunner().invoke(main, [*args, "--global-batch", "64", "--out", str(out), "--emit", "trainer"])
    assert result.exit_code == 0, result.output
    folder = out / "launch-1"
    lora = peft.LoraConfig(**json.loads((folder / "peft_config.json").read_text()))
    assert (lora.r, lora.lora_dropout, lora.target_modules) == (16, 0.0, "all-linear")
    if method == "qlora":
        bnb = BitsAndBytesConfig(**json.loads((folder / "bnb_config.json").read_text()))
        assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
        assert bnb.bnb_4bit_compute_dtype == torch.bfloat16 == bnb.bnb_4bit_quant_storage
    trainer = json.loads((folder / "trainer_args.json").read_text())
    trainer.pop("deepspeed", None)  # DeepSpeed's own validation is tests/engines/test_engine_validators.py
    trainer.update(bf16=False, output_dir=str(tmp_path / "o"))  # this CPU has no bf16 GPU
    TrainingArguments(**trainer)
