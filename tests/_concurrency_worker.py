"""One writer of the concurrency test: random adds, alias moves, rollbacks and removals against
one home for N seconds; every outcome is appended to a JSON-lines log.

    python _concurrency_worker.py WORKER_ID FILES_DIR SECONDS LOG
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import DatabaseError, LoradexError
from loradex.registry.catalog.operations import MoveAlias, RollbackAlias, SoftDeleteVersion

ADAPTERS = ["alpha", "beta"]
ALIASES = ["production", "staging"]


def main() -> None:
    worker, files_dir, seconds, log_path = int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    rng = random.Random(worker)
    catalog = Catalog()
    files = sorted(files_dir.glob(f"w{worker:02d}_*.safetensors"))
    deadline = time.time() + seconds
    with open(log_path, "w") as log:
        def record(**entry):
            log.write(json.dumps(entry) + "\n")
            log.flush()

        while time.time() < deadline:
            adapter = rng.choice(ADAPTERS)
            op = rng.choices(["add", "alias", "rollback", "rm"], weights=[4, 4, 2, 1])[0]
            try:
                if op == "add":
                    if not files:
                        continue
                    path = files.pop()
                    v = add_file(catalog, path, name=adapter).version
                    record(op="add", ok=True, ref=v.ref, sha256=v.sha256)
                elif op == "alias":
                    versions = catalog.versions(adapter)
                    if not versions:
                        continue
                    target = rng.choice(versions)
                    alias = rng.choice(ALIASES)
                    catalog.apply([MoveAlias(target.ref, alias)])
                    record(op="alias", ok=True, name=adapter, alias=alias, to=target.version)
                elif op == "rollback":
                    alias = rng.choice(ALIASES)
                    (ev,) = catalog.apply([RollbackAlias(adapter, alias)])
                    record(op="rollback", ok=True, name=adapter, alias=alias, frm=ev.from_version, to=ev.to_version)
                else:
                    versions = catalog.versions(adapter)
                    if len(versions) < 3:
                        continue
                    target = rng.choice(versions)
                    v = catalog.apply([SoftDeleteVersion(target.ref)])[0]
                    record(op="rm", ok=True, ref=v.ref)
            except DatabaseError as exc:  # a lock or serialization error reaching the user
                record(op=op, ok=False, error=f"{type(exc).__name__}: {exc}", fatal=True)
            except LoradexError as exc:  # a refusal the user would see (e.g. alias points at it)
                record(op=op, ok=False, error=f"{type(exc).__name__}: {exc}", fatal=False)


if __name__ == "__main__":
    main()
