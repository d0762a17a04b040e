"""Write tests/data/torchtune_0.6.1.yaml from a git clone of pytorch/torchtune (tag v0.6.1), by reading source only.

python scripts/torchtune_facts.py /path/to/torchtune-clone > tests/data/torchtune_0.6.1.yaml
"""

import ast
import re
import subprocess
import sys

import yaml

T = "v0.6.1"
REPO = sys.argv[1] if len(sys.argv) > 1 else "."


def show(path):
    return subprocess.run(["git", "-C", REPO, "show", f"{T}:{path}"], capture_output=True, text=True, check=True).stdout


commit = subprocess.run(
    ["git", "-C", REPO, "rev-parse", T + "^{commit}"], capture_output=True, text=True
).stdout.strip()


def top_keys(path):
    return [m.group(1) for m in re.finditer(r"^([a-z_]+):", show(path), re.M)]


def cfg_gets(path):
    return sorted(set(re.findall(r'cfg\.get\(\s*"([a-z_]+)"', show(path))))


def _args(fn):
    a = fn.args
    return [x.arg for x in a.args + a.kwonlyargs if x.arg != "self"]


KNOWN = {}


def functions(path, module):
    """Argument names of the module's functions and classes (__init__), of its `name = partial(f, ...)` and of
    its `name = f` aliases (f defined here or in a module read before)."""
    tree = ast.parse(show(path))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = _args(node)
        if isinstance(node, ast.ClassDef):
            init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
            out[node.name] = _args(init[0]) if init else []
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "partial"
        ):
            base = node.value.args[0].id
            if base in out:
                bound = {k.arg for k in node.value.keywords}
                out[node.targets[0].id] = [x for x in out[base] if x not in bound]
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and isinstance(node.targets[0], ast.Name):
            base = node.value.id
            if base in out or base in KNOWN:
                out[node.targets[0].id] = list(out.get(base, KNOWN.get(base)))
    KNOWN.update(out)
    return {f"{module}.{k}": v for k, v in out.items()}


funcs = {}
for pkg in [
    "llama2",
    "llama3",
    "llama3_1",
    "llama3_2",
    "llama3_3",
    "mistral",
    "qwen2",
    "qwen2_5",
    "gemma",
    "gemma2",
    "phi3",
    "phi4",
]:
    exports = set(re.findall(r'"([a-z0-9_]+)"', show(f"torchtune/models/{pkg}/__init__.py")))
    found = functions(f"torchtune/models/{pkg}/_model_builders.py", f"torchtune.models.{pkg}")
    funcs.update({k: v for k, v in found.items() if k.rsplit(".", 1)[1] in exports})
OTHERS = {
    "torchtune.datasets.alpaca_cleaned_dataset": ("torchtune/datasets/_alpaca.py", "torchtune.datasets"),
    "torchtune.training.FullModelHFCheckpointer": (
        "torchtune/training/checkpointing/_checkpointer.py",
        "torchtune.training",
    ),
    "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup": (
        "torchtune/training/lr_schedulers.py",
        "torchtune.training.lr_schedulers",
    ),
    "torchtune.training.metric_logging.DiskLogger": (
        "torchtune/training/metric_logging.py",
        "torchtune.training.metric_logging",
    ),
    "torchtune.modules.loss.CEWithChunkedOutputLoss": (
        "torchtune/modules/loss/ce_chunked_output_loss.py",
        "torchtune.modules.loss",
    ),
}
for name, (path, module) in OTHERS.items():
    funcs[name] = functions(path, module)[name]
out = {
    "source": f"github:pytorch/torchtune tag {T} (commit {commit})",
    "recipe_config_keys": {
        "lora_finetune_single_device": top_keys("recipes/configs/llama3_1/8B_lora_single_device.yaml"),
        "lora_finetune_distributed": top_keys("recipes/configs/llama3_1/8B_lora.yaml"),
    },
    "recipe_optional_keys": {
        "lora_finetune_single_device": cfg_gets("recipes/lora_finetune_single_device.py"),
        "lora_finetune_distributed": cfg_gets("recipes/lora_finetune_distributed.py"),
    },
    "model_types": re.findall(r"^    ([A-Z0-9_]+): str = ", show("torchtune/training/checkpointing/_utils.py"), re.M),
    "function_args": dict(sorted(funcs.items())),
}
print("# torchtune 0.6.1 facts for tests/test_torchtune_config.py, read from the tagged source (never imported) by")
print("# an ast walk: the top-level keys of the shipped Llama-3.1-8B LoRA configs, the optional keys each recipe reads")
print("# with cfg.get, the checkpointer's ModelType names, and the argument names of every exported model/tokenizer")
print("# builder (functions and partial() aliases, bound arguments removed) and of the other components the planner")
print("# writes (dataset, checkpointer, scheduler, logger, chunked loss).")
print(yaml.safe_dump(out, sort_keys=False, width=120))
