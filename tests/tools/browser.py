"""Test tooling: look at an HTML page as a browser draws it (Debian's
headless Chromium), for the race page's browser test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

# Headless Chromium that loads the local page and nothing else: no DNS, no
# background fetches, its profile in a scratch folder.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--no-pings",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def chromium() -> str | None:
    """Debian's Chromium, when installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    page: Path, png: Path, scratch: Path, width: int = 1400, height: int = 2000, timeout_s: float = 120
) -> Path:
    """A PNG of `page` as headless Chromium draws it in a width x height window;
    `scratch` holds the browser's profile (and is its HOME)."""
    exe = chromium()
    if exe is None:
        raise HarnessError("chromium is not installed (as root: sh scripts/setup.sh --browser)")
    scratch.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(scratch),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "XDG_CACHE_HOME": str(scratch / "cache"),
    }
    png.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={scratch / 'profile'}",
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    if not png.is_file():
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise HarnessError(f"chromium wrote no screenshot of {page}: {tail[0]}")
    return png
