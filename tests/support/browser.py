"""Headless Chromium for tests: open a page as an analyst would and measure what is drawn.

No driver library: Chromium's own `--dump-dom` returns the DOM after the page ran, so a measuring
script added to a copy of the page writes its findings into the DOM; `--screenshot` takes the
picture. Found as Debian's `chromium` (.ci/run installs it when missing) or a Chrome on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], url: str, width: int, height: int) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="ecom-chromium-")
    try:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


MEASURE = """
<script>
(function () {
  function inside(inner, outer) {
    return inner.left >= outer.left - 1 && inner.right <= outer.right + 1 &&
           inner.top >= outer.top - 1 && inner.bottom <= outer.bottom + 1;
  }
  var charts = Array.prototype.map.call(document.querySelectorAll('svg.chart'), function (svg) {
    var box = svg.getBoundingClientRect();
    var bars = Array.prototype.filter.call(svg.querySelectorAll('rect'), function (r) {
      var b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0 && inside(b, box);
    });
    var texts = Array.prototype.filter.call(svg.querySelectorAll('text'), function (t) {
      return t.textContent.trim() !== '';
    });
    var shown = texts.filter(function (t) {
      var b = t.getBoundingClientRect(); return b.width > 0 && b.height > 0 && inside(b, box);
    });
    return {id: svg.id, axis: svg.getAttribute('data-axis'), width: box.width, height: box.height,
            bars: bars.length, labels: texts.length, labels_inside: shown.length,
            months: Array.prototype.map.call(svg.querySelectorAll('rect[data-month]'), function (r) {
              return [r.getAttribute('data-month'), r.getBoundingClientRect().left]; }),
            month_labels: Array.prototype.map.call(svg.querySelectorAll('text.month'), function (t) {
              return t.textContent; })};
  });
  var cells = Array.prototype.map.call(document.querySelectorAll('table[data-view] td'), function (td) {
    return td.textContent; });
  var doc = document.documentElement;
  var out = document.createElement('pre');
  out.id = 'browser-measure';
  out.textContent = JSON.stringify({charts: charts, scroll_width: doc.scrollWidth, client_width: doc.clientWidth,
                                    inner_width: window.innerWidth, cells: cells.length});
  document.body.appendChild(out);
})();
</script>
"""


def measure(browser: str, page: Path, width: int = 1280, height: int = 900) -> dict:
    """Open a copy of `page` (beside it, so relative links still resolve) with the measuring script."""
    copy = page.with_name(f".measure-{os.getpid()}-{page.name}")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    try:
        out = _run(browser, ["--dump-dom"], copy.as_uri(), width, height)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r'<pre id="browser-measure">(.*?)</pre>', out.stdout, re.S)
    if not found:
        raise RuntimeError(f"the browser returned no measurement (exit {out.returncode}): {out.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(found.group(1)))


def screenshot(browser: str, page: Path, target: Path, width: int = 1280, height: int = 2400) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    out = _run(browser, [f"--screenshot={target}", "--hide-scrollbars"], page.as_uri(), width, height)
    if not target.exists():
        raise RuntimeError(f"no screenshot (exit {out.returncode}): {out.stderr[-2000:]}")
    return target


def png_pixels(path: Path):
    """The pixels of an 8-bit RGB/RGBA PNG as a (height, width, channels) uint8 array: enough to
    tell a drawn page from a blank one. Chromium filters most rows with Up, a few with Paeth or Sub;
    None, Sub and Up are vectorised, Average and Paeth run per byte (a handful of rows)."""
    import numpy as np

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6), f"unexpected PNG format depth={depth} color={color}"
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:
            row = (np.cumsum(line.reshape(width, bpp).astype(np.int64), axis=0) % 256).astype(np.uint8).reshape(stride)
        elif kind == 2:
            row = line + previous  # uint8 wraps modulo 256
        else:
            row = bytearray(line.tobytes())
            up = previous.tobytes()
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = up[i]
                c = up[i - bpp] if i >= bpp else 0
                if kind == 3:
                    row[i] = (row[i] + (a + b) // 2) & 0xFF
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            row = np.frombuffer(bytes(row), dtype=np.uint8)
        out[y] = row
        previous = row
    return out.reshape(height, width, bpp)
