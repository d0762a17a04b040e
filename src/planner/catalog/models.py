"""Model catalog: `models/*.yaml` (or a Hugging Face `config.json`) -> `ModelSpec`.

A catalog file holds one model::

    name: llama-2-7b
    aliases: [7b]
    family: llama-2
    source: huggingface.co/meta-llama/Llama-2-7b-hf config.json
    architecture: {num_layers: 32, hidden_size: 4096, ...}

Every architecture key is documented on `Architecture`.
"""

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from planner.catalog._yaml import read_yaml_mapping, require
from planner.catalog._yaml import suggestions as _suggestions
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError

NormKind = Literal["rmsnorm", "layernorm"]
MlpKind = Literal["swiglu", "gelu"]
PositionKind = Literal["rope", "learned", "alibi"]


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that memory and FLOPs depend on."""

    num_layers: int
    """Transformer blocks (L)."""
    hidden_size: int
    """Model width (h)."""
    num_attention_heads: int
    """Query heads (a)."""
    num_kv_heads: int
    """Key/value heads; equal to `num_attention_heads` for multi-head attention, fewer for GQA/MQA."""
    ffn_hidden_size: int
    """Inner width of the MLP (f): the gate/up width for SwiGLU, the first projection for GELU."""
    vocab_size: int
    """Rows of the embedding and of the LM head (V), as instantiated (padded size if the model pads)."""
    tied_embeddings: bool
    """The LM head reuses the input embedding matrix (no separate V x h head)."""
    norm: NormKind
    """`rmsnorm` (weight only) or `layernorm` (weight, plus bias if `norm_bias`)."""
    mlp: MlpKind
    """`swiglu`: three h x f matrices (gate, up, down); `gelu`: two (up, down)."""
    position_embedding: PositionKind
    """`rope` and `alibi` have no parameters; `learned` adds a max_position_embeddings x h table."""
    max_position_embeddings: int
    """Longest context the model was configured for."""
    head_dim: int = 0
    """Width of one attention head; 0 means hidden_size / num_attention_heads."""
    norm_bias: bool = False
    """LayerNorm carries a bias vector."""
    qkv_bias: bool = False
    """The query/key/value projections carry biases (Qwen2, GPT-2)."""
    attn_out_bias: bool = False
    """The attention output projection carries a bias."""
    mlp_bias: bool = False
    """The MLP projections carry biases."""
    fused_qkv: bool = False
    """Query, key and value come from one fused matrix (MPT `Wqkv`, GPT-2 `c_attn`, GPT-NeoX); same
    parameter count, but autocast casts the norm output once instead of three times."""
    parallel_residual: bool = False
    """Attention and MLP read the same input (GPT-NeoX); changes nothing in the parameter count."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities in training (0 for Llama-family models)."""
    hidden_dropout: float = 0.0
    """Dropout after the attention output and the MLP (GPT-2: 0.1); each stores a 1-byte mask per value."""
    sliding_window: int | None = None
    """Attention window (Mistral); None for full causal attention."""

    @property
    def attention_head_dim(self) -> int:
        """The head width actually used (explicit `head_dim` or h / a)."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_width(self) -> int:
        """Output width of the query projection (a x head_dim); equals h for most models."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def kv_width(self) -> int:
        """Output width of the key (and of the value) projection."""
        return self.num_kv_heads * self.attention_head_dim


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalog: its name, where its numbers come from, and its architecture."""

    name: str
    """Canonical catalog name, e.g. `llama-2-13b`."""
    family: str
    """Model family, e.g. `llama-2`; calibration constants are kept per family."""
    architecture: Architecture
    source: str
    """Where the architecture numbers come from (the Hugging Face config the file transcribes)."""
    aliases: tuple[str, ...] = ()
    """Other names accepted on the command line."""
    hf_model_type: str | None = None
    """The Hugging Face `model_type` of the implementation the numbers describe."""
    resolved_from: str | None = None
    """The name the user typed when it was an alias (so output can say what it resolved to)."""
    notes: str = ""
    definition_path: str | None = field(default=None, compare=False)
    """The file the spec was read from."""


def _architecture_from_mapping(raw: dict[str, Any], path: Path) -> Architecture:
    known = {f.name for f in fields(Architecture)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CatalogError(
            f"{path}: unknown architecture key(s) {', '.join(unknown)}", f"valid keys: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for f in fields(Architecture):
        if f.name not in raw:
            if f.default is not MISSING:
                continue
            raise CatalogError(f"{path}: architecture is missing '{f.name}'", "add it")
        value = raw[f.name]
        if f.name == "sliding_window":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise CatalogError(f"{path}: 'sliding_window' must be a positive integer or null", "fix it")
        elif f.type in (int, "int"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CatalogError(f"{path}: '{f.name}' must be a non-negative integer, got {value!r}", "fix the value")
        elif f.type in (float, "float"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise CatalogError(
                    f"{path}: '{f.name}' must be a probability in [0, 1), got {value!r}", "fix the value"
                )
            value = float(value)
        elif f.type in (bool, "bool") and not isinstance(value, bool):
            raise CatalogError(f"{path}: '{f.name}' must be true or false, got {value!r}", "fix it")
        values[f.name] = value
    arch = Architecture(**values)
    check_architecture(arch, str(path))
    return arch


def check_architecture(arch: Architecture, where: str) -> None:
    """Reject architectures that cannot exist (zero sizes, heads not dividing, unknown kinds)."""
    for name in (
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_heads",
        "ffn_hidden_size",
        "vocab_size",
        "max_position_embeddings",
        "head_dim",
    ):
        value = getattr(arch, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"{where}: '{name}' must be an integer, got {value!r}", "fix the value")
        if value < 0 or (value == 0 and name != "head_dim"):
            raise CatalogError(f"{where}: '{name}' must be positive", "fix the value")
    if arch.norm not in ("rmsnorm", "layernorm"):
        raise CatalogError(f"{where}: norm must be rmsnorm or layernorm, got {arch.norm!r}", "fix it")
    if arch.mlp not in ("swiglu", "gelu"):
        raise CatalogError(f"{where}: mlp must be swiglu or gelu, got {arch.mlp!r}", "fix it")
    if arch.position_embedding not in ("rope", "learned", "alibi"):
        raise CatalogError(
            f"{where}: position_embedding must be rope, learned or alibi, got {arch.position_embedding!r}", "fix it"
        )
    if arch.num_attention_heads % arch.num_kv_heads:
        raise CatalogError(
            f"{where}: num_kv_heads ({arch.num_kv_heads}) must divide num_attention_heads ({arch.num_attention_heads})",
            "fix the head counts",
        )
    if not arch.head_dim and arch.hidden_size % arch.num_attention_heads:
        raise CatalogError(
            f"{where}: hidden_size must be divisible by num_attention_heads unless head_dim is given", "set head_dim"
        )


def _model_from_file(path: Path) -> ModelSpec:
    data = read_yaml_mapping(path)
    arch_raw = require(data, "architecture", dict, path)
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str | int) for a in aliases):
        raise CatalogError(f"{path}: 'aliases' must be a list of names", "fix it")
    return ModelSpec(
        name=str(require(data, "name", str, path)),
        family=str(require(data, "family", str, path)),
        architecture=_architecture_from_mapping(arch_raw, path),
        source=str(require(data, "source", str, path)),
        aliases=tuple(str(a) for a in aliases),
        hf_model_type=data.get("hf_model_type"),
        notes=str(data.get("notes") or ""),
        definition_path=str(path),
    )


@cache
def _catalog(dirs: tuple[Path, ...]) -> dict[str, ModelSpec]:
    """Every catalog model keyed by lower-case name and alias. Earlier folders shadow later ones."""
    by_key: dict[str, ModelSpec] = {}
    for folder in reversed(dirs):  # later folders first so earlier ones overwrite
        for path in sorted(folder.glob("*.yaml")):
            spec = _model_from_file(path)
            for key in (spec.name, *spec.aliases):
                by_key[key.lower()] = spec
    return by_key


def _current_catalog() -> dict[str, ModelSpec]:
    return _catalog(tuple(data_dirs("models")))


def list_models() -> list[ModelSpec]:
    """All catalog models, sorted by name, each once."""
    unique = {spec.name: spec for spec in _current_catalog().values()}
    return [unique[name] for name in sorted(unique)]


def load_model(name_or_path: str) -> ModelSpec:
    """Resolve `--model`: a catalog name or alias, a model YAML file, or a Hugging Face config.json."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if text.endswith((".json", ".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise CatalogError(f"model file {text} does not exist", "check the path")
        if path.suffix == ".json":
            from planner.catalog.hf_config import model_from_hf_config

            return model_from_hf_config(path)
        return _model_from_file(path)
    catalog = _current_catalog()
    spec = catalog.get(text.lower())
    if spec is None:
        close = _suggestions(text, catalog, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `planner models` for the catalog"
        raise CatalogError(f"unknown model '{text}'", f"{hint} A path to a config.json also works")
    if text.lower() != spec.name.lower():
        spec = replace(spec, resolved_from=text)
    return spec


def read_json_mapping(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning syntax errors into a one-line CatalogError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            "fix the file or download the model's config.json again",
        ) from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path} must hold a JSON object", "pass a Hugging Face config.json")
    return data
