"""Model catalog: `models/*.yaml` (or a Hugging Face `config.json`) -> `ModelSpec`.

A catalog file holds one model::

    name: llama-2-7b
    aliases: [7b]
    family: llama-2
    source: huggingface.co/meta-llama/Llama-2-7b-hf config.json
    architecture: {num_layers: 32, hidden_size: 4096, ...}

Every architecture key is documented on `Architecture`.
"""

from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from planner import inputs
from planner.catalog._yaml import read_yaml_mapping, require
from planner.catalog._yaml import suggestions as _suggestions
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError
from planner.inputs import one_line, quoted

NormKind = Literal["rmsnorm", "layernorm"]
MlpKind = Literal["swiglu", "gelu"]
PositionKind = Literal["rope", "learned", "alibi"]
QkNormKind = Literal["none", "head", "full"]


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
    """Attention window (Mistral, Gemma); None for full causal attention."""
    global_attention_every: int = 0
    """With a sliding window: every N-th layer attends to the whole sequence and the others to the window
    (Gemma 2: 2, alternating; Gemma 3: 6, five local layers per global one); 0: every layer uses the window."""
    qk_norm: QkNormKind = "none"
    """RMSNorm on queries and keys before RoPE: `head` (one head_dim weight shared by the heads: Qwen3,
    Gemma 3), `full` (over the whole projection width: OLMo 2), `none`."""
    post_norms: bool = False
    """Two more norms per block on the attention and MLP outputs before the residual add (Gemma 2/3's
    post_attention/post_feedforward norms, GLM-4-0414's post_self_attn/post_mlp norms)."""
    final_logit_softcap: float | None = None
    """Logits become cap * tanh(logits / cap) before the loss (Gemma 2: 30); None: no soft-capping."""
    attn_logit_softcap: float | None = None
    """Attention scores become cap * tanh(scores / cap) before the softmax (Gemma 2: 50); None: no
    soft-capping. Only kernels that apply it may run the model: eager attention, FlashAttention >= 2.6,
    FlashAttention-3 builds that have it (planner.plan.SOFTCAP_FLASH_VERSIONS)."""
    num_experts: int = 0
    """Routed experts per Mixture-of-Experts block (Mixtral `num_local_experts`, Qwen `num_experts`, DeepSeek
    `n_routed_experts`); 0 for a dense model."""
    experts_per_token: int = 0
    """Routed experts each token is sent to (top-k, `num_experts_per_tok`)."""
    moe_ffn_hidden_size: int = 0
    """Inner width of one routed expert's MLP (`moe_intermediate_size`; Mixtral, OLMoE and gpt-oss use their
    `intermediate_size`). Dense blocks keep `ffn_hidden_size`."""
    shared_experts: int = 0
    """Experts every token passes through besides the routed ones (DeepSeek `n_shared_experts`; Qwen2-MoE: 1)."""
    shared_expert_ffn_hidden_size: int = 0
    """Inner width of the shared experts taken together: both Hugging Face and Megatron build them as one MLP
    (DeepSeek: n_shared x moe_intermediate_size; Qwen2-MoE: shared_expert_intermediate_size)."""
    shared_expert_gate: bool = False
    """A sigmoid gate, Linear(h, 1), scales the shared expert's output (Qwen2-MoE `shared_expert_gate`)."""
    first_dense_layers: int = 0
    """The first N blocks keep a dense MLP of width `ffn_hidden_size` (DeepSeek `first_k_dense_replace`)."""
    moe_layer_every: int = 1
    """After the dense first layers, block i (0-based) is a MoE block when (i + 1) is a multiple of this
    (Qwen `decoder_sparse_step`); the others are dense."""
    router_bias: bool = False
    """The router's linear carries a bias per expert (gpt-oss)."""
    expert_bias: bool = False
    """Every routed expert's projections carry biases (gpt-oss gate_up_proj_bias and down_proj_bias)."""
    attention_sinks: bool = False
    """One learned sink logit per attention head joins the softmax (gpt-oss `sinks`)."""
    q_lora_rank: int = 0
    """Multi-head latent attention (DeepSeek-V2/V3): width of the compressed query (q_a_proj, then an
    RMSNorm and q_b_proj); 0 = queries come straight from a full q_proj (DeepSeek-V2-Lite)."""
    kv_lora_rank: int = 0
    """Multi-head latent attention: width of the compressed key/value latent (kv_a_proj_with_mqa, an RMSNorm,
    then kv_b_proj); 0 = ordinary attention (the MLA fields below are then unused)."""
    qk_rope_head_dim: int = 0
    """MLA: per-head query width that carries RoPE; the key's RoPE part is one vector shared by all heads."""
    qk_nope_head_dim: int = 0
    """MLA: per-head query/key width without RoPE (up-projected from the latents)."""
    v_head_dim: int = 0
    """MLA: per-head value width (the output projection reads heads x v_head_dim)."""
    mtp_layers: int = 0
    """Multi-token-prediction depths (DeepSeek-V3 `num_nextn_predict_layers`: 1): module k predicts the token
    k + 1 ahead from the main model's last hidden state and the embedding of the next token through two
    RMSNorms, an eh_proj linear (2h -> h), one more transformer block and a final norm, sharing the embedding
    and the LM head (DeepSeek-V3 report, arXiv 2412.19437, Sec. 2.2). Hugging Face transformers does not
    instantiate it (it drops those checkpoint weights on load), so it is not in the parameter counts; only a
    plan that trains it (`Plan.mtp_layers`, Megatron's --mtp-num-layers) holds and runs it. 0: none."""

    @property
    def is_moe(self) -> bool:
        """The model has routed experts."""
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """The attention is DeepSeek's multi-head latent attention."""
        return self.kv_lora_rank > 0

    @property
    def qk_head_dim(self) -> int:
        """Width of one head's query and key in the score product: nope + rope parts under MLA, else head_dim."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.attention_head_dim

    @property
    def value_head_dim(self) -> int:
        """Width of one head's value (MLA's v_head_dim, else head_dim)."""
        return self.v_head_dim if self.is_mla else self.attention_head_dim

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


MAX_ARCHITECTURE_SIZE = 2**24
"""Largest architecture number accepted (16,777,216): above every real model's layers, widths, vocabulary
(256k) and context (10M), and small enough that products of them stay exact in 64-bit arithmetic."""


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
        if f.type in (float, "float") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[f.name] = value
    arch = Architecture(**values)
    check_architecture(arch, str(path))
    return arch


ZERO_ALLOWED = (
    "head_dim",
    "global_attention_every",
    "num_experts",
    "experts_per_token",
    "moe_ffn_hidden_size",
    "shared_experts",
    "shared_expert_ffn_hidden_size",
    "first_dense_layers",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "v_head_dim",
    "mtp_layers",
)
"""Integer architecture fields where 0 means "absent" (derived head width, dense model, no MLA)."""


def _check_field(arch: Architecture, f, where: str) -> None:
    """One architecture field has the type its annotation says, in a range a real model can have."""
    value = getattr(arch, f.name)
    if f.name == "sliding_window":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CatalogError(
                f"{where}: 'sliding_window' must be a positive integer or null, got {quoted(value)}", "fix it"
            )
        if value is not None and value > MAX_ARCHITECTURE_SIZE:
            raise CatalogError(f"{where}: 'sliding_window' must be at most {MAX_ARCHITECTURE_SIZE:,}", "fix it")
    elif f.type in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(f"{where}: '{f.name}' must be an integer, got {quoted(value)}", "fix the value")
        if value < 0 or (value == 0 and f.name not in ZERO_ALLOWED):
            raise CatalogError(f"{where}: '{f.name}' must be positive, got {value}", "fix the value")
        if value > MAX_ARCHITECTURE_SIZE:
            raise CatalogError(
                f"{where}: '{f.name}' = {value} is beyond any real model (at most {MAX_ARCHITECTURE_SIZE:,})",
                "fix the value",
            )
    elif f.type in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise CatalogError(
                f"{where}: '{f.name}' must be a probability in [0, 1), got {quoted(value)}", "fix the value"
            )
    elif f.type in (bool, "bool") and not isinstance(value, bool):
        raise CatalogError(f"{where}: '{f.name}' must be true or false, got {quoted(value)}", "fix it")


def check_architecture(arch: Architecture, where: str) -> None:
    """Reject architectures that cannot exist (wrong types, zero or absurd sizes, heads not dividing,
    unknown kinds)."""
    where = one_line(where)
    for f in fields(Architecture):
        _check_field(arch, f, where)
    if arch.norm not in ("rmsnorm", "layernorm"):
        raise CatalogError(f"{where}: norm must be rmsnorm or layernorm, got {quoted(arch.norm)}", "fix it")
    if arch.mlp not in ("swiglu", "gelu"):
        raise CatalogError(f"{where}: mlp must be swiglu or gelu, got {quoted(arch.mlp)}", "fix it")
    if arch.position_embedding not in ("rope", "learned", "alibi"):
        raise CatalogError(
            f"{where}: position_embedding must be rope, learned or alibi, got {quoted(arch.position_embedding)}",
            "fix it",
        )
    if arch.qk_norm not in ("none", "head", "full"):
        raise CatalogError(f"{where}: qk_norm must be none, head or full, got {arch.qk_norm!r}", "fix it")
    cap = arch.final_logit_softcap
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap < 1e6):
        raise CatalogError(f"{where}: final_logit_softcap must be a positive number or null", "fix it")
    if arch.global_attention_every and not arch.sliding_window:
        raise CatalogError(f"{where}: global_attention_every needs a sliding_window", "give the window or drop it")
    if arch.num_attention_heads % arch.num_kv_heads:
        raise CatalogError(
            f"{where}: num_kv_heads ({arch.num_kv_heads}) must divide num_attention_heads ({arch.num_attention_heads})",
            "fix the head counts",
        )
    _check_moe(arch, where)
    _check_mla(arch, where)
    if not arch.head_dim and arch.hidden_size % arch.num_attention_heads:
        raise CatalogError(
            f"{where}: hidden_size must be divisible by num_attention_heads unless head_dim is given", "set head_dim"
        )


def _check_moe(arch: Architecture, where: str) -> None:
    """The expert fields hang together: top-k within the experts, an expert width, dense-first layers
    leaving at least one MoE block; no expert field on a dense model."""
    if not arch.is_moe:
        extra = [
            name
            for name in ("experts_per_token", "moe_ffn_hidden_size", "shared_experts", "shared_expert_ffn_hidden_size")
            if getattr(arch, name)
        ]
        if extra or arch.first_dense_layers or arch.router_bias or arch.expert_bias or arch.shared_expert_gate:
            raise CatalogError(f"{where}: expert fields on a model with num_experts 0", "set num_experts or drop them")
        return
    if not 1 <= arch.experts_per_token <= arch.num_experts:
        raise CatalogError(
            f"{where}: experts_per_token (top-k) must be from 1 to num_experts {arch.num_experts}, "
            f"got {arch.experts_per_token}",
            "fix the top-k",
        )
    if not arch.moe_ffn_hidden_size:
        raise CatalogError(f"{where}: a MoE model needs moe_ffn_hidden_size (one expert's MLP width)", "add it")
    if bool(arch.shared_experts) != bool(arch.shared_expert_ffn_hidden_size):
        raise CatalogError(
            f"{where}: shared_experts and shared_expert_ffn_hidden_size go together", "give both or neither"
        )
    if arch.shared_expert_gate and not arch.shared_experts:
        raise CatalogError(f"{where}: shared_expert_gate needs a shared expert", "drop it or add shared_experts")
    if arch.first_dense_layers >= arch.num_layers or moe_layer_count(arch, arch.num_layers) == 0:
        raise CatalogError(f"{where}: first_dense_layers / moe_layer_every leave no MoE block", "fix them")


def _check_mla(arch: Architecture, where: str) -> None:
    """Multi-head latent attention needs its head widths; its fields are meaningless without it."""
    if not arch.is_mla:
        if arch.q_lora_rank or arch.qk_rope_head_dim or arch.qk_nope_head_dim or arch.v_head_dim:
            raise CatalogError(f"{where}: MLA fields without kv_lora_rank", "set kv_lora_rank or drop them")
        return
    if not (arch.qk_nope_head_dim and arch.qk_rope_head_dim and arch.v_head_dim):
        raise CatalogError(
            f"{where}: multi-head latent attention needs qk_nope_head_dim, qk_rope_head_dim and v_head_dim",
            "add them",
        )
    if arch.num_kv_heads != arch.num_attention_heads:
        raise CatalogError(f"{where}: MLA up-projects a key and value per head: num_kv_heads = heads", "fix it")


def moe_layer_count(arch: Architecture, first_layers):
    """MoE blocks among the first `first_layers` blocks (int or array): block i is MoE when
    i >= first_dense_layers and (i + 1) % moe_layer_every == 0 (Hugging Face Qwen2/3-MoE's
    decoder_sparse_step rule, DeepSeek's first_k_dense_replace)."""
    if not arch.is_moe:
        return 0 * first_layers
    every = arch.moe_layer_every
    count = first_layers // every - arch.first_dense_layers // every
    return max(count, 0) if isinstance(count, int) else np.maximum(count, 0)


def _model_from_file(path: Path) -> ModelSpec:
    data = read_yaml_mapping(path)
    arch_raw = require(data, "architecture", dict, path)
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str | int) and not isinstance(a, bool) for a in aliases):
        raise CatalogError(f"{path}: 'aliases' must be a list of names", "fix it")
    hf_model_type = data.get("hf_model_type")
    if hf_model_type is not None and not isinstance(hf_model_type, str):
        raise CatalogError(f"{path}: 'hf_model_type' must be a name, got {quoted(hf_model_type)}", "fix it")
    return ModelSpec(
        name=str(require(data, "name", str, path)),
        family=str(require(data, "family", str, path)),
        architecture=_architecture_from_mapping(arch_raw, path),
        source=str(require(data, "source", str, path)),
        aliases=tuple(str(a) for a in aliases),
        hf_model_type=hf_model_type,
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


def search_models(text: str) -> list[ModelSpec]:
    """Catalog models whose name, an alias or the family contains `text` (case-insensitive; `-`, `_`, `.`
    and spaces are ignored, so `qwen3`, `Qwen 3` and `gemma2` all match)."""

    def squash(value: str) -> str:
        return "".join(ch for ch in value.lower() if ch.isalnum())

    needle = squash(text)
    return [m for m in list_models() if needle and any(needle in squash(k) for k in (m.name, m.family, *m.aliases))]


def load_model(name_or_path: str) -> ModelSpec:
    """Resolve `--model`: a catalog name or alias, a model YAML file, or a Hugging Face config.json."""
    text = inputs.text(name_or_path, "--model", CatalogError).strip()
    path = Path(text).expanduser()
    if text.endswith((".json", ".yaml", ".yml")) or _is_file(path):
        if not _is_file(path):
            raise CatalogError(f"model file {one_line(text)} does not exist", "check the path")
        if path.suffix == ".json":
            from planner.catalog.hf_config import model_from_hf_config

            return model_from_hf_config(path)
        return _model_from_file(path)
    catalog = _current_catalog()
    spec = catalog.get(text.lower())
    if spec is None:
        close = _suggestions(text, catalog, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `planner models` for the catalog"
        raise CatalogError(f"unknown model '{one_line(text)}'", f"{hint} A path to a config.json also works")
    if text.lower() != spec.name.lower():
        spec = replace(spec, resolved_from=text)
    return spec


def _is_file(path: Path) -> bool:
    """Path.is_file, False also for names the file system refuses (too long, invalid)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def read_json_mapping(path: Path) -> dict[str, Any]:
    """Read a JSON object (a Hugging Face config.json), every failure a one-line CatalogError."""
    return inputs.read_json_mapping(path, "config.json", "fix the file or download the model's config.json again")
