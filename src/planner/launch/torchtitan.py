"""torchtitan config for a plan, for torchtitan 0.3's config registry (Python functions, not TOML).

torchtitan 0.3 (PyPI, 2026) dropped the TOML files of 0.1-0.2: a run is `--module <python module>
--config <function returning Trainer.Config>`. The emitted module starts from the llama3 recipe
(optimizer, data loader, logging) and sets the plan: parallel degrees, local/global batch, pipeline
micro-batch, activation checkpointing, precision, offload, compile and loss. The model is torchtitan's
own flavor when the catalog model is one (Llama 3.x), otherwise a llama3-architecture model with the
catalog numbers (Llama-2, Mistral); Mixture-of-Experts models run as torchtitan's own MoE flavors
(TORCHTITAN_MOE_FLAVORS) with the plan's expert-parallel degree. Batch semantics: without pipelining
local_batch_size is the micro-batch and torchtitan derives accumulation = global / (local x dp); with
pipelining the local batch is split into pipeline micro-batches, which is how the plan's grad_accum works
there.
"""

from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.plan import Plan, embedding_and_loss_as_layers

TORCHTITAN_FLAVORS = {
    "llama-3.2-1b": "1B",
    "llama-3.2-3b": "3B",
    "llama-3.1-8b": "8B",
    "llama-3.1-70b": "70B",
    "llama-3.1-405b": "405B",
}
"""Catalog models that torchtitan's llama3 registry (models/llama3/__init__.py) defines exactly."""

TORCHTITAN_MOE_FLAVORS = {
    "qwen3-30b-a3b": ("qwen3", "30B-A3B"),
    "qwen3-235b-a22b": ("qwen3", "235B-A22B"),
    "deepseek-v2-lite": ("deepseek_v3", "16B"),
    "deepseek-v3": ("deepseek_v3", "671B"),
    "gpt-oss-20b": ("gpt_oss", "20b"),
    "gpt-oss-120b": ("gpt_oss", "120b"),
}
"""Catalog MoE models and the torchtitan 0.3 model registry flavor that builds them with the same parameter
count (models/<family>/__init__.py; deepseek_v3's "16B" is the DeepSeek-V2-Lite shape)."""

MIXED_PRECISION_PARAM = {"bf16": "bfloat16", "fp8": "bfloat16", "pure-bf16": "bfloat16", "fp16": "float16"}
MIXED_PRECISION_PARAM["fp32"] = "float32"


def torchtitan_module(model: ModelSpec, plan: Plan) -> str:
    """Python source of a module whose `planner_plan()` returns the torchtitan Trainer.Config of `plan`."""
    _check(model, plan)
    lines = [
        f'"""torchtitan 0.3 config for {model.name}, written by planner launch.',
        "",
        "Run with torchtitan's trainer (see launch_torchtitan.sh):",
        "    torchrun ... -m torchtitan.train --module torchtitan_plan --config planner_plan",
        "with this folder on PYTHONPATH. Data set, tokenizer (hf_assets_path), learning rate and checkpoint",
        'folder come from the llama3 recipe: set yours below."""',
        "",
        *_imports(model, plan),
        "",
        "",
        *_model_spec_function(model, plan),
        "",
        "",
        *_every_nth_block_class(plan),
        "def planner_plan():",
        "    config = recipes.llama3_8b()  # recipe: optimizer, data loader, logging, checkpoints",
        "    config.model_spec = _model_spec()",
        *_body(plan, model.architecture.num_layers),
        "    return config",
    ]
    return "\n".join(lines) + "\n"


