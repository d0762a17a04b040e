"""GPU catalog: `hardware/*.yaml` -> `GpuSpec`. One file per GPU; see `hardware/README.md`."""

from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from planner.catalog._yaml import read_yaml_mapping, require
from planner.catalog._yaml import suggestions as _suggestions
from planner.catalog.currency import USD, ExchangeRate, exchange_rate
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError, PlanError
from planner.inputs import one_line, quantity, quoted, text, whole_number

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp4")
MIN_NETWORK_GBPS = 0.01
"""Slowest network accepted, GB/s per GPU (80 Mb/s): below it no training job communicates, and the
times it would give are meaningless."""
MAX_NETWORK_GBPS = 10_000


@dataclass(frozen=True)
class NodeSpec:
    """The server the GPU is usually rented in."""

    gpus_per_node: int
    """GPUs sharing one NVLink/PCIe domain."""
    inter_node_bandwidth_gbps_per_gpu: float | None
    """Network bandwidth per GPU between nodes, GB/s, one direction; None where no source gives it."""
    host_ram_gib: float | None
    """CPU memory of the whole node, GiB (what CPU offload must fit in); None where unknown."""
    example: str = ""
    nvlink_domain_gpus: int | None = None
    """GPUs one NVLink domain joins when it spans several nodes (72 in a GB200 NVL72 rack of 4-GPU
    trays); None: the domain is the node."""


@dataclass(frozen=True)
class PriceSpec:
    """On-demand price, with the public list it came from."""

    usd_per_gpu_hour: float | None
    """US dollars per GPU-hour, what every cost uses: the listed price, converted when the list is not in USD."""
    instance: str = ""
    source: str = ""
    date: str = ""
    currency: str = "USD"
    """Currency of the list the price was read from."""
    listed_per_gpu_hour: float | None = None
    """The price as listed, in `currency` (equal to `usd_per_gpu_hour` for a USD list)."""
    exchange_rate: ExchangeRate = USD
    """The reference rate that turned the listed price into dollars (USD = 1 for a USD list)."""

    @property
    def converted(self) -> bool:
        """True when the dollars were computed from a price listed in another currency."""
        return self.usd_per_gpu_hour is not None and self.currency != "USD"

    def conversion(self, cite: bool = True) -> str:
        """How the dollars were obtained from a non-USD list, e.g. 'converted from 7.50 CNY/GPU-hour at
        7.0779 CNY per USD (<rate source>, <rate date>)' (only the rate's date without `cite`); empty for
        a USD list."""
        if not self.converted:
            return ""
        rate = self.exchange_rate
        reference = f"{rate.source}, {rate.date}" if cite else f"reference rate of {rate.date}"
        return (
            f"converted from {self.listed_per_gpu_hour:.2f} {self.currency}/GPU-hour at {rate.per_usd:g} "
            f"{self.currency} per USD ({reference})"
        )

    def describe(self) -> str:
        """Where the price comes from, for reports: instance, list, date and any currency conversion."""
        listed = f"{self.instance} ({self.source}, {self.date})"
        return f"{listed}; {self.conversion()}" if self.converted else listed


@dataclass(frozen=True)
class ComputeEfficiency:
    """Achieved fraction of the dense peak for a training step's matmuls:
    max * T / (T + half_tokens) * w / (w + half_width), with T the tokens one GPU processes per
    micro-batch and w the hidden size whose pointwise work one GPU does per matmul FLOP (the full hidden size
    with sequence parallelism; without it smaller, as each TP rank repeats the norm and residual regions;
    planner.performance.model.pointwise_width)."""

    max: float
    """The fraction large GEMMs reach, including the step's non-matmul kernels."""
    half_tokens: float
    """Tokens per micro-batch at which the token factor is one half."""
    half_width: float
    """Pointwise width at which the width factor is one half."""
    source: str = ""
    fitted_on: str = ""
    """Architecture family whose measurements the constants were fitted on (e.g. `hopper`); empty when
    the file does not say."""


POWER_CLOCK_EXPONENT = 1 / 3
"""How the sustained tensor-core clock of a part scales with its power limit, f ~ P^(1/3): dynamic power is
C V^2 f and over the DVFS range the voltage rises about in proportion to the clock, so at the fixed switched
capacitance of a saturating GEMM P ~ f^3. NVIDIA's own ratings of the same 132-SM GH100 die agree: the H100
NVL at 400 W is rated 835.5 dense bf16 TFLOP/s (1,671 with sparsity; NVIDIA H100 product page, quoted in
KellerJordan/modded-nanogpt#116), the SXM at 700 W 989.5, a ratio of 0.844 where (400/700)^(1/3) = 0.830."""

