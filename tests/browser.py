"""A headless Debian chromium driven by selenium, and waiting for the console to finish a view;
for the console's browser test and ``bench/console_screenshots.py``.

The browser and its driver are the system's (``make browser`` installs Debian's ``chromium``
and ``chromium-driver``): selenium is given both paths, so Selenium Manager never downloads one.
"""

from __future__ import annotations

import os
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why no browser can be started here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return f"{' and '.join(missing)} missing (make browser installs them)" if missing else None


def headless_chromium(width: int = 1400, height: int = 1000) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        f"--window-size={width},{height}",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:  # chromium refuses to run its sandbox as root
        options.add_argument("--no-sandbox")
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def open_view(driver: WebDriver, base_url: str, hash_route: str, timeout: float = 30) -> None:
    """Open ``base_url/ui#hash_route`` (or, on the page already, navigate to it) and wait until the
    console has rendered that route."""
    if driver.current_url.split("#", 1)[0] == f"{base_url}/ui":
        driver.execute_script("window.location.hash = arguments[0]", hash_route)
    else:
        driver.get(f"{base_url}/ui{hash_route}")
    wait_rendered(driver, hash_route, timeout)


def wait_rendered(driver: WebDriver, hash_route: str | None = None, timeout: float = 30) -> None:
    """Wait until the console's main element says it finished rendering ``hash_route`` (default:
    the route in the address bar now)."""
    script = (
        "const m = document.getElementById('view');"
        "const want = arguments[0] === null ? window.location.hash : arguments[0];"
        "return m !== null && m.dataset.state === 'ready' && m.dataset.hash === want;"
    )
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script, hash_route))
