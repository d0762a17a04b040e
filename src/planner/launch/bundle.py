"""One launch folder per plan: every requested engine config, its launch script, plan.json and a README.

Which variant of the plan each target runs (planner.launch.variants):
    deepspeed   -> deepspeed      accelerate -> deepspeed and fsdp-hf    trainer -> the plan's own
    torchrun    -> fsdp           megatron   -> megatron                 torchtitan -> fsdp
(`trainer` takes the DeepSpeed variant for DeepSpeed plans and the HF-FSDP one otherwise, falling back to
the other when the Trainer cannot run the first, e.g. DeepSpeed AutoTP). A target whose variant cannot
exist, or that cannot run it, is listed in the README with the reason instead of being written.
"""

import json
from dataclasses import dataclass, field

from planner.catalog.models import Architecture
from planner.errors import PlannerError
from planner.estimate import Estimate
from planner.launch.accelerate import (
    accelerate_command,
    accelerate_deepspeed_config,
    accelerate_fsdp_config,
    render_accelerate_yaml,
)
from planner.launch.deepspeed import deepspeed_command, deepspeed_config, hostfile_example
from planner.launch.layout import node_layout
from planner.launch.megatron import flag_lines, megatron_arguments
from planner.launch.peft import peft_files
from planner.launch.shell import NODE_COMMENTS, render_script, torchrun_args
from planner.launch.torchtitan import torchtitan_module
from planner.launch.torchtune import (
    TORCHTUNE_VERSION,
    render_torchtune_yaml,
    torchtune_command,
    torchtune_config,
    torchtune_recipe,
)
from planner.launch.trainer import trainer_arguments, trainer_flags
from planner.launch.variants import SearchContext, Variant, build_variant
from planner.plan import Plan

TARGETS: tuple[str, ...] = ("deepspeed", "accelerate", "trainer", "torchrun", "megatron", "torchtitan")
TARGET_TITLES = {
    "deepspeed": "DeepSpeed launcher",
    "accelerate": "Accelerate",
    "trainer": "Hugging Face Trainer",
    "torchrun": "torchrun + examples/train.py",
    "megatron": "Megatron-LM",
    "torchtitan": "torchtitan",
}


@dataclass
class LaunchFolder:
    """What `planner launch` writes, before it is written."""

    chosen: Estimate
    variants: dict[str, Variant]
    model_ref: str
    """How `planner estimate --model` names the model (catalog name or file path)."""
    files: dict[str, str] = field(default_factory=dict)
    """File name -> text."""
    commands: dict[str, list[str]] = field(default_factory=dict)
    """Config label -> the launch script(s) that start it."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Target -> why no config was written."""


def target_codes(target: str, chosen: Estimate) -> tuple[str, ...]:
    """The variant codes a target writes configs for."""
    if target == "accelerate":
        return ("deepspeed", "fsdp-hf")
    if target == "trainer":
        return ("deepspeed", "fsdp-hf") if chosen.plan.engine == "deepspeed" else ("fsdp-hf", "deepspeed")
    return {"deepspeed": ("deepspeed",), "torchrun": ("fsdp",), "megatron": ("megatron",)}.get(target, ("fsdp",))


def parse_targets(text: str) -> tuple[str, ...]:
    """`deepspeed,accelerate` or `all` -> targets in canonical order."""
    names = {t.strip() for t in text.split(",") if t.strip()}
    if "all" in names:
        return TARGETS
    unknown = sorted(names - set(TARGETS))
    if unknown or not names:
        raise PlannerError(
            f"unknown launch target(s): {', '.join(unknown) or '(none)'}", f"choose from {', '.join(TARGETS)} or all"
        )
    return tuple(t for t in TARGETS if t in names)


def build_launch_folder(
    chosen: Estimate, targets: tuple[str, ...], context: SearchContext | None, origin_note: str
) -> LaunchFolder:
    """Variants, config files, scripts, plan.json and README for `chosen`."""
    node_layout(chosen.plan)  # fails early, with a clear message, on a GPU count no launcher can start
    needed = sorted({code for t in targets for code in target_codes(t, chosen)})
    variants = {code: build_variant(code, chosen, context) for code in needed}
    folder = LaunchFolder(chosen, variants, context.model_ref if context is not None else chosen.model.name)
    for target in targets:
        _WRITERS[target](folder)
    from planner.launch.cluster import cluster_files

    folder.files.update(cluster_files(chosen.plan, chosen.model.name, folder.files))
    from planner.launch.readme import render_plan_json, render_readme

    folder.files["plan.json"] = render_plan_json(folder, origin_note)
    folder.files["README.md"] = render_readme(folder, targets, origin_note)
    return folder