DEFAULT_FLASH_SPEED: dict[int, float | None] = {1: 0.5, 2: 1.0, 3: None}
"""For a catalog file without `flash_attention_speed`: the A100 values."""


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator: memory, peak throughput per dtype, links, node and price."""

    name: str
    """Canonical name, e.g. `A100-80GB`."""
    memory_gib: float
    """Device memory as nvidia-smi reports it (GiB): the hard cap a plan must stay under."""
    tflops: dict[str, float | None]
    """Dense peak TFLOP/s per dtype (`fp32`, `tf32`, `bf16`, `fp16`, `fp8`, `fp4`); None where unsupported."""
    hbm_bandwidth_gbps: float
    nvlink_bandwidth_gbps: float
    """Total bidirectional NVLink bandwidth per GPU (0 for PCIe-only parts)."""
    pcie_bandwidth_gbps: float
    """Bidirectional host-link bandwidth (what CPU offload transfers use)."""
    node: NodeSpec
    price: PriceSpec
    aliases: tuple[str, ...] = ()
    tdp_w: float | None = None
    power_limit_w: float | None = None
    """The power limit the part runs at (nvidia-smi's power cap); None: `tdp_w`."""
    tflops_rated_power_w: float | None = None
    """Power of the part whose datasheet `tflops` are (set where a part borrows another part's figures, e.g.
    the 500 W H100 96GB the 700 W SXM's); None: the figures are this part's own, rated at its limit."""
    notes: str = ""
    memory_overridden: bool = False
    """True when `--gpu-memory-gib` replaced the catalog capacity."""
    network_overridden: bool = False
    """True when `--network-gbps-per-gpu` replaced the catalog's inter-node bandwidth."""
    compute_efficiency: ComputeEfficiency | None = None
    """Fitted matmul efficiency (see scripts/fit_throughput.py); None until fitted for this GPU."""
    flash_attention_speed: dict[int, float | None] = field(default_factory=lambda: dict(DEFAULT_FLASH_SPEED))
    """FlashAttention version (1, 2, 3) -> how fast its kernels run relative to the step's GEMMs at the
    same efficiency (their achieved share of peak over the GEMMs'); None where that version does not run.
    A100: FlashAttention-2 is about as efficient as a GEMM (1), FlashAttention-1 half as fast; H100:
    FlashAttention-2 reaches 35% of peak where FlashAttention-3 reaches GEMM-like 75%."""
    flash_attention_source: str = ""
    architecture: str = ""
    """Architecture family (`ampere`, `ada`, `hopper`, `blackwell`, `cdna3`); empty when the file does not say."""

    @property
    def speed_extrapolated_from(self) -> str | None:
        """The family whose fitted efficiency this GPU borrows, when it is not its own (no measurement on
        this family yet): its predicted speed is an extrapolation."""
        fit = self.compute_efficiency
        if fit is None or not fit.fitted_on or not self.architecture or fit.fitted_on == self.architecture:
            return None
        return fit.fitted_on

    def nvlink_domain(self, gpus_per_node):
        """GPUs a collective can span on NVLink (or the node's PCIe) for a plan with `gpus_per_node` per
        node: the node, or the multi-node NVLink domain (GB200 NVL72) when the catalog gives one."""
        domain = self.node.nvlink_domain_gpus
        if domain is None or domain <= self.node.gpus_per_node:
            return gpus_per_node
        return np.maximum(gpus_per_node, domain)

    @property
    def clock_ratio(self) -> float:
        """Sustained clock under this part's power limit over the clock its `tflops` are rated at:
        (limit / rated power)^POWER_CLOCK_EXPONENT below the rated power, 1 otherwise."""
        limit = self.power_limit_w or self.tdp_w
        rated = self.tflops_rated_power_w
        if not limit or not rated or limit >= rated:
            return 1.0
        return (limit / rated) ** POWER_CLOCK_EXPONENT

    @property
    def peak_derated(self) -> bool:
        """The peaks are derated from another power rating: an extrapolation, not a datasheet figure."""
        return self.clock_ratio < 1.0

    def peak_tflops(self, dtype: str) -> float | None:
        """Dense peak TFLOP/s of `dtype` as the part runs: the catalog figure times `clock_ratio`."""
        value = self.tflops.get(dtype)
        return None if value is None else value * self.clock_ratio

    def with_network(self, gbps_per_gpu: float | None) -> "GpuSpec":
        """This GPU in a cluster whose network gives `gbps_per_gpu` GB/s per GPU between nodes (one
        direction), e.g. 25 for 8 x 200 Gb/s InfiniBand HDR per 8-GPU node; None keeps the catalog's."""
        if gbps_per_gpu is None:
            return self
        number = isinstance(gbps_per_gpu, int | float) and not isinstance(gbps_per_gpu, bool)
        if not number or not MIN_NETWORK_GBPS <= gbps_per_gpu <= MAX_NETWORK_GBPS:
            raise PlanError(
                f"--network-gbps-per-gpu must be between {MIN_NETWORK_GBPS} and {MAX_NETWORK_GBPS:,} GB/s, "
                f"got {quoted(gbps_per_gpu)}",
                "pass GB/s per GPU, e.g. 25 for 8 x 200 Gb/s per 8-GPU node",
            )
        node = replace(self.node, inter_node_bandwidth_gbps_per_gpu=float(gbps_per_gpu))
        return replace(self, node=node, network_overridden=True)

    def flash_attention_versions(self) -> tuple[int, ...]:
        """The FlashAttention versions that run on this GPU, oldest first."""
        return tuple(sorted(v for v, speed in self.flash_attention_speed.items() if speed is not None))


MAX_CATALOG_NUMBER = 1e9
"""Largest number a GPU file may hold (TFLOP/s, GB/s, GiB, watts, dollars): far above any real part."""
MIN_CATALOG_NUMBER = 1e-3
"""Smallest non-zero number a GPU file may hold: far below any real part's figure in these units, and
large enough that no time or cost computed from it overflows."""


def _number(
    data: dict[str, Any], key: str, path: Path, allow_none: bool = False, positive: bool = False
) -> float | None:
    """data[key] as a finite number in [1e-3, 1e9], or 0 unless `positive`; None only if allowed."""
    value = data.get(key)
    if value is None and allow_none:
        return None
    value = require(data, key, (int, float), path)
    if value == 0 and not positive:
        return 0.0
    return quantity(
        value, f"{path}: '{key}'", MIN_CATALOG_NUMBER, MAX_CATALOG_NUMBER, low_open=False, error=CatalogError
    )


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise CatalogError(f"{path}: '{key}' must be a mapping, got {quoted(value)}", "see hardware/README.md")
    return value


def _gpu_from_file(path: Path) -> GpuSpec:
    data = read_yaml_mapping(path)
    path = Path(one_line(str(path)))
    tflops_raw = require(data, "tflops", dict, path)
    tflops = {dtype: _number(tflops_raw, dtype, path, allow_none=True, positive=True) for dtype in DTYPES}
    node_raw = require(data, "node", dict, path)
    price_raw = _mapping(data, "price", path)
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str | int) and not isinstance(a, bool) for a in aliases):
        raise CatalogError(f"{path}: 'aliases' must be a list of names", "fix it")
    gpus_per_node = whole_number(node_raw.get("gpus_per_node"), f"{path}: 'gpus_per_node'", 1, 1024, CatalogError)
    return GpuSpec(
        name=text(require(data, "name", str, path), f"{path}: 'name'", CatalogError, 200),
        memory_gib=_number(data, "memory_gib", path, positive=True),
        tflops=tflops,
        hbm_bandwidth_gbps=_number(data, "hbm_bandwidth_gbps", path, positive=True),
        nvlink_bandwidth_gbps=_number(data, "nvlink_bandwidth_gbps", path),
        pcie_bandwidth_gbps=_number(data, "pcie_bandwidth_gbps", path, positive=True),
        node=NodeSpec(
            gpus_per_node=gpus_per_node,
            inter_node_bandwidth_gbps_per_gpu=_number(
                node_raw, "inter_node_bandwidth_gbps_per_gpu", path, allow_none=True, positive=True
            ),
            host_ram_gib=_number(node_raw, "host_ram_gib", path, allow_none=True, positive=True),
            example=str(node_raw.get("example") or ""),
            nvlink_domain_gpus=_domain(node_raw, path),
        ),
        price=_price(price_raw, path),
        aliases=tuple(str(a) for a in aliases),
        tdp_w=_number(data, "tdp_w", path, allow_none=True),
        power_limit_w=_number(data, "power_limit_w", path, allow_none=True, positive=True),
        tflops_rated_power_w=_number(data, "tflops_rated_power_w", path, allow_none=True, positive=True),
        notes=str(data.get("notes") or ""),
        compute_efficiency=_efficiency(data.get("compute_efficiency"), path),
        flash_attention_speed=_flash_attention_speed(data, path),
        flash_attention_source=str(data.get("flash_attention_source") or ""),
        architecture=str(data.get("architecture") or ""),
    )


