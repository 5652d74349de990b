"""The web page in headless Chromium: prompt, live progress to 100 %, the video plays, the gallery lists it.

Needs Debian's chromium and the playwright package (scripts/install-browser.sh). A screenshot goes to
$KINEMA_ARTIFACTS (default: the test's temp folder). docs/web.png, the page with the bundled model, is written by
scripts/web_screenshot.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from kinema import request_checks as rc
from kinema.io import write_video
from kinema.jobs import EVERYONE, Job, new_id
from test_server import API_KEY, ServerThread, png_bytes, wait

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
# The ids of shown fields whose placeholder is cut short, measured in the placeholder's own font.
CUT_PLACEHOLDERS = """() => { const context = document.createElement('canvas').getContext('2d');
  return [...document.querySelectorAll('#create-form input[placeholder]')].filter((field) => field.offsetParent)
    .filter((field) => { const box = getComputedStyle(field), text = getComputedStyle(field, '::placeholder');
      context.font = `${text.fontStyle} ${text.fontSize} ${text.fontFamily}`;
      const room = field.clientWidth - parseFloat(box.paddingLeft) - parseFloat(box.paddingRight);
      return context.measureText(field.placeholder).width > room; }).map((field) => field.id); }"""
# Nothing of a video is left on the stage: no player source, meta, notes, progress or error.
STAGE_IS_EMPTY = """() => !document.getElementById('player').hasAttribute('src')
  && document.getElementById('job-meta').textContent === '' && !document.querySelector('#job-notes li')
  && document.getElementById('progress').hidden && document.getElementById('form-error').textContent === ''"""

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


@contextlib.contextmanager
def open_page(tmp_path: Path, concurrency: int, width: int, height: int, api_keys: tuple[str, ...] = ()):
    """(server, page): a debug-model server's page in headless Chromium, `width` x `height`. The test fails if a
    script on the page threw."""
    page_errors: list[str] = []
    with ServerThread(tmp_path / "data", api_keys=api_keys, concurrency=concurrency) as server, \
            playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(f"{server.url}/")
        yield server, page
        browser.close()
    assert page_errors == []


def test_page_generates_plays_lists_extends_and_deletes(tmp_path):
    with open_page(tmp_path, 1, 1280, 1100) as (server, page):
        page.fill("#size", "64x64")
        page.select_option("#seconds", "1")
        page.click(".advanced summary")
        page.fill("#steps", "2")
        page.select_option("#sampler", "heun")
        page.fill("#cache", "0.2")
        page.fill("#noise-correlation", "0.3")
        page.fill("#noise-drift", "0.1")
        page.select_option("#window-camera", "false")
        page.fill("#guidance", "1")
        page.fill("#negative-prompt", "blurry")

        page.evaluate(WATCH_PROGRESS)
        generate_from_page(page, "a small red circle moves to the right over a dark blue gradient")
        assert page.text_content("#form-error") == ""
        seen = page.evaluate("window.seenPercents")
        assert seen[-1] == 100 and seen == sorted(seen), seen
        client = server.client()
        first = client.videos.list(limit=1).data[0]
        assert first.status == "completed"
        params = server.app.state.service.store.get(first.id, EVERYONE).params
        assert (params["steps"], params["sampler"], params["cache"]) == (2, "heun", 0.2)
        assert params["noise_correlation"] == 0.3 and params["noise_drift"] == 0.1 and params["window_camera"] is False
        page.wait_for_function("() => { const v = document.getElementById('player');"
                               " return v.readyState >= 2 && v.duration > 0 && v.currentTime > 0; }",
                               timeout=TIMEOUT_MS)
        assert page.get_attribute("#player", "src") == f"/v1/videos/{first.id}/content?variant=video"
        assert page.locator("#job-notes li").all_text_contents() == first.to_dict()["notes"]
        assert f"seed {params['seed']} · {first.id}" in page.text_content("#job-meta")  # drawn: none was asked
        assert page.text_content(".origin") == server.url  # the code card's snippet names this server
        assert first.to_dict()["notes"][0].startswith("negative prompt: no effect at guidance 1")
        tile = f"#gallery .tile[data-id='{first.id}']"
        page.wait_for_selector(f"{tile} img[src*='thumbnail']", timeout=TIMEOUT_MS)
        page.wait_for_function(BAR_IS_FULL, timeout=TIMEOUT_MS)
        save_screenshot(page, tmp_path)

        page.fill("#steps", "0")
        page.evaluate("document.querySelector('.advanced').open = false")  # a bad value out of sight is still named
        page.click("#generate")
        assert page.text_content("#steps-error") == f"Steps: a whole number from 1 to {rc.MAX_STEPS}"
        assert page.text_content("#form-error") == "see the Steps field"  # once, beside the field
        assert page.evaluate("document.querySelector('.advanced').open")
        assert client.videos.list(limit=1).data[0].id == first.id  # nothing was sent
        page.fill("#steps", "2")
        prompt = page.input_value("#prompt")
        page.fill("#prompt", "a red ball" * 400 + "é")  # 4001 characters: named, not cut short
        page.click("#generate")
        assert page.text_content("#prompt-error") == "Prompt: 4001 characters; the limit is 4000, so shorten it"
        assert client.videos.list(limit=1).data[0].id == first.id
        page.fill("#prompt", prompt)

        page.click(f"{tile} button:has-text('Extend')")  # extend mode, this video chosen
        assert page.input_value("#extend-source") == first.id
        generate_from_page(page, "the circle keeps going")
        extension = client.videos.list(limit=1).data[0]
        assert extension.id != first.id
        assert wait(client, extension.id).status == "completed"
        page.wait_for_selector(f"#gallery .tile[data-id='{extension.id}'] img", timeout=TIMEOUT_MS)
        # the choices the user had (picked or not) outlive the new video: it is not swapped in unasked
        assert page.input_value("#remix-source") == page.input_value("#blend-from") == first.id
        check_sora_modes(page, server, first.id, extension.id)
        check_provenance(page, client, first.id, tmp_path)
        check_uploads(page, server, tmp_path)

        dialogs: list[str] = []
        page.once("dialog", lambda dialog: dialogs.append(dialog.message) or dialog.accept())
        page.click(f"{tile} button:has-text('Delete')")
        page.wait_for_selector(tile, state="detached", timeout=TIMEOUT_MS)
        assert dialogs and "cannot be undone" in dialogs[0]
        assert page.text_content("#job-meta") == "" or first.id not in page.text_content("#job-meta")


def newest_job(server):
    newest = server.client().videos.list(limit=1).data[0]
    assert wait(server.client(), newest.id).status == "completed"
    return server.app.state.service.store.get(newest.id, EVERYONE)


def check_provenance(page, client, video_id: str, tmp_path: Path) -> None:
    """The page's check card reads a downloaded video's marks through POST /v1/provenance."""
    path = tmp_path / "downloaded.mp4"
    path.write_bytes(client.videos.download_content(video_id).read())
    page.set_input_files("#verify-file", str(path))
    page.click("#verify-form button")
    page.wait_for_selector("#verify-result li:nth-child(3)", timeout=TIMEOUT_MS)
    lines = page.locator("#verify-result li").all_text_contents()
    assert lines[0].startswith("watermark: ") and lines[1].startswith("tags: ai_generated=true, model=debug, seed=")
    assert lines[2] == "C2PA: no manifest"


def check_uploads(page, server, tmp_path: Path) -> None:
    """Extend, edit and blend a clip from this computer, 2 s long where the finished videos last 1 s: the lengths
    say that the upload was used, not the finished video chosen beside it."""
    clip = tmp_path / "mine.mp4"
    write_video(clip, np.zeros((16, 64, 64, 3), np.uint8), fps=8)
    page.click(".modes label:has(input[value='extend'])")
    page.uncheck("#extend-backward")
    page.set_input_files("#extend-file", str(clip))
    generate_from_page(page, "it goes on")
    extension = newest_job(server)
    assert (extension.params["mode"], extension.seconds) == ("extend", "3")  # 2 s and 1 s more

    page.click(".modes label:has(input[value='remix'])")
    page.set_input_files("#remix-file", str(clip))
    page.select_option("#expand", "false")
    generate_from_page(page, "the ball, now green")
    edit = newest_job(server)
    assert (edit.params["mode"], edit.remixed_from, edit.seconds, edit.params["expand"]) == ("edit", None, "2", False)

    page.click(".modes label:has(input[value='blend'])")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    page.set_input_files("#blend-to-file", str(tmp_path / "broken.mp4"))
    generate_from_page(page, "from one to the other")  # the server's refusal is named beside the file it is about
    assert page.text_content("#blend-to-file-error") == ("The clip to end on is not an MP4, MOV, WEBM, MKV, AVI or GIF "
                                                         "video")
    assert page.text_content("#form-error") == "see the clip to end on field"  # not said twice
    assert page.get_attribute("#blend-to-file", "aria-invalid") == "true"
    page.set_input_files("#blend-to-file", str(clip))
    generate_from_page(page, "from one to the other")
    blend = newest_job(server)
    assert (blend.params["mode"], blend.seconds) == ("connect", "4")  # a finished 1 s video, 1 s, the 2 s clip


def check_sora_modes(page, server, first: str, second: str) -> None:
    """Extend backward, remix, blend and storyboard from the page: each is one API call with the right fields."""
    page.check("#extend-backward")
    generate_from_page(page, "and before that")
    assert newest_job(server).params["mode"] == "extend_backward"

    page.click(f"#gallery .tile[data-id='{first}'] button:has-text('Remix')")
    assert page.input_value("#remix-source") == first
    page.fill("#strength", "0.5")
    generate_from_page(page, "the same circle, now green")
    remix = newest_job(server)
    assert (remix.remixed_from, remix.params["mode"], remix.params["strength"]) == (first, "edit", 0.5)

    page.click(".modes label:has(input[value='blend'])")
    assert page.input_value("#blend-from") != page.input_value("#blend-to")  # not a bridge into itself
    page.select_option("#blend-from", first)
    page.select_option("#blend-to", second)
    generate_from_page(page, "from one to the other")
    blend = newest_job(server)
    assert blend.params["mode"] == "connect" and set(blend.params["inputs"]) == {"video", "video_b"}

    page.click(".modes label:has(input[value='storyboard'])")
    assert not page.is_visible("#prompt")  # the storyboard's lines are the prompts
    page.fill("#storyboard", "0: a red circle moves right\nlater the circle moves up")
    page.click("#generate")
    assert 'storyboard line 2: write it as "seconds: prompt"' in page.text_content("#storyboard-error")
    assert page.text_content("#form-error") == "see the Storyboard field"
    page.fill("#storyboard", "0.5: a red circle moves right\n0: the circle moves up")
    page.click("#generate")
    assert "line 2: 0 s is not after line 1's 0.5 s; put the lines in time order" in page.text_content(
        "#storyboard-error")
    page.fill("#storyboard", "0: a red circle moves right\n3: the circle moves up")  # the video is 1 s long
    page.click("#generate")
    assert "line 2: 3 s is at or after the video's end (1 s)" in page.text_content("#storyboard-error")
    page.fill("#storyboard", "0: a red circle moves right\n1: " + "x" * 4001)
    page.click("#generate")
    assert "storyboard line 2: its prompt is 4001 characters; the limit is 4000" in page.text_content(
        "#storyboard-error")
    page.fill("#storyboard", "0: a red circle moves right\n0.5 s: the circle moves up")
    page.click("#generate")
    page.wait_for_function("!document.getElementById('generate').disabled", timeout=TIMEOUT_MS)
    story = newest_job(server)
    assert story.params["mode"] == "sequence"
    assert story.params["segments"] == [[0.0, "a red circle moves right"], [0.5, "the circle moves up"]]


def test_page_names_errors_beside_their_fields_and_follows_a_video_after_a_reload(tmp_path):
    """On a phone-sized page of a server that runs nothing (jobs stay queued)."""
    with open_page(tmp_path, 0, 390, 844) as (server, page):
        for box in ("#prompt", "#storyboard"):  # an empty box's example does not read as what was typed
            assert page.get_attribute(box, "placeholder").startswith("e.g.")
        assert page.evaluate("getComputedStyle(document.getElementById('prompt'), '::placeholder').fontStyle") \
            == "italic"
        check_stills(page)
        page.click("#generate")
        assert page.text_content("#prompt-error") == "Prompt: write a prompt first; the grey text is only an example"
        page.fill("#prompt", "a red circle moves to the right")
        page.click(".advanced summary")
        assert page.evaluate(CUT_PLACEHOLDERS) == []  # each hint fits its field on a phone
        assert page.evaluate("getComputedStyle(document.querySelector('.fields')).gridTemplateColumns") \
            .count(" ") == 0  # the API's fields in one column, their descriptions under them
        for field, value, message in [("size", "big", "Size: write WIDTHxHEIGHT, e.g. 256x144"),
                                      ("seed", "-1", f"Seed: a whole number from 0 to {rc.MAX_SEED}"),
                                      ("steps", "1.5", f"Steps: a whole number from 1 to {rc.MAX_STEPS}"),
                                      ("fps", "0", f"FPS: a whole number from 1 to {rc.MAX_FPS}")]:
            page.fill(f"#{field}", value)  # each in the page's words, with its format and range
            page.click("#generate")
            assert page.text_content(f"#{field}-error") == message
            page.fill(f"#{field}", "")
        page.fill("#steps", "1001")
        page.evaluate("document.querySelector('.advanced').open = false")
        page.click("#generate")
        assert page.text_content("#steps-error").startswith("Steps: ")  # beside the field, which has the focus
        assert page.evaluate("document.activeElement.id") == "steps"
        assert page.get_attribute("#steps", "aria-invalid") == "true"
        page.fill("#steps", "2")
        assert page.locator("#steps-error").count() == 0  # corrected: the note goes
        page.fill("#guidance", "1.25")
        page.fill("#cache", "0.12")  # any value in range, as the server takes it
        assert page.evaluate("[...document.querySelectorAll('#create-form input')].every(f => f.checkValidity())")

        page.fill("#prompt", "a naked person walks")  # refused by the server: named at the prompt
        page.click("#generate")
        page.wait_for_selector("#prompt-error", timeout=TIMEOUT_MS)
        assert "content policy" in page.text_content("#prompt-error")
        page.click(".modes label:has(input[value='text'])")

        page.fill("#prompt", "a red circle moves to the right")
        assert page.locator(".field-error").count() == 0  # the mode change cleared the prompt's note
        page.fill("#size", "65x64")  # any size may be typed; the server names an odd one beside the field
        page.click("#generate")
        page.wait_for_selector("#size-error", timeout=TIMEOUT_MS)
        assert "width 65 is odd" in page.text_content("#size-error")
        assert page.text_content("#form-error") == "see the Size field"  # the server's words once, at the field
        page.fill("#size", "64x64")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#gallery .tile')", timeout=TIMEOUT_MS)
        followed = server.client().videos.list(limit=1).data[0].id
        page.reload()  # the queued video is followed again, and the gallery keeps asking after it
        page.wait_for_function("!document.getElementById('progress').hidden", timeout=TIMEOUT_MS)
        assert page.text_content("#progress-status") == "queued" and page.is_disabled("#generate")
        page.focus("#prompt")
        page.keyboard.press("Control+Enter")  # submits the form, but not while this tab's video is being made
        page.wait_for_timeout(500)
        assert len(server.client().videos.list(limit=100).data) == 1

        for i in range(47):
            server.client().videos.create(prompt=f"clip {i}", size="64x64", seconds="1")
        failed = Job(id=new_id(), prompt="went wrong", model="debug", size="64x64", seconds="1",
                     params={"inputs": {}}, status="failed", error_code="interrupted", error_message="it stopped")
        server.app.state.service.store.add(failed, max_queue=64)
        page.wait_for_selector(f".tile[data-id='{failed.id}'] .tile-error", timeout=TIMEOUT_MS)  # polled, no reload
        assert page.text_content(f".tile[data-id='{failed.id}'] .tile-error") == "it stopped"
        assert page.locator("#gallery .tile").count() == 48 and page.is_visible("#load-more")  # of 49
        page.click("#load-more")
        page.wait_for_function("document.querySelectorAll('#gallery .tile').length === 49", timeout=TIMEOUT_MS)
        assert not page.is_visible("#load-more")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not overflow

        server.client().videos.delete(followed)  # as from another tab: the page stops following it, bar and all
        page.wait_for_function("document.getElementById('progress').hidden", timeout=TIMEOUT_MS)
        assert "gone" in page.text_content("#form-error") and not page.is_disabled("#generate")


def check_stills(page) -> None:
    """A still is offered only where one frame can be the answer: not where new frames must be made."""
    page.select_option("#seconds", "0")
    for mode in ("extend", "loop", "blend", "storyboard"):
        page.click(f".modes label:has(input[value='{mode}'])")
        assert page.is_disabled("#seconds option[value='0']") and page.input_value("#seconds") == "1"
    page.click(".modes label:has(input[value='image'])")
    assert not page.is_disabled("#seconds option[value='0']")
    page.click(".modes label:has(input[value='text'])")


def set_key(page, key: str) -> None:
    page.evaluate("document.querySelector('details.key').open = true")
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")


def test_page_shows_a_key_only_its_own_videos_and_outlives_its_server(tmp_path):
    """A server with two keys: what one key made leaves the page when another is given (and is followed again when
    it comes back); a stopped server leaves the gallery on screen and is named as out of reach."""
    with open_page(tmp_path, 1, 1280, 900, api_keys=(API_KEY, "other-key")) as (server, page):
        set_key(page, API_KEY)
        page.fill("#size", "64x64")
        page.select_option("#seconds", "1")
        page.click(".advanced summary")
        page.fill("#steps", "2")
        page.click(".modes label:has(input[value='image'])")
        (tmp_path / "wide.png").write_bytes(png_bytes((600, 400)))
        page.set_input_files("#image", str(tmp_path / "wide.png"))
        generate_from_page(page, "a red square")
        first = newest_job(server)
        assert any(note.startswith("input_reference: ") for note in first.notes)
        notes = page.locator("#job-notes li").all_text_contents()  # named as the page names the field
        assert notes == [note.replace("input_reference: ", "Start image: ") for note in first.notes]

        page.click("#forget-key")  # forgotten or changed, the key's video, notes and errors leave with it
        assert page.evaluate(STAGE_IS_EMPTY)
        set_key(page, "other-key")
        assert page.evaluate(STAGE_IS_EMPTY)
        page.wait_for_selector("#gallery .empty", timeout=TIMEOUT_MS)

        gate = threading.Event()  # the next video waits for it, so the key changes while it is being made
        worker = server.app.state.service.worker
        worker.run = lambda job, run=worker.run: (gate.wait(TIMEOUT_MS / 1000), run(job))
        set_key(page, API_KEY)
        page.click(".modes label:has(input[value='text'])")
        page.fill("#prompt", "a blue square")
        page.click("#generate")
        page.wait_for_function("!document.getElementById('progress').hidden", timeout=TIMEOUT_MS)
        set_key(page, "other-key")
        assert page.evaluate(STAGE_IS_EMPTY) and not page.is_disabled("#generate")
        page.wait_for_selector("#gallery .empty", timeout=TIMEOUT_MS)
        page.wait_for_timeout(500)  # longer than the page's 300 ms between polls: a follow would ask with this key
        set_key(page, API_KEY)  # back: followed again, as after a reload, and played once made
        page.wait_for_function("!document.getElementById('progress').hidden", timeout=TIMEOUT_MS)
        gate.set()
        second = newest_job(server)
        page.wait_for_function(f"document.getElementById('job-meta').textContent.endsWith('{second.id}')",
                               timeout=TIMEOUT_MS)
        assert page.text_content("#progress-percent") == "100%" and page.text_content("#form-error") == ""

        server.server.should_exit = True  # the server stops; the page keeps what it showed
        server.thread.join(60)
        page.click("#refresh")
        page.wait_for_selector("#gallery-notice:has-text('retrying')", timeout=TIMEOUT_MS)
        assert page.locator("#gallery .tile").count() == 2
        page.click("#generate")
        page.wait_for_function("document.getElementById('form-error').textContent", timeout=TIMEOUT_MS)
        assert page.text_content("#form-error") == (f"can't reach the server at {server.url}; check that kinema "
                                                    "serve is running")
        page.evaluate("document.getElementById('form-error').textContent = ''")
        page.click(f"#gallery .tile[data-id='{first.id}'] .thumb")  # its video not fetched yet: named, not thrown
        page.wait_for_function("document.getElementById('form-error').textContent", timeout=TIMEOUT_MS)
        assert page.text_content("#form-error").startswith("can't reach the server")
