"""Start the KServe predictor as a subprocess on free 127.0.0.1 ports, for tests and local tools.

    with start_predictor(model_dir, max_queue=4) as (http_url, grpc_url):
        ...  # http_url "http://127.0.0.1:PORT" (V1, V2 REST); grpc_url "127.0.0.1:PORT" (V2 gRPC, no scheme)

A subprocess because kserve.ModelServer must own the main thread of its process, and because kserve and
tritonclient.grpc cannot be imported into one process: a caller importing neither here can use any client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_LINE = "musicgen predictor ready:"  # what serving.predictor prints once HTTP and gRPC both listen


def free_port() -> int:
    """A port free now (another process could take it before the server binds: rare, and it fails loudly)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class PredictorProcess:
    """`python -m serving.predictor` on free ports, its output in a log file; `stop()` sends SIGTERM."""

    def __init__(
        self, model_dir: str | Path, backend: str = "auto", http_port: int = 0, grpc_port: int = 0, **options: Any
    ) -> None:
        """`options` become `--name=value` flags (max_batch, max_queue, model_name...); port 0: a free one."""
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        self.http_url, self.grpc_url = f"http://{HOST}:{self.http_port}", f"{HOST}:{self.grpc_port}"
        flags = {"model_dir": model_dir, "backend": backend, "host": HOST, **options}
        flags.update(http_port=self.http_port, grpc_port=self.grpc_port)
        command = [sys.executable, "-m", "serving.predictor", *(f"--{name}={value}" for name, value in flags.items())]
        self.log_file = tempfile.NamedTemporaryFile(prefix="predictor-", suffix=".log", delete=False)  # noqa: SIM115
        # A file, not a pipe: KServe logs every request, and an unread pipe would block the server when full.
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait for the server's ready line (both servers listen) and V2 REST's ready; raise with the log if not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the predictor exited with code {self.process.returncode}:\n{self.log()}")
            if READY_LINE in self.log() and self._http_ready():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the predictor was not ready within {timeout_s:.0f} s:\n{self.log()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code (0: it stopped cleanly)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def cleanup(self) -> None:
        Path(self.log_file.name).unlink(missing_ok=True)

    def _http_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


@contextmanager
def start_predictor(model_dir: str | Path, backend: str = "auto", **options: Any) -> Iterator[tuple[str, str]]:
    """A ready predictor serving `model_dir`: yields (http_url, grpc_url) and stops it on exit."""
    predictor = PredictorProcess(model_dir, backend, **options)
    try:
        predictor.wait_ready()
        yield predictor.http_url, predictor.grpc_url
    finally:
        predictor.stop()
        predictor.cleanup()