def _variant(folder: LaunchFolder, target: str, code: str) -> Variant | None:
    variant = folder.variants[code]
    if variant.estimate is None:
        folder.skipped.setdefault(target, f"{code}: {variant.reason}")
        return None
    return variant


def _variant_label(variant: Variant) -> str:
    """What a command runs when it is not the ranked plan: `; fsdp-hf variant: micro-batch 16 x accumulation 1,
    30,274 tokens/s` (the README's command list), or "" for the plan itself."""
    if not variant.changes:
        return ""
    plan, speed = variant.plan, variant.estimate.performance.tokens_per_s
    batch = f"micro-batch {plan.micro_batch} x accumulation {plan.grad_accum}"
    return f"; {variant.code} variant: {batch}, {speed:,.0f} tokens/s"


def _variant_comments(folder: LaunchFolder, variant: Variant) -> list[str]:
    """The script's first comment lines: which plan it runs, with its numbers beside the ranked plan's."""
    est, chosen = variant.estimate, folder.chosen
    numbers = f"predicted {est.performance.tokens_per_s:,.0f} tokens/s, peak {est.memory.peak_gib:.1f} GiB per GPU"
    if not variant.changes:
        batch = f"micro-batch {variant.plan.micro_batch} x accumulation {variant.plan.grad_accum}"
        return [f"Runs the ranked plan: {batch}, {numbers}."]
    return [
        f"Runs the {variant.code} variant of the plan, not the plan itself: micro-batch {variant.plan.micro_batch} x "
        f"accumulation {variant.plan.grad_accum}, {numbers}",
        f"(the ranked plan: micro-batch {chosen.plan.micro_batch} x accumulation {chosen.plan.grad_accum}, "
        f"{chosen.performance.tokens_per_s:,.0f} tokens/s). Changes: {'; '.join(variant.changes)}.",
        "README.md (Variants) says why.",
    ]


