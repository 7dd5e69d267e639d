"""The report in a real browser: headless Chromium (Debian's ``chromium``) opens
report.html offline, every image must have loaded, no console error may occur, and a
screenshot is saved.

Skipped when Chromium is not installed, unless on CI (``CI`` set), where it must run:
``.ci/run`` installs it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]

# Injected at the top of a copy of the report: records errors from the very start, and
# after load writes what it found into the DOM, which --dump-dom prints.
CHECK = """<script>
window.__errors = [];
addEventListener("error", e => __errors.push(String(e.message || (e.target && (e.target.src || "").slice(0, 60)))), true);
const __ce = console.error.bind(console);
console.error = (...a) => { __errors.push(a.join(" ")); __ce(...a); };
addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const links = Array.from(document.querySelectorAll('a[href^="#"]'));
  const dangling = links.map(a => a.getAttribute("href").slice(1))
    .filter(id => !document.getElementById(id));
  const first = document.querySelector("main > section, main > nav");
  const out = document.createElement("pre");
  out.id = "__check";
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: __errors,
    width: Math.max(0, ...imgs.map(i => i.naturalWidth)), title: document.title,
    first: first ? (first.id || first.tagName) : null, links: links.length,
    dangling: dangling, summary_top: document.getElementById("summary") ?
      Math.round(document.getElementById("summary").getBoundingClientRect().top) : null,
    scale: Math.min(...imgs.map(i => i.clientWidth / i.naturalWidth)),
    nav: getComputedStyle(document.getElementById("contents")).position,
    jump: getComputedStyle(document.querySelector("a.tocjump")).display});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser() -> str:
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed on CI; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium); runs on CI")
    return exe


@pytest.fixture(scope="module")
def smoke(smoke_study):
    return smoke_study


def run_chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    env = {**os.environ, "HOME": str(tmp)}  # nothing of the user's profile is touched
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def console_errors(stderr: str) -> list[str]:
    """Console messages Chromium logged for the page (its own chatter is ignored)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_chromium(browser, smoke, tmp_path):
    report = smoke.root / "report.html"
    page = report.read_text(encoding="utf-8")
    probe = tmp_path / "report-check.html"
    probe.write_text(page.replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")

    proc = run_chromium(
        browser,
        tmp_path,
        "--window-size=1600,1000",
        "--virtual-time-budget=15000",
        "--dump-dom",
        probe.as_uri(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="__check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the check did not run; stderr: {proc.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] >= 5
    assert result["broken"] == [], result
    assert result["errors"] == [], result
    assert result["width"] > 100
    assert result["title"].startswith("Domain-specific GPT study")
    # The findings come first, above the contents, and every link lands on its target.
    assert result["first"] == "summary", result
    assert result["summary_top"] is not None and result["summary_top"] < 200, result
    assert result["links"] >= 10 and result["dangling"] == [], result
    # The contents stay in reach: a fixed side column at 1600 px (the jump link hidden).
    assert result["nav"] == "fixed" and result["jump"] == "none", result
    # Legible figures: drawn at 150 dpi, shown at 96 px per inch (scale 0.64), so that
    # the smallest text ('small': 8.3 pt) is 8.3 / 72 * 150 * 0.64 = 11 px on screen.
    smallest_px = 10 * 0.833 / 72 * 150 * result["scale"]
    assert smallest_px >= 10.5, result

    # The report as shipped (no injected script): a screenshot, and a quiet console.
    shot = tmp_path / "report.png"
    proc = run_chromium(
        browser,
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_errors(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    keep = os.environ.get("DOMAINGPT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
