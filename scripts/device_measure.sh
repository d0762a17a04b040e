#!/usr/bin/env bash
# One prepared call for a lent GPU (the device tool runs it in the repository root): the default measure
# grid of `planner calibrate measure` (a few minutes on one H100), the CSV and the log left in $OUT.
# The GPU image has PyTorch and transformers but not planner's search dependencies, which measure does not
# need. Afterwards: copy $OUT/measured.csv to calibration/measured/<gpu>-<date>.csv and commit it.
set -euo pipefail
out="${OUT:-.}"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 -m planner.calibrate.measure --grid default --max-minutes 7 --out "$out/measured.csv" 2>&1 | tee "$out/measure.log"
