"""A real browser for the tests: Debian's Chromium, headless, driven by Playwright.

Shared by the tests that need one (the admin panel, the Django site): the
binary and its flags, the skip markers, and ``launched_browser()``, which
starts it (no browser is downloaded: ``executable_path``), yields it and
waits for Playwright's helper thread to end after it is closed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

try:
    from playwright.sync_api import sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # the test extra installs it
    HAVE_PLAYWRIGHT = False

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # A stand-in for DNS rebinding: this name resolves to 127.0.0.1, without any DNS.
    "--host-resolver-rules=MAP evil.example 127.0.0.1",
]
TIMEOUT = 5.0

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason="chromium not installed: .ci/run installs it"
)
needs_playwright = pytest.mark.skipif(
    not HAVE_PLAYWRIGHT, reason="playwright not installed: the test extra installs it"
)


def wait_for(
    predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "a condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def launched_browser() -> Iterator[Any]:
    """Chromium (its own temporary profile directory, removed on close), or a skip."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium not installed: .ci/run installs it")
    if not HAVE_PLAYWRIGHT:
        pytest.skip("playwright not installed: the test extra installs it")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()
    # Playwright's helper thread ends with it.
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("asyncio-")],
        what="playwright's threads",
    )
