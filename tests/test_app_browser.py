"""The app in a real browser: Playwright (sync API) driving Debian's headless Chromium, in a laptop's window.

A 1280 x 720 window, as a user with a laptop has it. The tests check what that user notices: the trial
"The EEG" shows is always the trial reconstructed (after uploading and going back to the examples, after
changing the simulated class, when an example ends loading after Upload was chosen), a recording with events shows nothing until its event is chosen and then
the chosen occurrence (with its coverage and expected accuracy), a failed request leaves no stale result, a seed typed during a run stays,
ticking the ablation runs it, and the page reads in its numbering order with the Reconstruct button
on the first screen. Screenshots go to a temporary folder (``scripts/screenshots.py`` updates
``docs/screenshots/``; a test run never writes tracked files).
"""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from app_server import ROOT, app_server, write_recording  # noqa: F401 (the shared server fixture)
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1280, "height": 720}  # a laptop's browser window
ERROR_TOAST = '[data-testid="toast-body"].error'
TIMEOUT_MS = 90_000


def open_app(playwright, url: str):
    """(browser, page): the app at ``url`` in a 1280 x 720 window, its first trial loaded."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport=WINDOW)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="domcontentloaded")
    wait_for_trial(page)
    return browser, page


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright, app_server):  # noqa: F811
    """A fresh page (a new session) per test: each test starts from the page as a user first sees it."""
    browser, page = open_app(playwright, app_server.url)
    yield page
    browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


# ---------------------------------------------------------------------------------------------- helpers
def wait_for_trial(page, name_part: str = "") -> str:
    """Wait until "The EEG" shows a trial (whose name contains ``name_part``); return its name."""
    page.wait_for_function("(part) => { const t = document.querySelector('#trial-facts'); "
                           "return t && t.innerText.includes('as read') && "
                           "t.querySelector('strong')?.innerText.includes(part); }", arg=name_part)
    return shown_trial(page)


def shown_trial(page) -> str:
    """The name of the trial "The EEG" shows (the first bold text of the trial facts)."""
    return page.locator("#trial-facts strong").first.inner_text().strip()


def set_steps(page, steps: int) -> None:
    """Open the settings and set the denoising steps (the slider's number box)."""
    box = page.locator("input[aria-label='number input for Denoising steps']")
    if not box.is_visible():
        page.locator("#settings").get_by_text("Settings:").first.click()
    box.fill(str(steps))
    box.press("Enter")


def reconstruct(page) -> str:
    """Press Reconstruct, wait for the results; return the name of the trial the results say they are of."""
    page.click("#reconstruct-btn")
    page.wait_for_function("() => document.querySelector('#caption textarea')?.value.startsWith('an image of') "
                           "&& document.querySelector('#result-title')?.innerText.includes('Reconstructed from')")
    return page.locator("#result-title strong").first.inner_text().strip()


def image_pixels(page, elem_id: str) -> np.ndarray:
    """The pixels of the image ``#elem_id`` shows, fetched from its ``src`` (not a screenshot of the letterbox)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible")
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())
    src = img.get_attribute("src")
    body = page.request.get(page.evaluate("(s) => new URL(s, document.baseURI).href", src)).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float64)


def assert_image_not_blank(page, elem_id: str) -> None:
    assert image_pixels(page, elem_id).std() > 2.0, f"#{elem_id} shows a (nearly) uniform image"


def shows_an_image(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id} img").count() > 0


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def gone_within(page, selector: str, message: str, timeout_ms: int = 15_000) -> None:
    """``selector`` leaves the page within ``timeout_ms`` (results are emptied just after a trial loads)."""
    try:
        page.locator(selector).first.wait_for(state="detached", timeout=timeout_ms)
    except Exception as err:  # playwright's TimeoutError
        raise AssertionError(message) from err


def no_error_toast(page) -> None:
    assert page.locator(ERROR_TOAST).count() == 0, page.locator(ERROR_TOAST).first.inner_text()


def pick_event(page, name: str) -> None:
    """Choose the uploaded recording's event whose option starts with ``name`` (options read "name (3×)")."""
    page.locator("#event input").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)}")).first.click()


def pick_simulated_class(page, name: str) -> None:
    dropdown = page.locator("#sim-class input")
    dropdown.click()
    dropdown.fill(name)
    page.get_by_role("option", name=name, exact=True).click()


