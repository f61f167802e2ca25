"""Update ``docs/screenshots/``: the app in a 1280 x 720 window (a laptop's), driven by headless Chromium.

    python scripts/screenshots.py [--out docs/screenshots] [--url http://127.0.0.1:7860/]

Without ``--url`` it starts ``python app.py`` on a free loopback port (``tests/app_server.py``: the embedded
checkpoint and ``examples/``) and stops it afterwards. Writes:

- ``app.png``: the first screen after picking an example and pressing Reconstruct (what a laptop shows);
- ``app-full.png``: the whole page of that trial with the ablation ticked, 1280 px wide;
- ``app-upload.png``: the first screen of the Upload tab with the BrainVision example files uploaded (a
  32-channel 10-20 recording), its first stimulus chosen and reconstructed;
- ``app-simulate.png``: the first screen of the Simulate tab, a simulated airliner reconstructed.

The browser test (``tests/test_app_browser.py``) uses the same steps and writes to a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app_server import start_app  # noqa: E402
from test_app_browser import (  # noqa: E402
    open_app,
    pick_event,
    pick_simulated_class,
    reconstruct,
    set_steps,
    wait_for_trial,
)


def settle(page, seconds: float = 1.0) -> None:
    """Let images finish loading and transitions end before a screenshot; no hover or focus styles."""
    page.wait_for_function("() => [...document.images].every(i => i.complete || i.loading === 'lazy')")
    page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    page.mouse.move(0, 0)
    time.sleep(seconds)


def take(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser, page = open_app(p, url)
        try:
            page.locator("#example-gallery button.thumbnail-item").nth(1).click()
            wait_for_trial(page, "example")
            reconstruct(page)
            settle(page)
            page.screenshot(path=str(out / "app.png"))
            written.append(out / "app.png")

            set_steps(page, 25)  # opens the settings, as a user tuning the run would
            page.locator("#ablation-box input").check()
            page.wait_for_function("() => document.querySelectorAll('#ablation img').length === 3 && "
                                   "document.querySelector('#result-title')?.innerText.includes('Reconstructed')")
            settle(page)
            page.screenshot(path=str(out / "app-full.png"), full_page=True)
            written.append(out / "app-full.png")
            page.locator("#ablation-box input").uncheck()
            page.locator("#settings").get_by_text("Settings:").first.click()  # closed again, as it starts

            page.get_by_role("tab", name="Upload").click()
            formats = page.locator("#format-examples button")
            if formats.count():
                formats.filter(has_text="BrainVision").first.click()
                page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText"
                                       ".includes('choose an event')")
                pick_event(page, "Stimulus")
                wait_for_trial(page, "upload")
                reconstruct(page)
                settle(page)
                page.screenshot(path=str(out / "app-upload.png"))
                written.append(out / "app-upload.png")

            page.get_by_role("tab", name="Simulate").click()
            wait_for_trial(page, "simulated")
            pick_simulated_class(page, "airliner")
            wait_for_trial(page, "simulated airliner")
            reconstruct(page)
            settle(page)
            page.screenshot(path=str(out / "app-simulate.png"))
            written.append(out / "app-simulate.png")
        finally:
            browser.close()
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder (default: %(default)s)")
    p.add_argument("--url", default=None, help="a running app (default: start one on a free loopback port)")
    args = p.parse_args()
    server = None if args.url else start_app()
    try:
        for path in take(args.url or server.url, args.out):
            print(path)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