def _check(model: ModelSpec, plan: Plan) -> None:
    arch = model.architecture
    if plan.engine != "fsdp":
        raise PlannerError(
            f"torchtitan runs FSDP plans, got {plan.engine}", "planner launch writes it for the plan's FSDP variant"
        )
    if plan.optimizer != "adamw":
        raise PlannerError(f"torchtitan's recipes train with AdamW, not {plan.optimizer}", "use --optimizer adamw")
    if plan.loss in ("fused", "flash-ce", "shifted"):
        raise PlannerError(f"torchtitan has no {plan.loss} cross-entropy", "use --loss standard or chunked")
    if plan.fsdp_version != 2:
        raise PlannerError("torchtitan runs FSDP2", "use --fsdp-version 2 for the torchtitan config")
    if plan.grad_reduce_bf16:
        raise PlannerError(
            "torchtitan 0.3 reduce-scatters gradients in float32 only (mixed_precision_reduce)",
            "drop --grad-reduce-bf16 for the torchtitan config",
        )
    if model.name in TORCHTITAN_FLAVORS:
        return
    if arch.is_moe:
        _check_moe(model, plan)
        return
    unsupported = []
    if arch.norm != "rmsnorm" or arch.norm_bias:
        unsupported.append("LayerNorm")
    if arch.mlp != "swiglu":
        unsupported.append("a GELU MLP")
    if arch.position_embedding != "rope":
        unsupported.append(f"{arch.position_embedding} positions")
    if arch.qkv_bias or arch.attn_out_bias or arch.mlp_bias:
        unsupported.append("linear biases")
    if arch.tied_embeddings:
        unsupported.append("tied embeddings")
    if arch.head_dim and arch.head_dim * arch.num_attention_heads != arch.hidden_size:
        unsupported.append("a head width other than hidden / heads")
    if unsupported:
        raise PlannerError(
            f"torchtitan's llama3 model cannot express {model.name} ({', '.join(unsupported)})",
            "use the Megatron, DeepSpeed or Accelerate configs for this model",
        )


def _check_moe(model: ModelSpec, plan: Plan) -> None:
    """torchtitan runs MoE models as its own flavors and draws the expert-parallel group from the FSDP x TP
    ranks, experts not split by TP (the plan's etp 1). Dropless all-to-all routing is the only kind an FSDP
    plan has."""
    if model.name not in TORCHTITAN_MOE_FLAVORS:
        raise PlannerError(
            f"torchtitan 0.3 has no model for {model.name} (its MoE models: {', '.join(TORCHTITAN_MOE_FLAVORS)})",
            "use the Megatron config for this model",
        )
    if plan.tp > 1 and plan.expert_tp != 1:
        raise PlannerError(
            "torchtitan 0.3 keeps experts whole under tensor parallelism (expert TP 1); the plan splits them by TP",
            "use --etp 1, or the Megatron config",
        )


def _imports(model: ModelSpec, plan: Plan) -> list[str]:
    lines = ["from dataclasses import dataclass", ""] if plan.checkpointing_every > 1 else []
    lines += ["from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss"]
    lines.append("from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC")
    lines.append("from torchtitan.models.common.config_utils import decoder_vocab_size")
    lines.append("from torchtitan.models.llama3 import config_registry as recipes")
    if plan.precision == "fp8":
        lines.append("from torchtitan.components.quantization import Float8LinearConverter")
    if model.name in TORCHTITAN_FLAVORS:
        lines.append("from torchtitan.models.llama3 import model_registry")
        return lines
    if model.name in TORCHTITAN_MOE_FLAVORS:
        lines.append(f"from torchtitan.models.{TORCHTITAN_MOE_FLAVORS[model.name][0]} import model_registry")
        return lines
    lines.append("from torchtitan.distributed.pipeline_parallel import pipeline_llm")
    lines.append("from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm")
    lines.append("from torchtitan.models.llama3 import (")
    for name in ("_EMBEDDING_INIT", "_NORM_INIT", "Llama3Model", "_build_llama3_layers", "_output_linear_init"):
        lines.append(f"    {name},")
    lines.append("    parallelize_llama,")
    lines.append(")")
    lines.append("from torchtitan.models.llama3.state_dict_adapter import Llama3StateDictAdapter")
    lines.append("from torchtitan.protocols.model_spec import ModelSpec")
    return lines


