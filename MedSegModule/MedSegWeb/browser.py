"""Drive the web app as a person does, in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through Selenium): for the browser test and ``scripts/web_screenshot.py``.

:class:`AppServer` runs ``python -m MedSegWeb`` on a free local port; :class:`AppPage` uploads,
clicks, paints with the mouse, downloads, and reads the rendered pixels of the axial view.
"""

from __future__ import annotations

import colorsys
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODULE_DIR = Path(__file__).resolve().parents[1]


def browser_missing() -> str:
    """Why no browser test can run here ("" when it can): the reason a test skips with."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            return f"{binary} not installed (scripts/install_browser.sh installs Debian's chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """``python -m MedSegWeb`` on 127.0.0.1 in its own process group, stopped (whole group) on exit."""

    def __init__(self, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> AppServer:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(MODULE_DIR), str(MODULE_DIR.parent), env.get("PYTHONPATH")) if p)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MedSegWeb", "--port", str(self.port), *self.extra_args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"web app exited with code {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"web app did not answer on {self.url} within 180 s; see {self.log_path}")

    def __exit__(self, *_exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def chrome(download_dir: Path, size: tuple[int, int] = (1400, 900)):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def overlay_pixels(rgb: np.ndarray, colours: Sequence[Sequence[int]], min_saturation: int = 40,
                   max_hue_difference: float = 15.0) -> int:
    """Pixels of a greyscale image view that show a segment: coloured, with the hue of one of
    ``colours`` (a segment drawn half-transparent over grey keeps its hue)."""
    pixels = rgb.reshape(-1, 3).astype(int)
    coloured = pixels[(pixels.max(1) - pixels.min(1)) > min_saturation]
    if not len(coloured):
        return 0
    hues = np.array([colorsys.rgb_to_hsv(*(np.asarray(c) / 255.0))[0] * 360 for c in colours])
    from PIL import Image

    hsv = np.asarray(Image.fromarray(coloured.reshape(1, -1, 3).astype(np.uint8)).convert("HSV")).reshape(-1, 3)
    difference = np.abs(hsv[:, 0, None] * (360 / 255) - hues[None])
    difference = np.minimum(difference, 360 - difference).min(1)
    return int((difference < max_hue_difference).sum())


class AppPage:
    """The app's page in the browser; every wait raises ``TimeoutError`` naming what it waited for."""

    def __init__(self, driver, url: str, download_dir: Path) -> None:
        self.driver = driver
        self.download_dir = download_dir
        driver.get(url)
        self.wait_for(lambda: self._elements("#medseg-upload") and self.axial_view(), "the page", 120)

    def _elements(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, condition, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"no {what} after {timeout} s (status: {self.status()!r}, error: {self.error()!r})")

    def status(self) -> str:
        found = self._elements("#medseg-status")
        return found[0].text if found else ""

    def error(self) -> str:
        found = self._elements("#medseg-error")
        return found[0].text if found else ""

    def progress(self) -> float:
        found = self._elements("#medseg-progress")
        return float(found[0].get_attribute("aria-valuenow") or 0) if found else 0.0

    def axial_view(self):
        """The first (largest) slice view: the axial one in the app's layout."""
        views = self._elements("img.image-display-area")
        return views[0] if views else None

    def upload(self, path: Path, field_id: str = "medseg-upload", done: str = "Volume loaded", timeout: float = 120) -> None:
        """Choose ``path`` in a file field; wait until the status starts with ``done`` (or an error shows)."""
        field = self._elements(f"#{field_id}")[0]
        self.driver.execute_script("arguments[0].value = '';", field)  # the same file again must fire 'change'
        field.send_keys(str(path))
        self.wait_for(lambda: self.status().startswith(done) or self.error(), done, timeout)

    def click(self, element_id: str) -> None:
        button = self.wait_for(lambda: [b for b in self._elements(f"#{element_id}") if b.is_enabled()],
                               f"enabled #{element_id}", 60)[0]
        button.click()

    def choose(self, select_id: str, title: str) -> None:
        """Open a select field and click the item titled ``title``."""
        field = self.wait_for(lambda: self._elements(f"#{select_id}"), f"#{select_id}", 30)[0]
        from selenium.webdriver.common.action_chains import ActionChains

        wrapper = self.driver.execute_script("return arguments[0].closest('.v-field');", field)
        ActionChains(self.driver).move_to_element(wrapper).click().perform()  # Vuetify opens on mousedown
        items = self.wait_for(lambda: [i for i in self._elements(".v-overlay .v-list-item") if i.text.strip() == title],
                              f"item {title!r}", 30)
        items[0].click()

    def select_segment(self, name: str) -> None:
        """Click a segment's row in the list (the segment Paint and Erase then change)."""
        rows = self.wait_for(lambda: [r for r in self._elements("#medseg-segments .v-list-item")
                                      if name in r.text], f"segment {name!r} in the list", 30)
        rows[0].click()
        self.wait_for(lambda: "v-list-item--active" in (rows[0].get_attribute("class") or ""),
                      f"segment {name!r} active", 30)

    def segment(self, timeout: float = 600) -> list[float]:
        """Click Segment and wait for the result; the progress values seen on the way."""
        seen: list[float] = []
        self.click("medseg-segment")

        def finished():
            seen.append(self.progress())
            return self.status().startswith("Segmented") or self.error()

        self.wait_for(finished, "segmentation result", timeout)
        return seen

    def view_pixels(self, settle: float = 2.0) -> np.ndarray:
        """The axial view as rendered on the page (RGB), after ``settle`` s for the view to update."""
        import io

        from PIL import Image

        time.sleep(settle)
        view = self.axial_view()
        shot = np.asarray(Image.open(io.BytesIO(self.driver.get_screenshot_as_png())).convert("RGB"))
        rect = view.rect
        top, left = int(rect["y"]), int(rect["x"])
        return shot[top: top + int(rect["height"]), left: left + int(rect["width"])]

    def stroke(self, start: tuple[int, int], end: tuple[int, int], steps: int = 12) -> None:
        """Drag the left mouse button across the axial view, offsets in pixels from its centre."""
        from selenium.webdriver.common.action_chains import ActionChains

        view = self.axial_view()
        actions = ActionChains(self.driver).move_to_element_with_offset(view, *start).pause(0.3).click_and_hold()
        dx, dy = (end[0] - start[0]) / steps, (end[1] - start[1]) / steps
        for _ in range(steps):
            actions = actions.move_by_offset(round(dx), round(dy)).pause(0.1)
        actions.release().pause(0.5).perform()

    def download(self, button_id: str, suffix: str, timeout: float = 120) -> Path:
        """Click a download button; the file, once the browser has finished writing it."""
        for old in self.download_dir.glob(f"*{suffix}"):
            old.unlink()
        self.click(button_id)
        found = self.wait_for(lambda: [p for p in self.download_dir.glob(f"*{suffix}")
                                       if not p.with_name(p.name + ".crdownload").exists() and p.stat().st_size > 0],
                              f"downloaded *{suffix}", timeout)
        time.sleep(0.5)
        return found[0]

