"""Screenshots of the dashboard in a real browser (headless Chromium driven by Selenium).

Usage (from the repository root)::

    python -m perfmodel.dashboard.screenshots --out docs/img            # starts a server on localhost, shoots, stops it
    python -m perfmodel.dashboard.screenshots --url http://localhost:8501 --out /tmp/shots

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium``
Python package.  Prints, per shot, the seconds from the last widget change (or
page load) until the app reported that its script run finished and every chart
had drawn: the latency a user sees.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Shot:
    """One screenshot: a page path, optional widget actions, the PNG name."""

    name: str
    path: str = ""
    actions: tuple[Callable, ...] = field(default_factory=tuple)
    height_px: int | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    """Start ``streamlit run dashboard/app.py`` on localhost:``port`` and wait until it answers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "localhost",
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the dashboard did not answer on port {port} within 60 s")


def make_driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ):
        opts.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


_DONE_JS = """
const app = document.querySelector('[data-testid="stApp"]');
if (!app) return false;
const state = app.getAttribute('data-test-script-state');
if (state === 'running') return false;
if (document.querySelector('[data-testid="stSkeleton"]')) return false;
const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"]');
for (const c of charts) { if (!c.querySelector('canvas, svg')) return false; }
return document.querySelector('[data-testid="stMain"] h1') !== null;
"""


_SIGNATURE_JS = """
const m = document.querySelector('[data-testid="stMain"]');
return m ? m.innerText : '';
"""


def signature(driver) -> str:
    """Text of the main area (a new scenario changes at least its caption and metrics)."""
    return driver.execute_script(_SIGNATURE_JS)


