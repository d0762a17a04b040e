"""Reference FSDP2 training script that runs a plan written by `planner launch` (plan.json).

It builds a Llama-style decoder from the architecture in plan.json (random weights, no downloads), lays it
out as the plan's `fsdp` variant says (FSDP2 `fully_shard` per block for ZeRO-2/3, DDP for ZeRO-0,
tensor parallelism with or without sequence parallelism, activation checkpointing, mixed precision, CPU
offload, torch.compile), and trains on random tokens with the plan's micro-batch, gradient accumulation
and sequence length. Rank 0 prints loss, gradient norm, step time, tokens/s per GPU and peak GPU memory per step, which
is what `planner estimate` predicts.

Tensor parallelism follows torchtitan's Llama layout: column-parallel q/k/v and up/gate projections,
row-parallel output and down projections, a vocabulary-parallel LM head with a loss_parallel
cross-entropy, and with sequence parallelism the norms and residual stream split along the sequence
(Korthikanti et al. 2022). FSDP then shards over the data-parallel dimension of the 2-D mesh (dp x tp).
Pipeline and context parallelism are not run here: use the torchtitan or Megatron-LM configs of the same
folder. Runs on GPUs (NCCL) or, for smoke tests, on CPUs (gloo):

    torchrun --nproc-per-node=2 examples/train.py --plan launch/plan.json --variant fsdp --steps 2

Needs only PyTorch >= 2.6 (FSDP2 in torch.distributed.fsdp).
"""

import argparse
import contextlib
import gc
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    loss_parallel,
    parallelize_module,
)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "pure-bf16": torch.bfloat16}
_SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops._c10d_functional.reduce_scatter_tensor.default,
}
"""Selective checkpointing is torchtitan's op-level policy, which the memory model's `selective` mode
describes for FSDP: it keeps the attention outputs, the tensor-parallel reduce-scatters and every other
matmul output of a block (q, v, gate and down: the 1st, 3rd, 5th and 7th), and recomputes the rest."""


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _norm(arch: dict) -> nn.Module:
    if arch["norm"] == "rmsnorm":
        return RMSNorm(arch["hidden_size"])
    return nn.LayerNorm(arch["hidden_size"], bias=arch.get("norm_bias", False))


