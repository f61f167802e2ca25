"""The app in a real browser: Playwright (sync API) driving Debian's headless Chromium.

Opens the app, picks an example from the gallery, clicks Reconstruct, waits for the saliency map,
caption and reconstruction, checks that the images are not blank and that no error toast appeared,
then saves ``docs/screenshots/app.png``. A deliberate bad request checks that errors do show as toasts.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from app_server import ROOT, app_server  # noqa: F401 (the shared server fixture)
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "screenshots" / "app.png"
ERROR_TOAST = '[data-testid="toast-body"].error'
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def page(app_server):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_server.url, wait_until="domcontentloaded")
        yield page
        browser.close()


def _assert_image_not_blank(page, elem_id: str) -> None:
    """The image the page shows in ``#elem_id`` is loaded and not (nearly) uniform: its own pixels, fetched
    from its ``src`` (a screenshot would include the letterbox around the picture)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible")
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())
    src = img.get_attribute("src")
    body = page.request.get(page.evaluate("(s) => new URL(s, document.baseURI).href", src)).body()
    px = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float64)
    assert px.std() > 2.0, f"#{elem_id} shows a (nearly) uniform image"


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def test_pick_example_reconstruct_and_screenshot(page, app_server):  # noqa: F811
    # The first example is loaded with the page: its facts and EEG plots appear.
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('as read')")
    _assert_image_not_blank(page, "butterfly")
    _assert_image_not_blank(page, "topomap")

    # Pick another example from the gallery: the dropdown and the trial facts follow.
    thumbs = page.locator("#example-gallery button.thumbnail-item")
    assert thumbs.count() >= 2, "the example gallery should list the example trials"
    first = page.locator("#example-name input").input_value()
    thumbs.nth(1).click()
    page.wait_for_function("(first) => { const v = document.querySelector('#example-name input')?.value; "
                           "const t = document.querySelector('#trial-facts')?.innerText; "
                           "return v && v !== first && t && t.includes(v) && t.includes('as read'); }", arg=first)

    # Reconstruct with 10 steps (faster on CI; the slider drives the API's num_inference_steps).
    steps = page.locator("input[aria-label='number input for Denoising steps']")
    if steps.count():
        steps.fill("10")
        steps.press("Enter")
    t0 = time.perf_counter()
    page.click("#reconstruct-btn")
    page.wait_for_function("() => document.querySelector('#caption textarea')?.value.startsWith('an image of')")
    for elem in ("reconstruction", "saliency", "stimulus"):
        _assert_image_not_blank(page, elem)
    elapsed = time.perf_counter() - t0
    print(f"\n[app] reconstruction through the UI: {elapsed:.2f} s (click to images shown)")
    assert page.locator("#class-probs").inner_text().strip()
    assert "Seed" in _text(page, "#notes")
    assert page.locator(ERROR_TOAST).count() == 0, _text(page, ERROR_TOAST)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_errors_show_as_toasts(page):
    # Reconstructing from an empty upload is a user error: it must surface as a readable toast.
    page.get_by_role("tab", name="Upload").click()
    page.locator("#source").get_by_text("upload", exact=True).click()
    page.click("#reconstruct-btn")
    toast = page.locator(ERROR_TOAST).first
    toast.wait_for(state="visible", timeout=30_000)
    assert "No file uploaded" in toast.inner_text()
