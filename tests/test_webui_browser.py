"""End to end: the chat page served on loopback and driven in headless Chromium via selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and the ``selenium`` package; skips with the reason when one is missing.
The browser is driven with the helpers of ``eagle.application.screenshot``.

The tiny model sleeps a little in every target forward so that a browser polling the page can
see the answer grow step by step. Set ``EAGLE_WEBUI_SCREENSHOT=PATH`` to keep the page's
screenshot (otherwise it goes to the test's temporary folder); the README's picture is taken on
the real model by ``python -m eagle.application.screenshot``.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import time

import pytest
from test_webui import MESSAGE, tiny_chat_model

from eagle.application import webui
from eagle.application.chat import CONTEXT_CLASS, HIGHLIGHT_CLASS
from eagle.application.screenshot import (
    FIGURES_JS,
    browser_paths,
    chrome_driver,
    send_message,
    wait_for,
)

CHROMIUM, DRIVER = browser_paths()
LAST_ANSWER_JS = """
const answers = document.querySelectorAll('#eagle-chatbot [data-testid="bot"]');
return answers.length ? answers[answers.length - 1].innerText.trim() : '';
"""
STEP_DELAY = 0.06  # seconds of sleep per target forward: a visible stream of steps
NEW_TOKENS = 60

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("selenium") is None,
        reason="needs selenium: pip install -r requirements.txt",
    ),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),  # gradio's use of pandas
]


@pytest.fixture
def page_url(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    model = tiny_chat_model(tmp_path / "target", MESSAGE, NEW_TOKENS)
    slow = model.base_model.register_forward_pre_hook(lambda *_: time.sleep(STEP_DELAY))
    demo = webui.build_demo(model, max_new_tokens=NEW_TOKENS)
    _, url, _ = webui.launch(demo, "127.0.0.1", None, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()
    slow.remove()


@pytest.fixture
def browser():
    driver = chrome_driver()
    yield driver
    driver.quit()


def watch_answer(driver, done: str) -> tuple[list[str], str]:
    """Poll the last answer until the figures contain ``done``: (answers seen, figures)."""
    seen: list[str] = []

    def finished():
        answer, figures = driver.execute_script(LAST_ANSWER_JS), driver.execute_script(FIGURES_JS)
        if answer and (not seen or seen[-1] != answer):
            seen.append(answer)
        complete = f"{NEW_TOKENS} tokens" in figures and done in figures
        return (
            figures if complete and seen[-1:] == [driver.execute_script(LAST_ANSWER_JS)] else None
        )

    return seen, wait_for(finished)


def test_chat_streams_an_answer_with_live_figures(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    send_message(browser, page_url, MESSAGE)

    seen, figures = watch_answer(browser, "EAGLE")
    words = [answer for answer in seen if answer.startswith("w")]
    assert len(words) >= 3, f"the answer did not stream in steps: {seen}"
    assert all(b.startswith(a) for a, b in itertools.pairwise(words)), seen
    assert "tokens/s" in figures and "tokens per target step" in figures
    assert float(figures.split(" tokens per target step")[0].split()[-1]) > 1.5
    marks = browser.find_elements(By.CSS_SELECTOR, f"#eagle-chatbot mark.{HIGHLIGHT_CLASS}")
    assert marks, "no drafted tokens highlighted"
    legend = browser.find_elements(By.CSS_SELECTOR, "#eagle-legend mark")
    colours = {
        m.get_attribute("class"): m.value_of_css_property("background-color") for m in legend
    }
    assert set(colours) == {HIGHLIGHT_CLASS, CONTEXT_CLASS}, colours
    assert len(set(colours.values())) == 2, f"the two sources share a colour: {colours}"
    eagle_answer = seen[-1]
    shot = os.environ.get("EAGLE_WEBUI_SCREENSHOT") or str(tmp_path / "webui.png")
    assert browser.save_screenshot(shot)

    # A/B: plain decoding regenerates the same greedy answer at one token per target step.
    browser.find_element(By.CSS_SELECTOR, "#eagle-use-draft input[type=checkbox]").click()
    browser.find_element(By.ID, "eagle-regenerate").click()
    _, figures = watch_answer(browser, "plain decoding")
    assert "1.00 tokens per target step" in figures
    assert browser.execute_script(LAST_ANSWER_JS) == eagle_answer

    browser.find_element(By.ID, "eagle-clear").click()
    wait_for(lambda: not browser.execute_script(LAST_ANSWER_JS))
