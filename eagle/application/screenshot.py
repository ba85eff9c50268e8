"""``python -m eagle.application.screenshot``: a picture of the web UI, taken by a real browser.

Loads the model as ``webui`` does (the same flags), serves the page on loopback, opens it in
headless Chromium, sends one message, waits until the answer has stopped growing and saves the
page as a PNG. The README's picture is made with::

    python -m eagle.application.screenshot --out figs/webui.png --max-new-token 200

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; selenium is
pointed at the system's driver and browser, so nothing is downloaded. The browser helpers
(``chrome_driver``, ``wait_for``, ``send_message``) are also what the browser test drives the
page with.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from eagle.input_checks import Bound, check_flags

T = TypeVar("T")

DEFAULT_MESSAGE = "Explain how a rainbow forms, step by step."
FIGURES_JS = "return document.getElementById('eagle-figures').innerText.trim();"
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")


def browser_paths() -> tuple[str | None, str | None]:
    """The system's Chromium and chromedriver executables (None where missing)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    return chromium, shutil.which("chromedriver")


def chrome_driver(width: int = 1280, height: int = 960) -> Any:
    """A headless Chromium selenium driver of the given window size; the caller quits it.

    Raises ``RuntimeError`` naming what to install when the browser or its driver is missing.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    if chromium is None or driver is None:
        raise RuntimeError(
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(probe: Callable[[], T], timeout: float = 30.0, every: float = 0.03) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail at the timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout} s waiting for the page")


def send_message(driver: Any, url: str, message: str) -> None:
    """Open the chat page at ``url`` and send ``message`` as the user."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    box = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#eagle-message textarea"))[0]
    box.send_keys(message, Keys.ENTER)


def wait_until_settled(driver: Any, timeout: float, settle: float = 2.0, every: float = 0.2) -> str:
    """Wait until the figures line is shown and unchanged for ``settle`` seconds; return it.

    The figures change after every decoding step (their time does), so a line that stays the
    same for two seconds belongs to a finished answer.
    """
    last_text, since = "", time.monotonic()

    def settled() -> str:
        nonlocal last_text, since
        text = driver.execute_script(FIGURES_JS)
        now = time.monotonic()
        if text != last_text:
            last_text, since = text, now
        return text if text and now - since >= settle else ""

    return wait_for(settled, timeout, every)


def main(argv: list[str] | None = None) -> Path:
    """Parse the flags, load the model, take the picture; return the image path."""
    from eagle.application import webui

    parser = webui.build_parser(
        "python -m eagle.application.screenshot",
        "Serve the web UI, ask one question in headless Chromium and save the page as a PNG.",
    )
    parser.add_argument("--out", default="figs/webui.png", help="image path (figs/webui.png)")
    parser.add_argument("--message", default=DEFAULT_MESSAGE, help="the user message sent")
    parser.add_argument("--width", type=int, default=1280, help="browser width in pixels")
    parser.add_argument("--height", type=int, default=960, help="browser height in pixels")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the answer (600)"
    )
    args = parser.parse_args(argv)
    spec = webui.check_ranges(parser, args)
    pixels, seconds = Bound(0, integer=True, low_open=True), Bound(0, low_open=True)
    check_flags(parser, args, {"--width": pixels, "--height": pixels, "--timeout": seconds})
    model = webui.load_model(spec)
    try:
        demo = webui.build_demo(
            model, model.tokenizer, args.template, max_new_tokens=args.max_new_token
        )
    except ValueError as error:  # no chat template and no --template, or an unknown template
        raise SystemExit(f"screenshot: {error}") from error
    _, url, _ = webui.launch(demo, "127.0.0.1", None, prevent_thread_lock=True, quiet=True)
    try:
        driver = chrome_driver(args.width, args.height)
    except RuntimeError as error:
        demo.close()
        raise SystemExit(f"screenshot: {error}") from error
    try:
        send_message(driver, url, args.message)
        figures = wait_until_settled(driver, args.timeout)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise SystemExit(f"screenshot: the browser could not save {out}")
    finally:
        driver.quit()
        demo.close()
    print(f"{figures}\nscreenshot written to {out}")
    return out


if __name__ == "__main__":
    main()
