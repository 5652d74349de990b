"""The web page in headless Chromium: prompt, live progress to 100 %, the video plays, the gallery lists it.

Needs Debian's chromium and the playwright package (scripts/install-browser.sh). A screenshot goes to
$KINEMA_ARTIFACTS (default: the test's temp folder); with KINEMA_UPDATE_DOCS=1 also to docs/web.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_server import ServerThread, wait

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000
BAR_IS_FULL = """() => { const fill = document.getElementById('progress-fill');
  return fill.getBoundingClientRect().width >= fill.parentElement.getBoundingClientRect().width - 1; }"""
# Records every percentage the progress bar shows, to check it climbs to 100.
WATCH_PROGRESS = """() => {
  window.seenPercents = [];
  const label = document.getElementById('progress-percent');
  new MutationObserver(() => window.seenPercents.push(parseInt(label.textContent)))
    .observe(label, {childList: true, characterData: true, subtree: true});
}"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run "
                                "scripts/install-browser.sh")
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run "
                                 "scripts/install-browser.sh")


def generate_from_page(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#generate")
    page.wait_for_function("!document.getElementById('generate').disabled", timeout=TIMEOUT_MS)


def save_screenshot(page, tmp_path: Path) -> None:
    folder = Path(os.environ.get("KINEMA_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "web.png"))
    if os.environ.get("KINEMA_UPDATE_DOCS") == "1":
        shutil.copyfile(folder / "web.png", Path(__file__).parents[1] / "docs" / "web.png")


def test_page_generates_plays_lists_extends_and_deletes(tmp_path):
    with ServerThread(tmp_path / "data", api_keys=(), concurrency=1) as server, \
            playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(f"{server.url}/")
        page.select_option("#size", "64x64")
        page.select_option("#seconds", "1")
        page.click(".advanced summary")
        page.fill("#steps", "2")
        page.select_option("#sampler", "heun")
        page.fill("#cache", "0.2")
        page.fill("#noise-correlation", "0.3")

        page.evaluate(WATCH_PROGRESS)
        generate_from_page(page, "a small red circle moves to the right over a dark blue gradient")
        assert page.text_content("#form-error") == ""
        seen = page.evaluate("window.seenPercents")
        assert seen[-1] == 100 and seen == sorted(seen), seen
        client = server.client()
        first = client.videos.list(limit=1).data[0]
        assert first.status == "completed"
        params = server.app.state.service.store.get(first.id).params
        assert (params["steps"], params["sampler"], params["cache"]) == (2, "heun", 0.2)
        assert params["noise_correlation"] == 0.3
        page.wait_for_function("() => { const v = document.getElementById('player');"
                               " return v.readyState >= 2 && v.duration > 0 && v.currentTime > 0; }",
                               timeout=TIMEOUT_MS)
        assert page.get_attribute("#player", "src") == f"/v1/videos/{first.id}/content?variant=video"
        tile = f"#gallery .tile[data-id='{first.id}']"
        page.wait_for_selector(f"{tile} img[src*='thumbnail']", timeout=TIMEOUT_MS)
        page.wait_for_function(BAR_IS_FULL, timeout=TIMEOUT_MS)
        save_screenshot(page, tmp_path)

        page.click(f"{tile} button:has-text('Extend')")  # extend mode, this video chosen
        assert page.input_value("#extend-source") == first.id
        generate_from_page(page, "the circle keeps going")
        extension = client.videos.list(limit=1).data[0]
        assert extension.id != first.id
        assert wait(client, extension.id).status == "completed"

        page.click(f"{tile} button:has-text('Delete')")
        page.wait_for_selector(tile, state="detached", timeout=TIMEOUT_MS)
        browser.close()
    assert page_errors == []
