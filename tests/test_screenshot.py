"""The screenshot command's logic without a browser: settling, missing tools, bad flags.

The browser itself is exercised by ``test_webui_browser.py`` through the same helpers.
"""

from __future__ import annotations

import time

import pytest

from eagle.application import screenshot


class FakeDriver:
    """Answers the figures script with scripted texts, then the last one forever."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls = 0

    def execute_script(self, script: str) -> str:
        assert script == screenshot.FIGURES_JS
        self.calls += 1
        return self.texts[min(self.calls, len(self.texts)) - 1]


def test_settled_only_after_the_figures_stop_changing() -> None:
    driver = FakeDriver(["", "", "3 tokens in 2 steps, 0.10 s", "9 tokens in 5 steps, 0.31 s"])
    start = time.monotonic()
    figures = screenshot.wait_until_settled(driver, timeout=10, settle=0.2, every=0.01)
    assert figures == "9 tokens in 5 steps, 0.31 s"
    assert time.monotonic() - start >= 0.2


def test_an_empty_page_times_out() -> None:
    with pytest.raises(TimeoutError, match=r"timed out after 0\.1 s"):
        screenshot.wait_until_settled(FakeDriver([""]), timeout=0.1, settle=0.01, every=0.01)


def test_a_missing_browser_names_the_packages(monkeypatch) -> None:
    pytest.importorskip("selenium", reason="needs selenium: pip install -r requirements.txt")
    monkeypatch.setattr(screenshot.shutil, "which", lambda name: None)
    assert screenshot.browser_paths() == (None, None)
    with pytest.raises(RuntimeError, match="apt-get install chromium chromium-driver"):
        screenshot.chrome_driver()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--width", "0"], "--width must be > 0, got 0"),
        (["--timeout", "-1"], "--timeout must be > 0, got -1.0"),
        (["--depth", "0"], "--depth must be >= 1, got 0"),
        (["--timeout", "nan"], "--timeout must be a finite number > 0, got nan"),
    ],
)
def test_bad_flags_exit_before_loading(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        screenshot.main(argv)
    assert message in capsys.readouterr().err