def _price(raw: dict[str, Any], path: Path) -> PriceSpec:
    """`price:` of a GPU file: `usd_per_gpu_hour` for a list in dollars, or `per_gpu_hour` with its
    `currency` for a list in another currency (dollars then come from hardware/currency/exchange_rates.yaml)."""
    currency = one_line(str(raw.get("currency") or "USD")).strip().upper()
    usd = _number(raw, "usd_per_gpu_hour", path, allow_none=True, positive=True)
    listed = _number(raw, "per_gpu_hour", path, allow_none=True, positive=True)
    if currency == "USD" and listed is not None:
        raise CatalogError(f"{path}: a USD price goes in price.usd_per_gpu_hour", "rename per_gpu_hour")
    if currency != "USD" and usd is not None:
        raise CatalogError(
            f"{path}: the price is listed in {currency}, so give price.per_gpu_hour in {currency}",
            "dollars are computed from hardware/currency/exchange_rates.yaml",
        )
    rate = exchange_rate(currency, f"{path}: price")
    if currency != "USD" and listed is not None:
        usd = rate.to_usd(listed)
    return PriceSpec(
        usd_per_gpu_hour=usd,
        instance=str(raw.get("instance") or ""),
        source=str(raw.get("source") or ""),
        date=str(raw.get("date") or ""),
        currency=currency,
        listed_per_gpu_hour=usd if currency == "USD" else listed,
        exchange_rate=rate,
    )


