"""Make docs/images/web-app.png: the web app in headless Chromium with the demo head segmented.

    .venv/bin/python scripts/web_screenshot.py [--output docs/images/web-app.png]

Needs the web extra and scripts/install_browser.sh (Debian's chromium and chromium-driver).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedSegModule"))

from MedSegWeb.browser import AppPage, AppServer, browser_missing, chrome  # noqa: E402

from MedSegExtension.cli.demo import demo_volume  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "web-app.png")
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        print(f"web_screenshot: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, AppServer(Path(tmp) / "server.log") as server:
        driver = chrome(Path(tmp), size=(1600, 900))
        try:
            page = AppPage(driver, server.url, Path(tmp))
            page.upload(demo_volume())
            page.segment()
            if page.error():
                print(f"web_screenshot: {page.error()}", file=sys.stderr)
                return 1
            page.view_pixels(settle=3.0)  # let the views update
            args.output.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.output))
        finally:
            driver.quit()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
