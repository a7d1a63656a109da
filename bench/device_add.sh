#!/usr/bin/env bash
# bench/bench_add.py on a lent device machine (16 cores, local disk), to see the `add` targets
# where the disk is not the bottleneck. That machine has no PyPI: the wheels travel in .whl/
# (loradex built with `pip wheel --no-deps -w .whl .`, plus SQLAlchemy, alembic, Mako, semver).
set -euo pipefail
OUT=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
mkdir -p bench/_work/add && export TMPDIR=$PWD/bench/_work/add
echo "cpus: $(nproc); TMPDIR filesystem:"; findmnt -T "$TMPDIR" -o TARGET,SOURCE,FSTYPE | tail -1; df -h "$TMPDIR" | tail -1
python3 bench/bench_add.py --size-mib "${SIZE_MIB:-1024}" | tee "$OUT/bench_add.md"