def wait_rendered(
    driver, timeout_s: float = 30.0, settle_s: float = 0.25, changed_from: str | None = None
) -> float:
    """Block until the script run finished and every chart drew; return the seconds waited.

    With ``changed_from``, also wait until :func:`signature` differs from it
    (the new run's output has reached the page).
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if (changed_from is None or signature(driver) != changed_from) and driver.execute_script(_DONE_JS):
            waited = time.perf_counter() - t0
            time.sleep(settle_s)  # let the charts' transitions finish before the picture
            if driver.execute_script(_DONE_JS):
                return waited
        time.sleep(0.02)
    raise TimeoutError("the page did not finish rendering")


def set_number(label: str, value: int) -> Callable:
    """An action that types ``value`` into the number input labelled ``label``."""

    def act(driver) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stNumberInput"]'):
            if box.find_element(By.CSS_SELECTOR, "label").text.strip() == label:
                inp = box.find_element(By.CSS_SELECTOR, "input")
                inp.send_keys(Keys.CONTROL, "a")
                inp.send_keys(str(value))
                t = time.perf_counter()
                inp.send_keys(Keys.ENTER)
                return t
        raise LookupError(f"no number input labelled {label!r}")

    return act


def select_option(label: str, option_text: str) -> Callable:
    """An action that picks ``option_text`` in the selectbox labelled ``label``."""

    def act(driver) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"]'):
            if box.find_element(By.CSS_SELECTOR, "label").text.strip() == label:
                inp = box.find_element(By.CSS_SELECTOR, "input")
                inp.click()
                inp.send_keys(option_text)
                time.sleep(0.2)
                t = time.perf_counter()
                inp.send_keys(Keys.ENTER)
                return t
        raise LookupError(f"no selectbox labelled {label!r}")

    return act


def click_button(label: str) -> Callable:
    """An action that clicks the (form submit) button labelled ``label``."""

    def act(driver) -> float:
        from selenium.webdriver.common.by import By

        for b in driver.find_elements(By.CSS_SELECTOR, "button"):
            if b.text.strip() == label:
                t = time.perf_counter()
                b.click()
                return t
        raise LookupError(f"no button labelled {label!r}")

    return act


SHOTS = (
    Shot("whatif", ""),
    Shot(
        "whatif_h100_tp4_128k",
        "",
        (
            select_option("Model", "llama-3-70b"),
            select_option("GPU", "H100 SXM5"),
            set_number("Tensor parallel (TP)", 4),
            set_number("Context length (tokens)", 128000),
        ),
    ),
    Shot("whatif_error", "", (set_number("Tensor parallel (TP)", 3),), height_px=900),
    Shot(
        "knobs",
        "knobs",
        (select_option("KV format", "fp8"), set_number("Sliding window (tokens, 0: none)", 32768)),
    ),
    Shot("planners_moe", "planners"),
    Shot("serving", "serving"),
    Shot("validation", "validation"),
)


def shoot(url: str, out: Path, shots=SHOTS, width: int = 1400) -> list[tuple[str, float]]:
    """Take each shot; return (name, seconds until rendered after the last action) pairs."""
    out.mkdir(parents=True, exist_ok=True)
    driver = make_driver(width, 1000)
    timings = []
    try:
        for shot in shots:
            driver.set_window_size(width, 1000)
            driver.get(url.rstrip("/") + "/" + shot.path)
            waited = wait_rendered(driver, timeout_s=60)
            for act in shot.actions:
                before = signature(driver)
                t0 = act(driver)
                wait_rendered(driver, changed_from=before)
                waited = time.perf_counter() - t0
            height = shot.height_px or driver.execute_script(
                "const m = document.querySelector('[data-testid=\"stMain\"]');"
                "return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);"
            )
            driver.set_window_size(width, min(int(height) + 40, 6000))
            wait_rendered(driver)
            driver.save_screenshot(str(out / f"{shot.name}.png"))
            timings.append((shot.name, waited))
    finally:
        driver.quit()
    return timings


#: Widget changes timed by ``--timing``: each one is a scenario not seen before (nothing cached).
TIMED_CHANGES = (
    ("context 64000", set_number("Context length (tokens)", 64000)),
    ("context 200000", set_number("Context length (tokens)", 200000)),
    ("GPU -> H100 SXM", select_option("GPU", "H100 SXM5")),
    ("model -> llama-3-70b", select_option("Model", "llama-3-70b")),
    ("TP 4", set_number("Tensor parallel (TP)", 4)),
    ("batch 2", set_number("Batch (concurrent users)", 2)),
    ("output tokens 1000", set_number("Output tokens", 1000)),
    ("model -> deepseek-v3", select_option("Model", "deepseek-v3")),
    ("TP 8", set_number("Tensor parallel (TP)", 8)),
    ("GPU -> H200", select_option("GPU", "H200")),
)


def time_updates(url: str, width: int = 1400) -> list[tuple[str, float]]:
    """Seconds from each widget change on the What-if page until the page has fully re-rendered."""
    driver = make_driver(width, 1400)
    out = []
    try:
        driver.get(url)
        wait_rendered(driver, timeout_s=60)
        for name, act in TIMED_CHANGES:
            before = signature(driver)
            t0 = act(driver)  # the moment of the keystroke that changes the value
            wait_rendered(driver, settle_s=0.0, changed_from=before)
            out.append((name, time.perf_counter() - t0))
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument(
        "--url", help="an already running dashboard (default: start one on a free localhost port)"
    )
    ap.add_argument("--only", nargs="*", help="names of the shots to take")
    ap.add_argument(
        "--timing",
        action="store_true",
        help="also time full What-if updates (widget change to fully drawn page)",
    )
    args = ap.parse_args(argv)
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print(
            "error: needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
            file=sys.stderr,
        )
        return 2
    shots = [s for s in SHOTS if not args.only or s.name in args.only]
    proc = None
    url = args.url
    if url is None:
        port = _free_port()
        proc = start_server(port)
        url = f"http://localhost:{port}"
    try:
        timings = shoot(url, args.out, shots)
        updates = time_updates(url) if args.timing else []
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{'shot':<28} {'seconds to rendered':>20}")
    for name, s in timings:
        print(f"{name:<28} {s:>20.2f}")
    if updates:
        print(f"\n{'What-if update (uncached)':<28} {'seconds':>20}")
        for name, s in updates:
            print(f"{name:<28} {s:>20.2f}")
        vals = sorted(s for _, s in updates)
        print(f"{'median / max':<28} {vals[len(vals) // 2]:>13.2f} / {vals[-1]:.2f}")
    print(f"browser: {os.path.basename(shutil.which('chromium') or '')}; screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
