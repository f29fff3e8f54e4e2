"""A 360 px phone in headless Chromium with JavaScript off, for the pages' screenshot tests.

The portal's pages are self-contained (CSS inline, no script): a test either hands the
page its HTML or lets it ``goto`` a running server. Skips when Chromium or Playwright is
missing (``make test`` installs both)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip


@contextmanager
def phone_page(artifacts: Path, html: str | None = None) -> Iterator[Any]:
    """The phone's page (showing ``html`` when given); ``artifacts``, where the test's
    screenshots go, exists once this is entered."""
    if not CHROMIUM.exists():
        pytest.skip("browser test skipped: /usr/bin/chromium missing (make test installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    artifacts.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(
            viewport={"width": 360, "height": 640}, locale="fr-FR", java_script_enabled=False
        )
        if html is not None:
            page.set_content(html)
        yield page
        browser.close()