def _model_spec_function(model: ModelSpec, plan: Plan) -> list[str]:
    converters = f"[Float8LinearConverter.Config(model_compile_enabled={plan.compile})]"
    if model.name in TORCHTITAN_FLAVORS or model.name in TORCHTITAN_MOE_FLAVORS:
        flavor = TORCHTITAN_FLAVORS.get(model.name) or TORCHTITAN_MOE_FLAVORS[model.name][1]
        call = f'model_registry("{flavor}"' + (f", converters={converters})" if plan.precision == "fp8" else ")")
        return ["def _model_spec():", f"    return {call}"]
    arch = model.architecture
    head_dim = arch.hidden_size // arch.num_attention_heads
    max_seq = max(plan.seq_len, arch.max_position_embeddings)
    lines = [
        "def _model_spec():",
        f'    """{model.name} ({model.source}) as a llama3-architecture model.',
        "    RoPE base and norm epsilon are torchtitan's defaults (they change neither memory nor speed):",
        '    set your checkpoint\'s values."""',
        f"    dim, vocab = {arch.hidden_size}, {arch.vocab_size}",
        "    config = Llama3Model.Config(",
        "        dim=dim,",
        "        vocab_size=vocab,",
        "        tok_embeddings=Embedding.Config(num_embeddings=vocab, embedding_dim=dim, param_init=_EMBEDDING_INIT),",
        "        norm=RMSNorm.Config(normalized_shape=dim, param_init=_NORM_INIT),",
        "        lm_head=Linear.Config(in_features=dim, out_features=vocab, param_init=_output_linear_init(dim)),",
        "        layers=_build_llama3_layers(",
        f"            n_layers={arch.num_layers},",
        "            dim=dim,",
        f"            n_heads={arch.num_attention_heads},",
        f"            n_kv_heads={arch.num_kv_heads},",
        f"            hidden_dim={arch.ffn_hidden_size},",
        f'            rope=ComplexRoPE.Config(dim={head_dim}, max_seq_len={max_seq}, scaling="none"),',
        '            attn_backend="flex",',
        "        ),",
        "    )",
    ]
    if plan.precision == "fp8":
        lines += [f"    for converter in {converters}:", "        config = converter.build().convert(config)"]
    lines += [
        "    return ModelSpec(",
        '        name="llama3",',
        f'        flavor="{model.name}",',
        "        model=config,",
        "        parallelize_fn=parallelize_llama,",
        "        pipelining_fn=pipeline_llm,",
        "        post_optimizer_build_fn=None,",
        "        state_dict_adapter=Llama3StateDictAdapter,",
        "    )",
    ]
    return lines


def _every_nth_block_class(plan: Plan) -> list[str]:
    """torchtitan 0.1-0.2's selective layer mode (`selective_ac_option = "N"`: full checkpointing of every
    N-th block, counted on each rank) as a policy class for 0.3, which keeps only full and op-level AC."""
    if not (plan.checkpointing == "full" and plan.checkpointing_every > 1):
        return []
    return [
        "class EveryNthBlockAC(FullAC):",
        '    """Full activation checkpointing of every N-th transformer block of this rank, the rest kept."""',
        "",
        "    @dataclass(kw_only=True, slots=True)",
        "    class Config(FullAC.Config):",
        "        every: int = 2",
        "",
        "    def _wrap_block(self, module, *, base_fqn=None):",
        "        self.blocks_seen = getattr(self, 'blocks_seen', 0) + 1",
        "        if self.blocks_seen % self.config.every:",
        "            return module",
        "        return FullAC._wrap_block(self, module, base_fqn=base_fqn)",
        "",
        "",
    ]