# ---------------------------------------------------------------------------------------------- tests
def test_pick_example_and_reconstruct(page, shots):
    # The first example is loaded with the page: its facts and EEG plots appear.
    assert shown_trial(page).startswith("example ")
    assert_image_not_blank(page, "butterfly")
    assert_image_not_blank(page, "topomap")

    # Pick another example from the gallery: the dropdown and the trial facts follow.
    thumbs = page.locator("#example-gallery button.thumbnail-item")
    assert thumbs.count() >= 2, "the example gallery should list the example trials"
    first = page.locator("#example-name input").input_value()
    thumbs.nth(1).click()
    page.wait_for_function("(first) => { const v = document.querySelector('#example-name input')?.value; "
                           "const t = document.querySelector('#trial-facts strong')?.innerText; "
                           "return v && v !== first && t && t.includes(v); }", arg=first)
    shown = shown_trial(page)

    set_steps(page, 10)  # faster on CI; the slider drives the API's num_inference_steps
    t0 = time.perf_counter()
    assert reconstruct(page) == shown, "the results are of another trial than the one shown"
    for elem in ("reconstruction", "saliency", "start-image", "stimulus"):
        assert_image_not_blank(page, elem)
    # The generator's map and the map the diffusion starts from (its template drawn in), side by side, each
    # under its own visible label, in the order of the data flow.
    from demo.views import SALIENCY_LABEL, START_LABEL

    for elem, label in (("saliency", SALIENCY_LABEL), ("start-image", START_LABEL)):
        block_label = page.locator(f"#{elem} [data-testid='block-label']")
        assert block_label.is_visible() and block_label.inner_text().strip() == label, f"#{elem} is not {label!r}"
    assert box(page, "#saliency")["x"] < box(page, "#start-image")["x"] < box(page, "#reconstruction")["x"]
    for elem in ("stimulus", "saliency", "start-image", "reconstruction"):  # every label whole, within its panel
        label, panel = box(page, f"#{elem} [data-testid='block-label']"), box(page, f"#{elem}")
        assert label["x"] + label["width"] <= panel["x"] + panel["width"] + 1, f"#{elem}'s label is cut"
    assert "start image" in page.locator("#stages-note").inner_text()
    print(f"\n[app] reconstruction through the UI: {time.perf_counter() - t0:.2f} s (click to images shown)")
    assert page.locator("#class-probs").inner_text().strip()
    assert "Seed 0" in page.locator("#notes").inner_text()
    assert page.locator("#seed-used input").input_value() == "0"
    no_error_toast(page)
    page.screenshot(path=str(shots / "app.png"))


def test_upload_then_back_to_examples_reconstructs_the_example(page, app_server, tmp_path):  # noqa: F811
    """Upload a file, go back to Examples, press Reconstruct: the panel and the results are of the example."""
    example = shown_trial(page)
    trial = tmp_path / "my_trial.npz"
    shutil.copy(sorted(app_server.examples.rglob("*.npz"))[0], trial)

    page.get_by_role("tab", name="Upload").click()
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial uploaded')")
    page.locator("#upload input[type=file]").set_input_files(str(trial))
    assert wait_for_trial(page, "my_trial.npz") == "upload my_trial.npz"

    page.get_by_role("tab", name="Examples").click()
    assert wait_for_trial(page, "example") == example
    assert reconstruct(page) == example
    no_error_toast(page)

    # And the other way round: back on Upload, the panel shows the upload and Reconstruct uses it.
    page.get_by_role("tab", name="Upload").click()
    wait_for_trial(page, "my_trial.npz")
    gone_within(page, "#reconstruction img", "the example's result stayed beside the upload's EEG")
    assert reconstruct(page) == "upload my_trial.npz"


