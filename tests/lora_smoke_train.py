"""A Trainer + PEFT script for the LoRA launch smoke test (tests/test_launch_smoke.py): launch_trainer.sh starts it
with the emitted TrainingArguments flags; it wraps the tiny model (examples/tiny-llama.yaml, random weights) with
LoraConfig(**peft_config.json) from the launch folder, trains on random tokens and, on rank 0, prints which
parameters changed as one JSON line.

    TRAIN_SCRIPT=tests/lora_smoke_train.py launch_trainer.sh --launch_folder DIR --max_steps 2 ...
"""

import gc
import json
import os
from pathlib import Path

import peft
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from planner.calibrate.hf_model import build_hf_model
from planner.catalog import load_model

ROOT = Path(__file__).resolve().parent.parent
SEQ_LEN = 64


def main() -> None:
    args, rest = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(return_remaining_strings=True)
    folder = Path(rest[rest.index("--launch_folder") + 1])
    torch.manual_seed(0)
    model = build_hf_model(load_model(str(ROOT / "examples" / "tiny-llama.yaml")))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(**json.loads((folder / "peft_config.json").read_text())))
    before = {name: p.detach().clone() for name, p in wrapped.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (64, SEQ_LEN), generator=generator)
    data = [{"input_ids": row, "labels": row} for row in tokens]
    trainer = Trainer(model=wrapped, args=args, train_dataset=data)
    trainer.train()
    after = dict(wrapped.named_parameters())
    changed = sorted(n for n, p in before.items() if not torch.equal(p, after[n].detach()))
    trainable = sorted(n for n, p in wrapped.named_parameters() if p.requires_grad)
    if int(os.environ.get("RANK", "0")) == 0:
        print("lora-smoke " + json.dumps({"changed": changed, "trainable": trainable, "total": len(before)}))
    # The Trainer leaves its gloo group open. As in examples/train.py: every rank finishes its collectives and the
    # model's pending gloo work is freed before the group is destroyed; exiting with the group open let gloo abort
    # rank 1 at exit once in CI (SIGABRT after both ranks had trained and printed).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        del trainer, wrapped, after
        gc.collect()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
