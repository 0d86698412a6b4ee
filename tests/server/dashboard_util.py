"""Helpers for the dashboard's tests: headless Chromium from Debian driven by Selenium, sign-in, screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Screenshots go to a temporary directory unless FLOODWATCH_SCREENSHOTS names one (the committed set:
# FLOODWATCH_SCREENSHOTS=benchmarks/results/screenshots), so a test run leaves the tree as it found it.
SHOTS = Path(os.environ.get("FLOODWATCH_SCREENSHOTS") or Path(tempfile.gettempdir()) / "floodwatch-screenshots")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900")


def store_of(srv: Any) -> Any:
    """A store on a test server's database (SQLite file or PostgreSQL), for checks behind its back."""
    if srv.backend.kind == "sqlite":
        from floodwatch.server.sqlite_store import SQLiteStore

        return SQLiteStore(srv.db, create=False)
    from floodwatch.server.pg_store import PGStore

    return PGStore(srv.backend.url, Path(srv.backend.password_file).read_text().strip())


def need_browser() -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh --dev installs them)")


@contextlib.contextmanager
def browser(downloads: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), never downloading anything itself."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch drivers or browsers
    profile = tempfile.mkdtemp(prefix="fw-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver: Any, base: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()


def _redrawn(driver: Any) -> None:
    """Return once the page has redrawn its charts at the window's current width (charts.js stamps
    data-fw-redrawn after its debounced resize handler); the resize is dispatched here, so it also
    happens when the size did not change."""
    driver.execute_script("document.documentElement.removeAttribute('data-fw-redrawn');"
                          "window.dispatchEvent(new Event('resize'));")
    eventually(lambda: driver.execute_script(
        "return document.documentElement.getAttribute('data-fw-redrawn') !== null"), timeout=10)


def shoot(driver: Any, name: str) -> None:
    """Screenshots of the current page at 1280 (dark) and 390 px wide (light), full page height."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, theme in ((1280, "dark"), (390, "light")):  # both themes shown, one per width
        height = 900 if width == 1280 else 844
        driver.execute_script(f"document.documentElement.setAttribute('data-theme', '{theme}')")
        driver.set_window_size(width, height)
        _redrawn(driver)  # the layout and the charts redrawn at the new width
        full = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
        driver.set_window_size(width, max(height, int(full)))
        driver.save_screenshot(str(SHOTS / f"{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def small_pcap(packets: int = 20) -> bytes:
    """A valid pcap (Ethernet, UDP to port 53) to upload as an incident's capture."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i in range(packets):
        payload = bytes([i % 256]) * 32
        udp = struct.pack("!HHHH", 40000 + i, 53, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0, bytes([198, 18, 0, 9]),
                         bytes([198, 18, 0, 1])) + udp
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
        out += struct.pack("<IIII", 1_764_000_000 + i, 0, len(frame), len(frame)) + frame
    return bytes(out)


def history(pps: float, minutes: int = 16, step: int = 5, spike_at: int = -1) -> list[dict[str, Any]]:
    """Samples every `step` s over the last `minutes`, around `pps` with a slow wave (and a spike)."""
    import math

    now = time.time()
    out = []
    for i in range(minutes * 60 // step):
        t = now - minutes * 60 + i * step
        v = pps * (1 + 0.25 * math.sin(i / 9.0)) * (6 if spike_at >= 0 and i >= spike_at else 1)
        out.append({"pps": int(v), "bps": int(v * 900), "tcp_pct": 30.0, "udp_pct": 65.0, "icmp_pct": 5.0,
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))})
    return out