def test_noise_is_shown_as_a_guess_under_a_banner(page, app_server, tmp_path, shots):  # noqa: F811
    """Upload white noise at EEG amplitude: the results carry the out-of-distribution banner and the picture is
    labelled a guess; back on an example, the banner and the label are gone and the confidence is shown."""
    from demo.views import GUESS_LABEL, RECONSTRUCTION_LABEL
    from neuroimagen.data import EEGTrial, write_trial
    from neuroimagen.data.montage import SFREQ, model_ch_names

    if not (app_server.checkpoint / "decoding_check").is_dir():
        pytest.skip("this checkpoint has no decoding check")
    names = list(model_ch_names())
    path = write_trial(EEGTrial(10e-6 * np.random.default_rng(0).standard_normal((len(names), 500)), SFREQ, names),
                       tmp_path / "white_noise.npz")
    page.get_by_role("tab", name="Upload").click()
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial uploaded')")
    page.locator("#upload input[type=file]").set_input_files(str(path))
    wait_for_trial(page, "white_noise.npz")
    set_steps(page, 5)
    assert reconstruct(page) == "upload white_noise.npz"
    title = page.locator("#result-title").inner_text()
    assert "has not seen EEG like this" in title and "not a reconstruction" in title, title
    page.locator("#reconstruction").get_by_text(GUESS_LABEL).first.wait_for(state="visible", timeout=15_000)
    page.screenshot(path=str(shots / "out_of_distribution.png"))

    page.get_by_role("tab", name="Examples").click()
    wait_for_trial(page, "example")
    reconstruct(page)
    title = page.locator("#result-title").inner_text()
    assert "has not seen EEG like this" not in title and "confidence" in title, title
    page.locator("#reconstruction").get_by_text(RECONSTRUCTION_LABEL, exact=True).first.wait_for(state="visible",
                                                                                                timeout=15_000)
    assert page.locator("#reconstruction").get_by_text(GUESS_LABEL).count() == 0


def test_an_example_that_loads_after_upload_was_chosen_is_not_shown(playwright, app_server):  # noqa: F811
    """The page's first example loads are held back (as on a busy server) while the user chooses Upload: when
    they end, "The EEG" still says no trial is uploaded, and Reconstruct says so too (it does not run the
    example). Loads run two at a time and end in any order; only the selected tab's trial is shown."""
    import json
    import urllib.request

    deps = json.load(urllib.request.urlopen(app_server.url + "config"))["dependencies"]
    example_loads = {i for i, d in enumerate(deps) if d.get("api_name") in ("show_example", "show_default_example")}
    after_example_loads = {i for i, d in enumerate(deps)  # each load's .then(clear_stale)
                           if d.get("trigger_after") in example_loads and not d.get("trigger_only_on_failure")}
    held, ended = [], []

    def fn_index(request) -> int | None:
        try:
            return (request.post_data_json or {}).get("fn_index")
        except (ValueError, TypeError):
            return None

    def hold_example_loads(route):
        (held.append if fn_index(route.request) in example_loads else lambda r: r.continue_())(route)

    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        page = browser.new_page(viewport=WINDOW)
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda r: ended.append(fn_index(r)) if fn_index(r) in after_example_loads else None)
        page.route("**/queue/join*", hold_example_loads)
        page.goto(app_server.url, wait_until="domcontentloaded")
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline:  # the page asks for its example
            page.wait_for_timeout(100)
        assert held, "the page never asked for its first example"
        page.get_by_role("tab", name="Upload").click()
        page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial "
                               "uploaded')")
        assert not ended
        for route in held:  # the example loads reach the server now, after Upload was chosen
            route.continue_()
        while len(ended) < len(held) and time.monotonic() < deadline + 60:  # ... and have ended
            page.wait_for_timeout(100)
        assert len(ended) == len(held), f"{len(held) - len(ended)} of the held example loads never ended"
        page.wait_for_timeout(500)  # their outputs, had they any, are on the page by now
        facts = page.locator("#trial-facts").inner_text()
        assert "No trial uploaded" in facts, f"a late example load replaced the Upload tab's panel: {facts[:200]}"
        assert not shows_an_image(page, "butterfly")
        page.click("#reconstruct-btn")
        toast = page.locator(ERROR_TOAST).first
        toast.wait_for(state="visible", timeout=30_000)
        assert "No file uploaded" in toast.inner_text()
    finally:
        browser.close()


def test_an_unreadable_upload_leaves_no_other_trial_to_reconstruct(page, tmp_path):
    """A file that cannot be read: the panel says so (not the example shown before), and so does Reconstruct."""
    bad = tmp_path / "broken.edf"
    bad.write_bytes(b"0       " + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)))
    page.get_by_role("tab", name="Upload").click()
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial uploaded')")
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.locator(ERROR_TOAST).first.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('could not be read')")
    assert not shows_an_image(page, "butterfly")
    page.click("#reconstruct-btn")
    page.wait_for_function("() => document.querySelector('#result-title')?.innerText.includes('failed')")
    assert not shows_an_image(page, "reconstruction")


