"""Screenshots of the web app's pages from the demo catalog, for README.md and docs/WEB.md.

Run by hand from the repository root (needs the distribution's Chromium and chromedriver, as the
browser tests do: ``make browser``):

    .venv/bin/python docs/screenshots.py                    # a fresh `loradex demo` home in a temp dir
    .venv/bin/python docs/screenshots.py --home /tmp/demo   # reuse a demo home (made there if empty)

It runs ``loradex demo --home HOME`` (synthetic, trained, merged and rendered adapters, prompt
records, aliases), then ``loradex eval`` on both watercolor versions with one small prompt suite
(the demo makes no evaluation cards, and compare needs two versions rendered on the same prompts
and seeds; on 2 CPU cores about a minute each). It serves HOME with the web app on 127.0.0.1 (the
same ``build_server_app`` as ``loradex serve``/``loradex ui``), signs in with a throwaway admin
token through the sign-in form, moves watercolor's ``production`` alias to 1.1.0 with the version
page's form (before the audit page's shot, so the log shows a write), and saves one PNG per page
under docs/img/ (1280 px wide, the page's full height up to ``--max-height``), each squeezed under
~300 KB.
"""

from __future__ import annotations

import argparse
import io
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: ServedApp (uvicorn in a thread), start_chromium

WIDTH = 1280
MAX_BYTES = 300_000
# (file name, path, signed in?) — names of the demo catalog (cli/demo_cmd.py)
PAGES = (
    ("login", "/ui/login", False),
    ("catalog", "/", True),
    ("adapter", "/ui/adapters/watercolor", True),
    ("version", "/ui/versions/watercolor/1.0.0", True),
    ("compare", "/ui/compare/watercolor?v=1.0.0&v=1.1.0", True),
    ("review", "/ui/review/watercolor/1.1.0", True),
    ("audit", "/ui/audit", True),
)


SUITE = ("a lighthouse at dusk, wtrclr", "a harbour with fishing boats, wtrclr")
EVALUATED = ("watercolor@1.0.0", "watercolor@1.1.0")


def loradex(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "loradex.cli.main", *args], check=True, stdout=subprocess.DEVNULL)


def make_demo(home: Path) -> None:
    """The demo catalog plus evaluation cards, unless HOME already has them."""
    from loradex.registry.catalog import records as R
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.errors import NotFound

    if not any(home.glob("*.db")):
        loradex("demo", "--home", str(home))
    suite = home / "demo-files" / "screenshot-suite.txt"
    suite.write_text("\n".join(SUITE) + "\n")
    for ref in EVALUATED:
        try:
            R.latest_card(Catalog(home), ref)
        except NotFound:
            loradex("eval", ref, "--prompts", str(suite), "--seeds", "2", "--steps", "4", "--size", "64x64",
                    "--embedder", "tiny-clip", "--base", "tiny-sd1", "--home", str(home))


def full_page(driver, max_height: int) -> bytes:
    """The whole page (lazy images forced to load first) as PNG bytes, WIDTH wide."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete) && document.readyState === 'complete'"))
    height = min(max_height, driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        return driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def squeeze(png: bytes) -> bytes:
    """Optimised PNG; a 256-colour palette when that is what keeps it under MAX_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (None, 256, 128, 64, 32):
        out = io.BytesIO()
        (image if colours is None else image.quantize(colours, dither=Image.Dither.NONE)).save(
            out, "PNG", optimize=True)
        if out.tell() <= MAX_BYTES:
            break
    return out.getvalue()


def sign_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "login-button").click()
    WebDriverWait(driver, 20).until(EC.staleness_of(page))
    if not driver.find_elements(By.ID, "logout-form"):
        raise SystemExit("sign-in failed: " + driver.find_element(By.TAG_NAME, "main").text[:200])


def promote_on_the_web(driver, url: str) -> None:
    """One write through the pages (so the audit log shows more than sign-ins): move watercolor's
    production alias to 1.1.0 with the version page's form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/ui/versions/watercolor/1.1.0")
    form = driver.find_element(By.ID, "promote-production")
    form.find_element(By.NAME, "reason").send_keys("reviewed on the web: 1.1.0 keeps the prompt")
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "promote-button-production").click()
    WebDriverWait(driver, 20).until(EC.staleness_of(page))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="demo home (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--max-height", type=int, default=2400)
    args = parser.parse_args(argv)

    from _browser import browser_missing, start_chromium
    from _served_app import ServedApp

    from loradex.registry.catalog.store import Catalog
    from loradex.registry.server.app import build_server_app

    missing = browser_missing()
    if missing:
        raise SystemExit(f"cannot take screenshots: {missing}")
    with tempfile.TemporaryDirectory(prefix="loradex-shots-") as scratch:
        home = args.home or Path(scratch) / "home"
        home.mkdir(parents=True, exist_ok=True)
        make_demo(home)
        admin = "ldx_" + secrets.token_urlsafe(24)
        args.out.mkdir(parents=True, exist_ok=True)
        from loradex.registry.paths import current_user

        # as `loradex ui` does: the admin is the local user (the name on the pages and in the audit log)
        app = build_server_app(Catalog(home), admin, rate_limit=None, admin_name=current_user())
        with ServedApp(app) as served:
            driver = start_chromium(WIDTH, 900)
            try:
                signed_in = False
                for name, path, wants_session in sorted(PAGES, key=lambda p: p[2]):
                    if wants_session and not signed_in:
                        sign_in(driver, served.url, admin)
                        signed_in = True
                    if name == "audit":
                        promote_on_the_web(driver, served.url)
                    driver.get(served.url + path)
                    png = squeeze(full_page(driver, args.max_height))
                    target = args.out / f"{name}.png"
                    target.write_bytes(png)
                    print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
                          f"{len(png) // 1024} KB  ({path})")
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
