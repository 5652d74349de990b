"""Write docs/web.png: the web page after two prompts, served by `kinema serve` with the bundled model.

    python scripts/web_screenshot.py [--model M] [--out docs/web.png]

Needs Chromium and playwright (scripts/install-browser.sh). The web test (tests/test_web.py) checks the page itself
with the tiny debug model; this shows what a user sees.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_web import ARGS, CHROMIUM  # noqa: E402  the browser exactly as the web test launches it

PROMPTS = ("a small green heart moves to the right over a beige background",
           "a big yellow star spins in place on a snowy field")
WAIT_MS = 300_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"kinema serve exited with code {server.returncode}; run it by hand to see why")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"kinema serve did not answer at {url} within {seconds:.0f} s")


def shoot(url: str, out: Path) -> None:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url)
        for prompt in PROMPTS:
            page.fill("#prompt", prompt)
            page.click("#generate")
            page.wait_for_function("!document.getElementById('generate').disabled", timeout=WAIT_MS)
        page.wait_for_function("() => { const v = document.getElementById('player');"
                               " return v.readyState >= 2 && v.duration > 0; }", timeout=WAIT_MS)
        page.evaluate("() => { const v = document.getElementById('player'); v.pause(); v.currentTime = 1.0; }")
        page.wait_for_timeout(1500)  # let the paused frame and the gallery's thumbnails paint
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model to serve (default: the bundled kinema-small-fast)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "web.png")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        command = ["kinema", "serve", "--port", str(port), "--data", data]
        server = subprocess.Popen(command + (["--model", args.model] if args.model else []))
        try:
            wait_until_up(f"http://127.0.0.1:{port}/", server)
            shoot(f"http://127.0.0.1:{port}/", args.out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