def test_a_32_channel_recording_is_cut_at_the_event_chosen(page, app_server, tmp_path, shots):  # noqa: F811
    """Upload a continuous 32-channel recording with events: the panel lists them and shows no trial until an
    event is chosen; then the chosen occurrence is shown with its coverage and expected accuracy, and it is what
    Reconstruct uses; the average of all occurrences likewise."""
    from types import SimpleNamespace

    from demo.settings import CAP_METRICS
    from demo.views import expected_accuracy_text
    from neuroimagen.data.caps import TEN_TWENTY_32

    path = tmp_path / "my_recording_raw.fif"
    write_recording(path, sorted(app_server.examples.rglob("*.npz"))[0], TEN_TWENTY_32, n_events=3)
    page.get_by_role("tab", name="Upload").click()
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial uploaded')")
    assert not page.locator("#event").is_visible()  # no recording, no events
    page.locator("#upload input[type=file]").set_input_files(str(path))

    # Nothing chosen for the user: the events are listed, and no trial is shown.
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('choose an event')")
    table = page.locator("#trial-facts table").inner_text()
    assert re.search(r"stimulus\s+3", table) and re.search(r"response\s+3", table), table
    assert not shows_an_image(page, "butterfly")
    assert page.locator("#event input").input_value() == ""

    pick_event(page, "stimulus")
    assert wait_for_trial(page, "'stimulus' 1") == "upload my_recording_raw.fif, 'stimulus' 1"
    facts = page.locator("#trial-facts").inner_text()
    assert "32 of 128 model channels recorded, 96 interpolated from 32 channels (10-05 names)" in facts
    expected = expected_accuracy_text(SimpleNamespace(info={"channels": {"n_used": 32}}), ROOT / CAP_METRICS.relative_to(ROOT))
    assert expected.replace("**", "") in facts, facts  # "about N % top-1 ..." or "not measured"
    assert "onset" not in facts or "occurrence 1 of 3" in facts
    assert_image_not_blank(page, "butterfly")

    # Another occurrence, typed in the slider's box (taken when the box is left): the panel follows, and
    # Reconstruct uses it.
    box = page.locator("input[aria-label='number input for Occurrence']")
    assert box.get_attribute("max") == "3"
    box.fill("2")
    box.press("Tab")
    wait_for_trial(page, "'stimulus' 2")
    set_steps(page, 10)
    assert reconstruct(page) == "upload my_recording_raw.fif, 'stimulus' 2"
    no_error_toast(page)
    page.screenshot(path=str(shots / "recording.png"))

    page.locator("#average input").check()
    assert wait_for_trial(page, "average") == "upload my_recording_raw.fif, average of 3 'stimulus'"
    gone_within(page, "#reconstruction img", "the single occurrence's result stayed beside the average")
    assert reconstruct(page) == "upload my_recording_raw.fif, average of 3 'stimulus'"


def test_simulated_class_change_is_what_is_reconstructed(page):
    """Change the simulated class without any other click: the panel shows it, and it is what is reconstructed."""
    page.get_by_role("tab", name="Simulate").click()
    before = wait_for_trial(page, "simulated")
    assert "airliner" not in before
    pick_simulated_class(page, "airliner")
    shown = wait_for_trial(page, "simulated airliner")
    assert reconstruct(page) == shown
    assert "true class: airliner" in page.locator("#result-title").inner_text()
    no_error_toast(page)


def test_a_failed_request_leaves_no_stale_result(page):
    set_steps(page, 10)
    reconstruct(page)
    assert shows_an_image(page, "reconstruction")

    # Too few steps for the strength: refused, saying how many are needed, and the old image is gone.
    set_steps(page, 1)
    page.click("#reconstruct-btn")
    toast = page.locator(ERROR_TOAST).first
    toast.wait_for(state="visible", timeout=30_000)
    assert "at least 2" in toast.inner_text()
    page.wait_for_function("() => document.querySelector('#result-title')?.innerText.includes('failed')")
    assert not any(shows_an_image(page, elem) for elem in ("reconstruction", "saliency", "start-image"))
    assert page.locator("#caption textarea").input_value() == ""


def test_reconstructing_an_empty_upload_is_a_toast(page):
    page.get_by_role("tab", name="Upload").click()
    page.wait_for_function("() => document.querySelector('#trial-facts')?.innerText.includes('No trial uploaded')")
    page.click("#reconstruct-btn")
    toast = page.locator(ERROR_TOAST).first
    toast.wait_for(state="visible", timeout=30_000)
    assert "No file uploaded" in toast.inner_text()