def _json(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def _write_deepspeed(folder: LaunchFolder) -> None:
    variant = _variant(folder, "deepspeed", "deepspeed")
    if variant is None:
        return
    plan = variant.plan
    _ensure_ds_config(folder, variant)
    if node_layout(plan).nodes > 1:
        folder.files["hostfile"] = hostfile_example(plan)
    command = deepspeed_command(plan, "${TRAIN_SCRIPT}", "$HERE/ds_config.json", "$HERE/hostfile")
    comments = [*_variant_comments(folder, variant)]
    comments.append("Run once, on the main node: the launcher starts every node over ssh (pdsh) from hostfile.")
    if node_layout(plan).nodes > 1:
        comments.append("Edit hostfile first; MASTER_ADDR = the main node's address.")
    comments.append("TRAIN_SCRIPT: your DeepSpeed training script (it must accept --deepspeed CONFIG).")
    setup = ['TRAIN_SCRIPT="${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}"']
    folder.files["launch_deepspeed.sh"] = render_script(
        "DeepSpeed launcher, written by planner launch", comments, setup, command
    )
    folder.commands[f"DeepSpeed JSON (ds_config.json{_variant_label(variant)})"] = ["launch_deepspeed.sh"]


def _ensure_ds_config(folder: LaunchFolder, variant: Variant) -> None:
    folder.files.setdefault("ds_config.json", _json(deepspeed_config(variant.plan)))


def _write_accelerate(folder: LaunchFolder) -> None:
    chosen_model = folder.chosen.model
    ds = _variant(folder, "accelerate", "deepspeed")
    if ds is not None:
        _ensure_ds_config(folder, ds)
        config = accelerate_deepspeed_config(ds.plan, "ds_config.json")
        folder.files["accelerate_deepspeed.yaml"] = render_accelerate_yaml(config, "Accelerate + DeepSpeed")
        folder.files["launch_accelerate_deepspeed.sh"] = _accelerate_script(folder, ds, "accelerate_deepspeed.yaml")
        label = f"Accelerate + DeepSpeed (accelerate_deepspeed.yaml{_variant_label(ds)})"
        folder.commands[label] = ["launch_accelerate_deepspeed.sh"]
    fsdp = _variant(folder, "accelerate", "fsdp-hf")
    if fsdp is not None:
        config = accelerate_fsdp_config(fsdp.plan, chosen_model)
        title = f"Accelerate + FSDP{fsdp.plan.fsdp_version}"
        folder.files["accelerate_fsdp.yaml"] = render_accelerate_yaml(config, title)
        folder.files["launch_accelerate_fsdp.sh"] = _accelerate_script(folder, fsdp, "accelerate_fsdp.yaml")
        folder.commands[f"{title} (accelerate_fsdp.yaml{_variant_label(fsdp)})"] = ["launch_accelerate_fsdp.sh"]
    if ds is not None or fsdp is not None:
        folder.skipped.pop("accelerate", None)
        _write_peft_files(folder, folder.chosen.plan)


def _accelerate_script(folder: LaunchFolder, variant: Variant, config_name: str) -> str:
    command = accelerate_command(variant.plan, f"$HERE/{config_name}")
    comments = [
        *_variant_comments(folder, variant),
        "TRAIN_SCRIPT: your Accelerate training script; its micro-batch and accumulation must be the ones above.",
    ]
    if node_layout(variant.plan).nodes > 1:
        comments = [
            *comments[:-1],
            "Run the same script on every node with NODE_RANK set (0 on the main node) and MASTER_ADDR set to",
            "the main node's address; MASTER_PORT is optional. Extra arguments are passed on.",
            comments[-1],
        ]
    setup = ['TRAIN_SCRIPT="${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}"']
    return render_script(f"accelerate launch ({config_name}), written by planner launch", comments, setup, command)


def _peft_comments(plan: Plan) -> list[str]:
    if plan.method in ("lora", "qlora"):
        lines = ["PEFT: the script wraps the model with get_peft_model(model, LoraConfig(**peft_config.json))"]
        if plan.precision == "pure-bf16" and plan.engine != "deepspeed":
            # PEFT's default autocast_adapter_dtype=True upcasts bf16 adapters to fp32; the plan counts bf16 ones.
            lines[0] += " with autocast_adapter_dtype=False (bf16 adapters, as predicted)"
        if plan.method == "qlora":
            lines.append("and loads it with quantization_config=BitsAndBytesConfig(**bnb_config.json).")
        return lines
    if plan.method == "freeze":
        return ["freeze: the script trains only the blocks listed in freeze_config.json."]
    return []


def _write_peft_files(folder: LaunchFolder, plan: Plan) -> None:
    """peft_config.json / bnb_config.json / freeze_config.json of a PEFT plan (planner.launch.peft); the
    training script applies them (LoraConfig, BitsAndBytesConfig, get_peft_model). LoRA/QLoRA plans also get
    torchtune's recipe config where torchtune can run the chosen plan as it is, else the reason why not."""
    for name, content in peft_files(plan, folder.chosen.model).items():
        folder.files[name] = _json(content)
    if folder.chosen.plan.method in ("lora", "qlora"):
        _write_torchtune(folder)


def _write_torchtune(folder: LaunchFolder) -> None:
    plan = folder.chosen.plan
    try:
        config = torchtune_config(plan, folder.chosen.model)
    except PlannerError as error:
        folder.skipped["torchtune"] = error.message
        return
    folder.files["torchtune_lora.yaml"] = render_torchtune_yaml(plan, config)
    comments = [
        f"torchtune {TORCHTUNE_VERSION} ({torchtune_recipe(plan)}); set the tokenizer and checkpoint paths in",
        "torchtune_lora.yaml first. Extra arguments are passed on (key=value overrides).",
    ]
    command = torchtune_command(plan, "$HERE/torchtune_lora.yaml")
    folder.files["launch_torchtune.sh"] = render_script("torchtune, written by planner launch", comments, [], command)
    folder.commands[f"torchtune {torchtune_recipe(plan)} (torchtune_lora.yaml)"] = ["launch_torchtune.sh"]


def _write_trainer(folder: LaunchFolder) -> None:
    model = folder.chosen.model
    variant, args, reasons = None, None, []
    for code in target_codes("trainer", folder.chosen):
        candidate = folder.variants[code]
        if candidate.estimate is None:
            reasons.append(f"{code}: {candidate.reason}")
            continue
        try:
            args = trainer_arguments(candidate.plan, model, "ds_config_trainer.json")
        except PlannerError as error:
            reasons.append(f"{code}: {error.message}")
            continue
        variant = candidate
        break
    if variant is None:
        folder.skipped["trainer"] = "; ".join(reasons)
        return
    if variant.plan.engine == "deepspeed":
        ds_config = deepspeed_config(variant.plan, hf_auto=True)
        folder.files["ds_config_trainer.json"] = _json(ds_config)
        # The args file carries the config itself: a path in it would be read from the current directory, so the
        # file would work only from inside this folder (the Trainer takes `deepspeed` as a path or a dict).
        folder.files["trainer_args.json"] = _json({**args, "deepspeed": ds_config})
    else:
        folder.files["trainer_fsdp_config.json"] = _json(args["fsdp_config"])
        folder.files["trainer_args.json"] = _json(args)  # fsdp_config and accelerator_config inline
    if "accelerator_config" in args:
        folder.files["trainer_accelerator_config.json"] = _json(args["accelerator_config"])
    _write_peft_files(folder, variant.plan)
    # The script gets absolute paths to this folder's files, so it runs from any directory.
    flags = trainer_flags(
        {**args, "deepspeed": "$HERE/ds_config_trainer.json"} if "deepspeed" in args else args,
        "$HERE/trainer_fsdp_config.json",
        "$HERE/trainer_accelerator_config.json",
    )
    command = [*torchrun_args(variant.plan), "${TRAIN_SCRIPT}", *flags]
    comments = [
        *_variant_comments(folder, variant),
        *NODE_COMMENTS,
        "TRAIN_SCRIPT: a script that parses TrainingArguments with HfArgumentParser, e.g. transformers'",
        "examples/pytorch/language-modeling/run_clm.py; add its model and data flags after this script's name.",
        "trainer_args.json holds the same arguments with the nested configs inline: it works from any directory.",
        *_peft_comments(variant.plan),
    ]
    setup = ['TRAIN_SCRIPT="${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your Trainer script}"']
    script = render_script("Hugging Face Trainer via torchrun, written by planner launch", comments, setup, command)
    folder.files["launch_trainer.sh"] = script
    label = _variant_label(variant) or f"; {variant.code} variant, the plan itself"
    folder.commands[f"HF Trainer (trainer_args.json{label})"] = ["launch_trainer.sh"]


def _train_script_refusal(plan: Plan, arch: Architecture) -> str:
    """Why examples/train.py cannot lay the plan out (its `check_runnable`) and what to use instead, or ""
    when it can."""
    torchtitan = "launch it with launch_torchtitan.sh"
    if arch.is_moe:
        return (
            "examples/train.py builds dense Llama-style blocks; this is a Mixture-of-Experts model: launch it with "
            "launch_torchtitan.sh or launch_megatron.sh"
        )
    if plan.pp * plan.cp > 1:
        return (
            f"examples/train.py runs data and tensor parallelism; this plan has pp {plan.pp}, cp {plan.cp}: "
            f"{torchtitan}"
        )
    if plan.precision == "fp8":
        return f"examples/train.py trains in bf16/fp16/fp32; this plan is fp8: {torchtitan}"
    if arch.position_embedding == "alibi":
        return (
            "examples/train.py has no ALiBi bias (PyTorch SDPA's flash kernel takes none): train with the model's "
            "own code and flash-attn's alibi_slopes (the Accelerate, Trainer or DeepSpeed configs)"
        )
    gemma_features = _gemma_features(arch)
    if gemma_features:
        return (
            f"examples/train.py's block has no {', no '.join(gemma_features)}: train with the model's own code "
            "(the Accelerate, Trainer or DeepSpeed configs)"
        )
    if plan.tp > 1 and plan.zero == 0:
        return (
            f"examples/train.py combines tensor parallelism with FSDP (ZeRO-2/3); this plan is DDP + TP: {torchtitan}"
        )
    if plan.tp > 1 and arch.tied_embeddings:
        return (
            "examples/train.py shards the LM head for tensor parallelism, which this model's tied embeddings "
            f"share: {torchtitan}"
        )
    if plan.tp > 1 and arch.ffn_hidden_size % plan.tp:
        return (
            f"examples/train.py splits the MLP evenly; tp {plan.tp} does not divide {arch.ffn_hidden_size}: "
            f"{torchtitan}"
        )
    if plan.sequence_parallel and plan.seq_len % plan.tp:
        return (
            f"examples/train.py splits the sequence evenly; tp {plan.tp} does not divide {plan.seq_len}: {torchtitan}"
        )
    if plan.sequence_parallel and arch.position_embedding == "learned":
        return f"examples/train.py runs sequence parallelism only with RoPE positions: {torchtitan}"
    return ""


def _gemma_features(arch: Architecture) -> list[str]:
    """Architecture features examples/train.py's Llama-style block does not build (Gemma 2/3, Mistral's
    and Phi-3's windows): it would silently train another model."""
    features = []
    if arch.post_norms:
        features.append("norms after attention and MLP")
    if arch.attn_logit_softcap or arch.final_logit_softcap:
        features.append("logit soft-capping")
    if arch.sliding_window:
        features.append("sliding-window attention")
    return features


def _write_torchrun(folder: LaunchFolder) -> None:
    variant = _variant(folder, "torchrun", "fsdp")
    if variant is None:
        return
    plan = variant.plan
    refusal = _train_script_refusal(plan, variant.estimate.model.architecture)
    if refusal:
        folder.skipped["torchrun"] = refusal
        return
    command = [*torchrun_args(plan), "${TRAIN_SCRIPT}", "--plan", "$HERE/plan.json", "--variant", "fsdp"]
    comments = [
        *_variant_comments(folder, variant),
        *NODE_COMMENTS,
        "TRAIN_SCRIPT defaults to planner's examples/train.py (FSDP2 on a Llama-style model built from",
        "plan.json); any script that reads plan.json the same way can replace it.",
    ]
    setup = ['TRAIN_SCRIPT="${TRAIN_SCRIPT:-$HERE/train.py}"']
    folder.files["launch_torchrun.sh"] = render_script("torchrun, written by planner launch", comments, setup, command)
    from planner.launch.example import example_train_script

    folder.files["train.py"] = example_train_script()
    folder.commands[f"torchrun + FSDP2 (train.py reading plan.json{_variant_label(variant)})"] = ["launch_torchrun.sh"]


def _write_megatron(folder: LaunchFolder) -> None:
    variant = _variant(folder, "megatron", "megatron")
    if variant is None:
        return
    try:
        args = megatron_arguments(folder.chosen.model, variant.plan)
    except PlannerError as error:
        folder.skipped["megatron"] = error.message
        return
    folder.files["megatron_args.txt"] = "\n".join(flag_lines(args)) + "\n"
    command = [*torchrun_args(variant.plan), "${MEGATRON_LM}/pretrain_gpt.py", *args]
    comments = [
        *_variant_comments(folder, variant),
        *NODE_COMMENTS,
        "MEGATRON_LM: a Megatron-LM checkout. Add data, tokenizer, learning-rate and checkpoint flags",
        "after this script's name, e.g. --data-path ... --tokenizer-type HuggingFaceTokenizer --tokenizer-model ...",
    ]
    setup = ['MEGATRON_LM="${MEGATRON_LM:?set MEGATRON_LM to your Megatron-LM checkout}"']
    setup.append("export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron's requirement for TP/SP communication overlap")
    folder.files["launch_megatron.sh"] = render_script(
        "Megatron-LM, written by planner launch", comments, setup, command
    )
    folder.commands[f"Megatron-LM (megatron_args.txt{_variant_label(variant)})"] = ["launch_megatron.sh"]


def _write_torchtitan(folder: LaunchFolder) -> None:
    variant = _variant(folder, "torchtitan", "fsdp")
    if variant is None:
        return
    try:
        source = torchtitan_module(folder.chosen.model, variant.plan)
    except PlannerError as error:
        folder.skipped["torchtitan"] = error.message
        return
    folder.files["torchtitan_plan.py"] = source
    command = [*torchrun_args(variant.plan), "-m", "torchtitan.train", "--module", "torchtitan_plan"]
    command += ["--config", "planner_plan"]
    comments = [
        *_variant_comments(folder, variant),
        *NODE_COMMENTS,
        "Needs torchtitan 0.3 (pip install torchtitan==0.3.0) and this folder on PYTHONPATH.",
    ]
    setup = ['export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"']
    folder.files["launch_torchtitan.sh"] = render_script(
        "torchtitan, written by planner launch", comments, setup, command
    )
    folder.commands[f"torchtitan (torchtitan_plan.py{_variant_label(variant)})"] = ["launch_torchtitan.sh"]


_WRITERS = {
    "deepspeed": _write_deepspeed,
    "accelerate": _write_accelerate,
    "trainer": _write_trainer,
    "torchrun": _write_torchrun,
    "megatron": _write_megatron,
    "torchtitan": _write_torchtitan,
}
