#!/usr/bin/env bash
# The SD1.5-shape training benchmark on a lent GPU machine (issue 5): `train lora` vs the
# hand-written diffusers + peft loop, random weights at SD1.5 shapes, 512 px, batch 1, bf16.
#
# That machine has torch, transformers, peft and accelerate but no diffusers and cannot reach
# PyPI, so the wheels travel in .whl/ (diffusers, importlib_metadata, and loradex itself built
# with `pip wheel --no-deps -w .whl .`). Output: $OUT/train_sd15.md (or stdout).
set -euo pipefail
OUT=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, diffusers, peft, transformers, accelerate; print('python', sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
python3 bench/bench_train.py --shapes sd15 --resolution 512 --batch 1 --steps "${STEPS:-60}" \
    --repeats "${REPEATS:-2}" --mixed-precision "${PRECISION:-bf16}" | tee "$OUT/train_sd15.md"
