"""Debian's chromium driven by Playwright (no browser download: `playwright install` is never run),
for the explorer's browser test and scripts/explorer_screenshot.py."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet on a machine with no network (without these chromium keeps calling out).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def expect(locator: Any) -> Any:
    """Playwright's auto-waiting assertions (imported only when a browser test runs)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def chromium_path() -> Path | None:
    """The system chromium, when there is one."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


@contextlib.contextmanager
def chromium_page(width: int = 1600, height: int = 900) -> Iterator[Any]:
    """A page of a fresh headless chromium (closed on exit)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