def test_a_seed_typed_during_a_run_stays(page):
    set_steps(page, 50)  # a longer run, to type during it
    page.locator("#seed input").fill("7")
    page.click("#reconstruct-btn")
    page.wait_for_function("() => document.querySelector('#result-title')?.innerText.includes('Reconstructing')")
    page.locator("#seed input").fill("42")
    page.wait_for_function("() => document.querySelector('#result-title')?.innerText.includes('Reconstructed from')")
    assert page.locator("#seed input").input_value() == "42", "the run's end overwrote the seed typed meanwhile"
    assert page.locator("#seed-used input").input_value() == "7"


def test_ticking_the_ablation_runs_it(page):
    set_steps(page, 10)
    page.locator("#ablation-box input").check()
    page.wait_for_function("() => document.querySelectorAll('#ablation img').length === 3")
    captions = page.locator("#ablation .caption-label").all_inner_texts()
    assert captions == ["saliency map only", "caption only", "saliency map + caption"]
    assert page.locator("#result-title strong").first.inner_text().strip() == shown_trial(page)
    page.locator("#ablation-box input").uncheck()
    page.locator("#ablation").wait_for(state="hidden")


def test_the_page_on_a_laptop(page, app_server, shots):  # noqa: F811
    """1280 x 720: the main action on the first screen, sections in reading order, nothing covered or cut."""
    button = box(page, "#reconstruct-btn")
    assert button["y"] + button["height"] <= WINDOW["height"], f"Reconstruct is {button['y']:.0f} px down"

    # Sections 1 | 2 | 3 over 4: left to right, then down the last column.
    heads = [page.locator("h3").filter(has_text=re.compile(rf"^{n}\. ")).first.bounding_box() for n in (1, 2, 3, 4)]
    assert heads[0]["x"] < heads[1]["x"] < heads[2]["x"], "sections 1, 2, 3 should read left to right"
    assert abs(heads[3]["x"] - heads[2]["x"]) < 5 and heads[3]["y"] > heads[2]["y"], "section 4 should follow 3"

    # Gallery: every caption under its picture, and the first row whole (not under a label, not cut).
    gallery = box(page, "#example-gallery")
    items = page.locator("#example-gallery button.thumbnail-item")
    for k in range(items.count()):
        img, caption = items.nth(k).locator("img").bounding_box(), items.nth(k).locator(".caption-label")
        cap = caption.bounding_box()
        assert cap["y"] >= img["y"] + img["height"] - 1, f"caption {k} covers its picture"
        assert img["y"] >= gallery["y"] - 1, f"picture {k} is cut at the top"
    labels = page.locator("#example-gallery [data-testid='block-label']")
    assert labels.count() == 0 or not labels.first.is_visible()

    # Caption tables: headers and numbers on one line each (no "simil / arity", no "0.96 / 2").
    set_steps(page, 10)
    reconstruct(page)
    one_line = ("(el) => { const r = document.createRange(); r.selectNodeContents(el); "
                "return new Set([...r.getClientRects()].map(q => Math.round(q.top))).size <= 1; }")
    cells = page.locator("#top-captions th, #top-captions td:last-child, #trial-facts th, #trial-facts td")
    assert cells.count() >= 10
    for k in range(cells.count()):
        assert cells.nth(k).evaluate(one_line), f"{cells.nth(k).inner_text()!r} breaks over lines"

    # Plain words, and the model card's metadata as a table, not a heading.
    text = page.locator("body").inner_text()
    assert "{synset}" not in text and "Stimulus number" not in text
    has_card = (app_server.checkpoint / "README.md").is_file()  # the shipped checkpoint has one
    assert page.locator("#model-card").count() == int(has_card)
    if has_card:
        page.locator("#model-card").get_by_text("Model card").first.click()
        page.locator("#model-card-metadata table").wait_for(state="visible")
        headings = page.locator("#model-card h1, #model-card h2").all_inner_texts()
        assert not [h for h in headings if "license" in h], headings

    # Upload: one line per format, each naming the files it puts in the upload box.
    page.get_by_role("tab", name="Upload").click()
    from demo.examples import upload_examples

    formats = page.locator("#format-examples button")
    assert formats.count() == len(upload_examples(app_server.examples))  # the shipped examples: one per format
    if formats.count():
        lines = formats.all_inner_texts()
        assert len(lines) == len(set(lines)) >= 2
        vhdr = [t for t in lines if ".vhdr" in t]
        assert all(t.count(":") == 1 for t in lines), lines
        assert not vhdr or ".eeg" in vhdr[0] and ".fif" not in vhdr[0], vhdr
    page.screenshot(path=str(shots / "upload.png"))