def _domain(node_raw: dict[str, Any], path: Path) -> int | None:
    value = _number(node_raw, "nvlink_domain_gpus", path, allow_none=True)
    if value is not None and (value < 1 or value != int(value)):
        raise CatalogError(f"{path}: node.nvlink_domain_gpus must be a whole number of GPUs", "fix the value")
    return None if value is None else int(value)


def _flash_attention_speed(data: dict[str, Any], path: Path) -> dict[int, float | None]:
    raw = data.get("flash_attention_speed")
    if raw is None:
        return dict(DEFAULT_FLASH_SPEED)
    if not isinstance(raw, dict) or set(raw) - {"v1", "v2", "v3"}:
        raise CatalogError(f"{path}: flash_attention_speed must map v1, v2, v3 to a number or null", "fix it")
    speeds = {}
    for version in (1, 2, 3):
        value = _number(raw, f"v{version}", path, allow_none=True)
        if value is not None and not 0 < value <= 1:
            raise CatalogError(f"{path}: flash_attention_speed.v{version} must be in (0, 1]", "fix the value")
        speeds[version] = value
    if speeds[2] is None:
        raise CatalogError(f"{path}: flash_attention_speed.v2 is needed (the default kernel)", "give a number")
    return speeds


def _efficiency(raw: Any, path: Path) -> ComputeEfficiency | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: compute_efficiency must be a mapping", "see hardware/README.md")
    value = ComputeEfficiency(
        max=_number(raw, "max", path, positive=True),
        half_tokens=_number(raw, "half_tokens", path),
        half_width=_number(raw, "half_width", path),
        source=str(raw.get("source") or ""),
        fitted_on=str(raw.get("fitted_on") or ""),
    )
    if not 0 < value.max <= 1:
        raise CatalogError(f"{path}: compute_efficiency.max must be in (0, 1]", "fix the value")
    return value


@cache
def _catalog(dirs: tuple[Path, ...]) -> dict[str, GpuSpec]:
    by_key: dict[str, GpuSpec] = {}
    for folder in reversed(dirs):
        for path in sorted(folder.glob("*.yaml")):
            spec = _gpu_from_file(path)
            for key in (spec.name, *spec.aliases):
                by_key[key.lower()] = spec
    return by_key


def _current_catalog() -> dict[str, GpuSpec]:
    return _catalog(tuple(data_dirs("hardware")))


def list_gpus() -> list[GpuSpec]:
    """All catalog GPUs, sorted by name, each once."""
    unique = {spec.name: spec for spec in _current_catalog().values()}
    return [unique[name] for name in sorted(unique)]


def load_gpu(name: str) -> GpuSpec:
    """Resolve `--gpu` (name or alias, case-insensitive) or a path to a GPU YAML file."""
    name = text(name, "--gpu", CatalogError).strip()
    path = Path(name).expanduser()
    if name.endswith((".yaml", ".yml")):
        return _gpu_from_file(path)
    catalog = _current_catalog()
    spec = catalog.get(name.lower())
    if spec is None:
        close = _suggestions(name, catalog, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else "see `planner gpus` for the catalog"
        raise CatalogError(f"unknown GPU '{one_line(name)}'", hint)
    return spec