def parallel_degrees(plan: Plan) -> dict[str, int]:
    """torchtitan's degrees: FSDP shards over dp_shard (x cp); ZeRO-0 replicates (DDP). Expert parallelism
    (MoE plans) takes its ranks from the FSDP group: torchtitan's expert FSDP group is dp_shard x cp / ep,
    the plan's expert-data-parallel group."""
    replicate, shard = (plan.dp, 1) if plan.zero == 0 else (1, plan.dp)
    expert = {"expert_parallel_degree": plan.ep} if plan.ep > 1 else {}
    return {
        "data_parallel_replicate_degree": replicate,
        "data_parallel_shard_degree": shard,
        "tensor_parallel_degree": plan.tp,
        "pipeline_parallel_degree": plan.pp,
        "context_parallel_degree": plan.cp,
        **expert,
    }


def training_fields(plan: Plan) -> dict[str, object]:
    local_batch = plan.micro_batch * plan.grad_accum if plan.pp > 1 else plan.micro_batch
    fields: dict[str, object] = {
        "local_batch_size": local_batch,
        "global_batch_size": plan.global_batch,
        "seq_len": plan.seq_len,
        "mixed_precision_param": MIXED_PRECISION_PARAM[plan.precision],
        "mixed_precision_reduce": "float32",
        "enable_cpu_offload": plan.offload == "optimizer+params",
    }
    if plan.precision == "pure-bf16":
        fields["dtype"] = "bfloat16"
    if plan.pp > 1 or plan.ep > 1:
        # torchtitan 0.3 refuses CUDA graphs with pipeline parallelism, and with expert parallelism over its
        # all-to-all dispatcher (which synchronises with the CPU for the split sizes)
        fields["disable_cuda_graphs"] = True
    return fields


def _body(plan: Plan, num_layers: int) -> list[str]:
    lines = [f"    config.training.{k} = {v!r}" for k, v in training_fields(plan).items()]
    lines += [f"    config.parallelism.{k} = {v!r}" for k, v in parallel_degrees(plan).items()]
    reshard = "never" if plan.zero == 2 else "default"
    lines.append(f"    config.parallelism.fsdp_reshard_after_forward = {reshard!r}")
    lines.append(f"    config.parallelism.enable_sequence_parallel = {plan.sequence_parallel!r}")
    if plan.pp > 1:
        schedule = "Interleaved1F1B" if plan.pp_schedule == "interleaved" else "1F1B"
        lines += [
            f"    config.parallelism.pipeline_parallel_schedule = {schedule!r}",
            f"    config.parallelism.pipeline_parallel_microbatch_size = {plan.micro_batch}",
        ]
        aware = embedding_and_loss_as_layers(num_layers, plan.pp, plan.virtual_stages)
        if aware:
            lines += [
                "    # The embedding and the loss count as one layer each: first and last stage hold one block fewer.",
                "    config.parallelism.pipeline_parallel_first_stage_less_layers = 1",
                "    config.parallelism.pipeline_parallel_last_stage_less_layers = 1",
            ]
        else:
            lines += [
                "    # Split blocks evenly, extra blocks on the earliest stages (the split the memory model assumes).",
                "    config.parallelism.pipeline_parallel_first_stage_less_layers = 0",
                "    config.parallelism.pipeline_parallel_last_stage_less_layers = 0",
            ]
        if plan.pp_schedule == "interleaved":
            per_stage = (num_layers + 2 * aware) // (plan.pp * plan.virtual_stages)
            lines.append(f"    config.parallelism.pipeline_parallel_layers_per_stage = {per_stage}")
    checkpoint = {"none": "None", "selective": "SelectiveAC.Config()", "full": "FullAC.Config()"}
    if plan.checkpointing == "full" and plan.checkpointing_every > 1:
        checkpoint["full"] = f"EveryNthBlockAC.Config(every={plan.checkpointing_every})"
    lines.append(f"    config.activation_checkpoint = {checkpoint[plan.checkpointing]}")
    lines.append(f"    config.compile.enable = {plan.compile!r}")
    loss = "CrossEntropyLoss.Config(global_vocab_size=decoder_vocab_size(config.model_spec))"
    if plan.loss == "chunked":
        loss = f"ChunkedLossWrapper.Config(loss_fn={loss})"
    lines.append(f"    config.loss = {loss}")
    return lines
