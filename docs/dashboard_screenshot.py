"""Make docs/dashboard.png: real traffic through the real front, then the Evidently dashboard in headless Chromium.

Serves the trained model with monitoring's request logger, sends the evaluation's held-out prompts for a few
minutes, then prompts the reference never saw (other languages, unseen genres), and photographs
`musicops monitor ui` over one-minute windows. About 8 minutes on 2 cores.

    python docs/dashboard_screenshot.py --model artifacts/model --evaluation artifacts/evaluation
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from monitoring.reference import build_reference, read_reference
from monitoring.request_log import RequestLogger
from monitoring.traffic import drive_front
from serving.front.app import FrontSettings, create_app, serve_in_thread
from serving.launch import free_port
from serving.sources import LocalSource
from settings import paths

SHIFTED = [
    "una canción de salsa alegre con trompetas y congas, muy bailable",
    "激しいヘビーメタル、速いドラムと歪んだギター",
    "тихая колыбельная на балалайке с хором",
    "gregorian chant with a choir of monks in a cathedral",
    "dubstep with a wobbling bass drop and glitchy synths",
    "k-pop dance track with bright synths, 128 BPM",
]


def traffic(url: str, prompts: list[str], minutes: float, duration: float) -> int:
    """Send `prompts` round and round for `minutes`; returns how many requests were served."""
    sent, deadline = 0, time.monotonic() + 60 * minutes
    while time.monotonic() < deadline:
        drive_front(url, [prompts[sent % len(prompts)]], count=1, duration=duration, seed=sent)
        sent += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=paths.MODEL)
    parser.add_argument("--evaluation", type=Path, default=paths.EVALUATION)
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of each kind of traffic")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference = build_reference(args.evaluation, args.model, root / "reference")
        prompts = list(read_reference(reference)["prompt"])
        logger = RequestLogger.from_reference(root / "log", reference, args.model, flush_rows=8, flush_seconds=2)
        app = create_app(LocalSource(str(args.model)), FrontSettings(request_log=logger))
        with serve_in_thread(app) as url:
            print(f"reference-like traffic: {traffic(url, prompts, args.minutes, 2.0)} requests")
            print(f"shifted traffic: {traffic(url, SHIFTED, args.minutes, 2.0)} requests")
        logger.close()

        params = root / "params.yaml"
        monitor = {"workspace": str(root / "workspace"), "window": "1m", "min_rows": 3}
        params.write_text(yaml.safe_dump({"monitor": monitor}))
        port = free_port()
        command = [sys.executable, "-m", "musicops.cli", "monitor", "ui", "--params", str(params), "--port", str(port)]
        command += ["--log-dir", str(root / "log"), "--reference-dir", str(reference), "--model", str(args.model)]
        ui = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in ui.stdout:
                print(line.rstrip())
                if line.startswith("dashboard:"):
                    break
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_text("musicops").first.click()
                page.wait_for_timeout(6000)  # the panels fetch their series
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
            print(f"screenshot: {args.out}")
        finally:
            ui.terminate()
            ui.wait(30)


if __name__ == "__main__":
    main()
