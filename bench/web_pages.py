"""Server time of the web app's pages on a big catalog (issue 18: catalog and search pages
≤ 150 ms median with 100,000 versions).

Each page is requested in-process through FastAPI's TestClient by a signed-in session (the admin
token), ``--repeat`` times after two warm-up requests; the time is the whole request (routing,
session look-up, queries, template rendering). Measured in the same run, as references: the
sign-in page (``/ui/login``: the same middleware, session look-up and template machinery with no
catalog query) and ``search_catalog`` alone for the same query (the library call the catalog page
makes), so each page's time is also given as a ratio to them.

    .venv/bin/python bench/web_pages.py --home /tmp/web-big            # builds it the first time
    .venv/bin/python bench/web_pages.py --home /tmp/web-big --adapters 1000   # a smaller one
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._big_catalog import WORDS, build_big_catalog  # noqa: E402

ADMIN = "ldx_bench-web-pages-admin-token"


def _timed(fn, repeat: int) -> tuple[float, float]:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--adapters", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from loradex.registry.catalog.search import search_catalog
    from loradex.registry.server.app import build_server_app

    catalog = build_big_catalog(args.home, adapters=args.adapters, log=lambda line: print(line, file=sys.stderr))
    versions = catalog.read(lambda s: s.execute(__import__("sqlalchemy").text("SELECT count(*) FROM versions")).scalar())
    client = TestClient(build_server_app(catalog, ADMIN, rate_limit=None))
    csrf = client.get("/ui/login").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert client.post("/ui/login", data={"token": ADMIN, "csrf": csrf}, follow_redirects=False).status_code == 303
    busy = catalog.list_adapters()[len(catalog.list_adapters()) // 2].name
    common, rare = WORDS[0], f"trg{args.adapters // 3:05d}"
    pages = [
        ("catalog /", "/", None),
        (f"search ?q={common}", f"/?q={common}", common),
        (f"search ?q={rare} (one adapter)", f"/?q={rare}", rare),
        ("filter ?kind=lora&sort=name&page=40", "/?kind=lora&sort=name&page=40", ""),
        (f"adapter /ui/adapters/{busy[:18]}…", f"/ui/adapters/{busy}", None),
        ("audit /ui/audit", "/ui/audit", None),
    ]
    ref_median, _ = _timed(lambda: client.get("/ui/login"), args.repeat)
    print(f"catalog: {versions} versions in {args.adapters} adapters ({catalog.url.split(':')[0]}); "
          f"{args.repeat} requests each after 2 warm-ups")
    print(f"reference /ui/login (no catalog query): median {ref_median:.1f} ms")
    print(f"{'page':42} {'median':>9} {'p95':>9} {'× login':>8} {'search_catalog':>15}")
    for label, url, query in pages:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        median, p95 = _timed(lambda: client.get(url), args.repeat)
        lib = ""
        if query is not None:
            kind = "lora" if "kind=lora" in url else None
            lib_median, _ = _timed(lambda: search_catalog(catalog, query, kind=kind, limit=24,
                                                          sort="name" if kind else "relevance"), args.repeat)
            lib = f"{lib_median:.1f} ms"
        print(f"{label:42} {median:7.1f} ms {p95:7.1f} ms {median / ref_median:7.1f}x {lib:>15}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
