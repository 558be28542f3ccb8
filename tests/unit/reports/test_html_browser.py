"""The race page in a real browser: Debian's headless Chromium draws a page
made from a synthetic race, and the screenshot must show the plots (the
colours only they carry, and detail) where the same page without plots shows
none.  No VM; Chromium loads the local file and nothing else."""

from __future__ import annotations

import pytest

import htmlsim
from harness.reports import plots
from harness.reports.plots import race_figures
from harness.reports.race_page import race_html
from tests.tools import browser
from tests.tools.browser import screenshot

pytestmark = [
    pytest.mark.skipif(
        browser.chromium() is None,
        reason="chromium is not installed (make test's setup installs it: sh scripts/setup.sh --browser, as root)",
    ),
    pytest.mark.skipif(
        plots.plotting_missing() is not None,
        reason="matplotlib missing: the optional extra 'report' (make test installs it)",
    ),
]

WIDTH, HEIGHT = 1400, 2200
# Plot colours on white, as the browser shows them: the shaded "delete_module
# running" span (alpha 0.45 of #f4a261) and the ENODEV marks (#d62828).
SPAN_RGB = (250, 213, 184)
ENODEV_RGB = (214, 40, 40)


def _share(img, rgb, tol=14) -> float:
    """Fraction of pixels within tol of a colour on every channel."""
    import numpy

    px = numpy.asarray(img.convert("RGB")).astype(int)
    return float((abs(px - numpy.array(rgb)) <= tol).all(axis=-1).mean())


def _colourful(img) -> float:
    """Fraction of saturated pixels: plots are coloured, the page's text is not."""
    import numpy

    hsv = numpy.asarray(img.convert("HSV")).astype(int)
    return float(((hsv[..., 1] > 60) & (hsv[..., 2] > 60)).mean())


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("browser")
    rep = htmlsim.report()
    out = {}
    for name, figures in (("plots", race_figures([rep])), ("bare", None)):
        page = d / f"{name}.html"
        page.write_text(race_html([rep], d, figures))
        out[name] = Image.open(screenshot(page, d / f"{name}.png", d / "chromium", WIDTH, HEIGHT))
    return out


def test_the_screenshot_has_the_window_size(shots):
    assert shots["plots"].size == (WIDTH, HEIGHT) and shots["bare"].size == (WIDTH, HEIGHT)


def test_the_plots_are_drawn_and_not_blank(shots):
    from PIL import ImageStat

    plots, bare = shots["plots"], shots["bare"]
    assert _share(plots, SPAN_RGB) > 0.01, "no shaded unload window on the page"
    assert _share(plots, ENODEV_RGB, tol=30) > 0.0005, "no failed-call mark on the page"
    assert _share(bare, SPAN_RGB) < 0.001 and _share(bare, ENODEV_RGB, tol=30) < 0.0001
    # pixel variance: the plots add colour and detail to a page of black-on-white tables
    assert _colourful(plots) > 0.05 > 0.01 > _colourful(bare)
    grey = [ImageStat.Stat(img.convert("L")).stddev[0] for img in (plots, bare)]
    assert grey[0] > grey[1] + 4