def _rope(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        h, a, kv = arch["hidden_size"], arch["num_attention_heads"], arch["num_kv_heads"]
        self.head_dim = arch.get("head_dim") or h // a
        self.grouped = kv != a
        qkv_bias = arch.get("qkv_bias", False)
        self.q = nn.Linear(h, a * self.head_dim, bias=qkv_bias)
        self.k = nn.Linear(h, kv * self.head_dim, bias=qkv_bias)
        self.v = nn.Linear(h, kv * self.head_dim, bias=qkv_bias)
        self.o = nn.Linear(a * self.head_dim, h, bias=arch.get("attn_out_bias", False))
        self.rope = arch["position_embedding"] == "rope"

    def forward(self, x, cos, sin):
        # Heads are counted from the projections' outputs: with tensor parallelism each rank holds 1/tp of them.
        b, s = x.shape[0], x.shape[1]
        q = self.q(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.grouped)
        return self.o(attn.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        h, f, bias = arch["hidden_size"], arch["ffn_hidden_size"], arch.get("mlp_bias", False)
        self.gated = arch["mlp"] == "swiglu"
        self.up = nn.Linear(h, f, bias=bias)
        self.gate = nn.Linear(h, f, bias=bias) if self.gated else None
        self.down = nn.Linear(f, h, bias=bias)

    def forward(self, x):
        hidden = F.silu(self.gate(x)) * self.up(x) if self.gated else F.gelu(self.up(x), approximate="tanh")
        return self.down(hidden)


class Block(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        self.attn_norm, self.attn = _norm(arch), Attention(arch)
        self.mlp_norm, self.mlp = _norm(arch), MLP(arch)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        h, vocab = arch["hidden_size"], arch["vocab_size"]
        self.embed = nn.Embedding(vocab, h)
        self.positions = (
            nn.Embedding(arch["max_position_embeddings"], h) if arch["position_embedding"] == "learned" else None
        )
        self.layers = nn.ModuleList(Block(arch) for _ in range(arch["num_layers"]))
        self.norm = _norm(arch)
        self.head = None if arch["tied_embeddings"] else nn.Linear(h, vocab, bias=False)
        self.head_dim = arch.get("head_dim") or h // arch["num_attention_heads"]

    def rope_tables(self, seq_len: int, device):
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        angles = torch.outer(torch.arange(seq_len, device=device).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions(torch.arange(tokens.shape[1], device=tokens.device))
        cos, sin = self.rope_tables(tokens.shape[1], tokens.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        if self.head is not None:
            return self.head(x)
        return F.linear(x, self.embed.weight)


def _selective_contexts():
    """One policy per checkpointed block call, counting that block's matmuls (forward and recompute
    separately, so both make the same choices)."""
    counts = {False: 0, True: 0}

    def policy(ctx, op, *args, **kwargs):
        if op == torch.ops.aten.mm.default:
            counts[ctx.is_recompute] += 1
            if counts[ctx.is_recompute] % 2 == 0:
                return CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def apply_checkpointing(model: "Decoder", mode: str) -> None:
    """Wrap every block in activation checkpointing (before torch.compile and FSDP, as torchtitan does:
    compiling the checkpointed block keeps the recompute inside the compiled graph)."""
    for i, layer in enumerate(model.layers):
        if mode == "full":
            model.layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)
        elif mode == "selective":
            model.layers[i] = checkpoint_wrapper(layer, context_fn=_selective_contexts, preserve_rng_state=False)


def load_plan(path: str, variant: str) -> tuple[dict, dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    entry = data["variants"].get(variant)
    if entry is None or "plan" not in entry:
        raise SystemExit(f"plan.json has no runnable '{variant}' variant: {entry and entry.get('reason')}")
    return entry["plan"], data["chosen"]["model"]["architecture"]


def check_runnable(plan: dict, arch: dict) -> None:
    """Refuse, with the reason, the plans this script does not lay out."""
    if plan["pp"] * plan["cp"] != 1:
        raise SystemExit("examples/train.py runs data and tensor parallelism; use torchtitan or Megatron-LM for pp/cp")
    if plan["engine"] != "fsdp":
        raise SystemExit(f"examples/train.py runs the fsdp variant, got engine {plan['engine']}")
    if plan["precision"] not in DTYPES:
        raise SystemExit(f"examples/train.py trains in {', '.join(DTYPES)}; use torchtitan for {plan['precision']}")
    if arch["position_embedding"] == "alibi":
        raise SystemExit("examples/train.py has no ALiBi bias (PyTorch SDPA's flash kernel takes none); use flash-attn")
    if arch.get("post_norms") or arch.get("attn_logit_softcap") or arch.get("final_logit_softcap"):
        raise SystemExit("examples/train.py has no Gemma block (post-norms, soft-capping); use the model's own code")
    if arch.get("sliding_window"):
        raise SystemExit("examples/train.py has no sliding-window attention; use the model's own code")
    if plan["tp"] > 1 and plan["zero"] == 0:
        raise SystemExit("examples/train.py combines tensor parallelism with FSDP (ZeRO-2/3), not DDP; use torchtitan")
    if plan["tp"] > 1 and arch["tied_embeddings"]:
        raise SystemExit("examples/train.py shards the LM head for tensor parallelism, which tied embeddings share")
    if plan["tp"] > 1 and arch["ffn_hidden_size"] % plan["tp"]:
        raise SystemExit(
            f"examples/train.py splits the MLP evenly: tp {plan['tp']} must divide {arch['ffn_hidden_size']}"
        )
    if plan["tp"] > 1 and plan["sequence_parallel"] and plan["seq_len"] % plan["tp"]:
        raise SystemExit(f"examples/train.py splits the sequence evenly: tp {plan['tp']} must divide {plan['seq_len']}")
    if plan["tp"] > 1 and plan["sequence_parallel"] and arch["position_embedding"] == "learned":
        raise SystemExit("examples/train.py adds learned positions to the whole sequence; use Megatron-LM for SP")


def make_mesh(plan: dict, device: torch.device) -> DeviceMesh | None:
    """The (dp, tp) mesh for tensor-parallel plans; None for data parallelism alone.

    The gradient norm of parameters sharded over both dimensions is partial over both: without a flattened
    dp x tp dimension DTensor reduces it with two all-reduces in a row (and warns that the order can differ
    between ranks); with one registered (as torchtitan registers its flattened meshes) it is one all-reduce."""
    tp = plan["tp"]
    if tp == 1:
        return None
    mesh = init_device_mesh(device.type, (dist.get_world_size() // tp, tp), mesh_dim_names=("dp", "tp"))
    flatten = getattr(mesh["dp", "tp"], "_flatten", None)  # private in torch 2.x, used by torchtitan
    if flatten is not None:
        flatten("dp_tp")
    return mesh


def apply_tensor_parallel(model: "Decoder", mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """torchtitan's Llama TP plan. With sequence parallelism the residual stream between blocks is split
    along the sequence (Shard(1)): the norms run on 1/tp of the tokens, the block inputs are all-gathered and
    the row-parallel outputs reduce-scattered. Without it the stream is whole on every rank and the
    row-parallel outputs are all-reduced. The LM head keeps its vocabulary shard (Shard(-1)) for the
    loss_parallel cross-entropy."""
    stream = Shard(1) if sequence_parallel else Replicate()
    outer = {
        "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=stream),
        "head": ColwiseParallel(input_layouts=stream, output_layouts=Shard(-1), use_local_output=False),
    }
    if sequence_parallel:
        outer["norm"] = SequenceParallel()
    parallelize_module(model, mesh, outer)
    for block in model.layers:
        plan = {
            "attn": PrepareModuleInput(
                input_layouts=(stream, None, None), desired_input_layouts=(Replicate(), None, None)
            ),
            "attn.q": ColwiseParallel(),
            "attn.k": ColwiseParallel(),
            "attn.v": ColwiseParallel(),
            "attn.o": RowwiseParallel(output_layouts=stream),
            "mlp": PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            "mlp.up": ColwiseParallel(),
            "mlp.down": RowwiseParallel(output_layouts=stream),
        }
        if block.mlp.gate is not None:
            plan["mlp.gate"] = ColwiseParallel()
        if sequence_parallel:
            plan.update({"attn_norm": SequenceParallel(), "mlp_norm": SequenceParallel()})
        parallelize_module(block, mesh, plan)
    _replicate_the_rest(model, mesh)


def _replicate_the_rest(model: nn.Module, mesh: DeviceMesh) -> None:
    """Without sequence parallelism the norms (and learned positions) run whole on every TP rank. Their
    parameters still become DTensors replicated over the TP mesh, so that after FSDP every parameter lives on
    the same 2-D mesh (gradient clipping reduces over all of them at once); inputs and outputs stay local."""

    def to_replicate(module, inputs, mesh):
        return tuple(DTensor.from_local(x, mesh, [Replicate()], run_check=False) for x in inputs)

    def to_local(module, output, mesh):
        return output.to_local()

    for module in model.modules():
        if any(not isinstance(p, DTensor) for p in module.parameters(recurse=False)):
            distribute_module(module, mesh, input_fn=to_replicate, output_fn=to_local)


def build(plan: dict, arch: dict, device: torch.device, mesh: DeviceMesh | None) -> nn.Module:
    check_runnable(plan, arch)
    torch.manual_seed(0)
    model = Decoder(arch)
    if plan["precision"] == "pure-bf16":
        model = model.to(torch.bfloat16)
    if mesh is not None:
        apply_tensor_parallel(model, mesh["tp"], plan["sequence_parallel"])
    apply_checkpointing(model, plan["checkpointing"])
    if plan["compile"]:
        for i, layer in enumerate(model.layers):
            model.layers[i] = torch.compile(layer)
    if plan["zero"] == 0:
        model = model.to(device)
        if dist.get_world_size() > 1:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return model
    mixed = plan["precision"] in ("bf16", "fp16")
    policy = MixedPrecisionPolicy(param_dtype=DTYPES[plan["precision"]], reduce_dtype=torch.float32) if mixed else None
    kwargs = {"reshard_after_forward": plan["zero"] == 3}
    if mesh is not None:
        kwargs["mesh"] = mesh["dp"]
    if policy is not None:
        kwargs["mp_policy"] = policy
    if plan["offload"] == "optimizer+params":
        kwargs["offload_policy"] = CPUOffloadPolicy()
    else:
        model = model.to(device)
    for layer in model.layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _autocast(plan: dict, device: torch.device):
    if plan["zero"] == 0 and plan["precision"] in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=DTYPES[plan["precision"]])
    return contextlib.nullcontext()


def _grad_scaler(plan: dict, device: torch.device):
    """fp16 needs loss scaling; FSDP's sharded gradients need the sharded scaler (one inf check for all)."""
    if plan["precision"] != "fp16":
        return None
    if plan["zero"] in (2, 3):
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device.type)
    return torch.amp.GradScaler(device.type)


def _layout(plan: dict, world: int) -> str:
    layout = "DDP" if plan["zero"] == 0 else f"FSDP2 ZeRO-{plan['zero']}"
    if plan["tp"] > 1:
        layout += f" + TP {plan['tp']}" + (" (sequence parallel)" if plan["sequence_parallel"] else "")
    return f"{layout} on {world} ranks"


def _cross_entropy(logits, targets):
    """Mean cross-entropy in fp32. A vocabulary-sharded DTensor (tensor parallelism) is reduced with
    loss_parallel, so the full logits are never gathered; the caller runs backward in the same context."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1))


def train(plan: dict, arch: dict, steps: int, device: torch.device) -> None:
    mesh = make_mesh(plan, device)
    model = build(plan, arch, device, mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    scaler = _grad_scaler(plan, device)
    rank, world = dist.get_rank(), dist.get_world_size()
    dp_rank = rank if mesh is None else mesh["dp"].get_local_rank()
    # The ranks of one tensor-parallel group must see the same tokens, so the data seed is the dp rank.
    generator = torch.Generator().manual_seed(1234 + dp_rank)
    mbs, accumulation, seq = plan["micro_batch"], plan["grad_accum"], plan["seq_len"]
    tokens_per_step = mbs * seq * accumulation * (world // plan["tp"])
    vocab = arch["vocab_size"]
    sharded = plan["zero"] in (2, 3)
    loss_context = loss_parallel if mesh is not None else contextlib.nullcontext
    if rank == 0:
        print(
            f"plan: {_layout(plan, world)}, micro-batch {mbs} x accumulation {accumulation} x seq {seq}, "
            f"checkpointing {plan['checkpointing']}, {plan['precision']}, offload {plan['offload']}",
            flush=True,
        )
    for step in range(1, steps + 1):
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        for micro in range(accumulation):
            last = micro == accumulation - 1
            # FSDP reduce-scatters every micro-batch, so only the gradient shards accumulate (as torchtitan
            # does and the memory model assumes); DDP skips the all-reduce until the last micro-batch.
            sync = contextlib.nullcontext() if sharded or last or world == 1 else model.no_sync()
            tokens = torch.randint(vocab, (mbs, seq + 1), generator=generator).to(device)
            with sync, _autocast(plan, device), loss_context():
                loss = _cross_entropy(model(tokens[:, :-1]), tokens[:, 1:]) / accumulation
                (scaler.scale(loss) if scaler else loss).backward()
            loss = loss.detach()
            total += loss.full_tensor() if isinstance(loss, DTensor) else loss
        if scaler:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm  # every rank joins the reduction
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.all_reduce(total)
        elapsed = time.perf_counter() - start
        if rank == 0:
            peak = torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else math.nan
            print(
                f"step {step} loss {total.item() / world:.4f} grad_norm {norm.item():.4f} time {elapsed:.3f} s "
                f"tokens/s/GPU {tokens_per_step / world / elapsed:,.0f} peak_reserved_gib {peak:.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help="plan.json written by planner launch")
    parser.add_argument("--variant", default="fsdp", help="which variant of plan.json to run (default fsdp)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps to run")
    args = parser.parse_args()
    plan, arch = load_plan(args.plan, args.variant)
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    try:
        train(plan, arch, args.steps, device)
        # Every rank finishes its collectives, and the model's pending gloo work is freed while the process group
        # still exists: destroying the group first let a gloo worker thread abort the process at exit
        # ("terminate called without an active exception", seen about 1 run in 15 on a loaded 2-core machine).
        dist.barrier()
        gc.collect()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
