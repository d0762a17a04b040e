"""Run Megatron-LM's own argument parser and validate_args on a launch folder's megatron_args.txt.

The megatron-core wheel lacks the training parser and Megatron-LM main needs Python >= 3.12, so this is
an opt-in check outside the default test run (tests/engines/test_megatron_validate_args.py runs it when
MEGATRON_LM and MEGATRON_PYTHON are set). Data and tokenizer flags are stand-ins (mock data, null
tokenizer); CUDA is not needed: the GPU-architecture query is answered as Hopper (sm90).

Usage: MEGATRON_PYTHON=python3.12 $MEGATRON_PYTHON scripts/megatron_validate_args.py \
           /path/to/Megatron-LM launch-1/megatron_args.txt WORLD_SIZE
Prints `OK dp=<data-parallel size> micro_batches=<per step>`; exits non-zero with Megatron's message otherwise.
"""

import os
import sys


def main() -> None:
    checkout, args_file, world_size = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, checkout)
    os.environ.update(WORLD_SIZE=world_size, RANK="0", CUDA_DEVICE_MAX_CONNECTIONS="1")
    with open(args_file, encoding="utf-8") as f:
        flags = f.read().split()
    stand_ins = ["--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", "32000"]
    stand_ins += ["--train-iters", "10", "--lr", "1e-4"]
    sys.argv = ["pretrain_gpt.py", *flags, *stand_ins]
    import megatron.training.arguments as arguments

    arguments.get_device_arch_version = lambda: 9
    args = arguments.parse_args()
    arguments.validate_args(args, {})
    micro_batches = args.global_batch_size // (args.micro_batch_size * args.data_parallel_size)
    print(f"OK dp={args.data_parallel_size} micro_batches={micro_batches}")


if __name__ == "__main__":
    main()
