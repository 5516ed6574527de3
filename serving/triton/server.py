"""A real Triton Inference Server on this machine, for tests and local trials of the model repository.

No Triton package installs on Python 3.11 except the server inside `nvidia-pytriton`'s wheel (Triton 2.51,
CPU, Python backend only). That wheel needs numpy<2, so it lives in its own environment, `.venv-triton`
(`make triton-env`), with torch, transformers and ONNX Runtime: what the repository's `musicgen` model imports.

`TritonServer` starts the `tritonserver` binary from that environment over a repository, bound to 127.0.0.1 on
free ports, and stops it (its whole process group). Triton's Python stubs run the environment's Python with the
project on PYTHONPATH. `with_onnx_stand_ins` copies a repository written by components/triton_repository.py and
serves its ONNX models through the Python backend (serving/triton/onnx_standin.py), the one part that cannot run
here: pytriton's Triton has no onnxruntime backend.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: serving/triton/server.py is two folders down
TRITON_VENV = ROOT / ".venv-triton"
STAND_IN = Path(__file__).with_name("onnx_standin.py")  # a file copied into repositories, not an import
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonUnavailable(RuntimeError):
    """No Triton server in this checkout's `.venv-triton`; the message says how to make one."""


def site_packages(venv: Path = TRITON_VENV) -> Path:
    return venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"


def triton_home(venv: Path = TRITON_VENV) -> Path:
    """The Triton distribution inside the environment's pytriton package (bin/, backends/, stubs)."""
    home = site_packages(venv) / "pytriton" / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise TritonUnavailable(f"no Triton server in {venv}: run `make triton-env` (installs nvidia-pytriton there)")
    return home


# This server's stubs embed the machine's Python, whose own numpy (2.x) they cannot read tensors with, and they
# import a model as the package `<version>.model`, before the backend's utils. A version folder's __init__.py runs
# first: importing the utils there (see _backends) puts .venv-triton first, and model.py stays byte for byte as written.
PACKAGES_FIRST = "import triton_python_backend_utils  # noqa: F401  (serving/triton/server.py: .venv-triton first)\n"


def with_onnx_stand_ins(repository: Path, out_dir: Path) -> Path:
    """A copy of `repository` for this server: its onnxruntime-backend models run on the Python backend (same
    configs otherwise), and every Python model's version folder gets an __init__.py that imports the backend's
    utils first (see PACKAGES_FIRST); no model.py of the repository is changed."""
    shutil.copytree(repository, out_dir)
    for config in out_dir.glob("*/config.pbtxt"):
        text = config.read_text()
        if 'backend: "onnxruntime"' in text:
            config.write_text(text.replace('backend: "onnxruntime"', 'backend: "python"'))
            for version in config.parent.iterdir():
                if (version / "model.onnx").exists():
                    shutil.copy2(STAND_IN, version / "model.py")
    for model_py in out_dir.glob("*/*/model.py"):
        init = model_py.with_name("__init__.py")
        if not init.exists():
            init.write_text(PACKAGES_FIRST)
    return out_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonServer:
    """`with TritonServer(repository) as server:` a ready Triton at `server.http_url` / `server.grpc_url`."""

    def __init__(self, repository: Path, venv: Path = TRITON_VENV, log: Path | None = None, timeout_s: float = 120):
        self.repository, self.venv, self.timeout_s = Path(repository), venv, timeout_s
        self.home = triton_home(venv)
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.http_url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"
        self.log = log
        self.process: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    def _backends(self) -> Path:
        # The Python backend looks for its stub beside libtriton_python.so; the wheel keeps one stub per Python.
        self._scratch = tempfile.TemporaryDirectory(prefix="triton-backends-")
        python = Path(self._scratch.name) / "python"
        python.mkdir()
        for path in (self.home / "backends" / "python").iterdir():
            if path.is_file():
                shutil.copy2(path, python / path.name)
        shutil.copy2(self.home / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub", python)
        # The stubs embed the Python they were built for and ignore PYTHONPATH. This copy of the backend's
        # triton_python_backend_utils.py puts the environment's packages (numpy<2) and the project first on
        # sys.path when imported, which every version folder's __init__.py does first (see PACKAGES_FIRST).
        utils = python / "triton_python_backend_utils.py"
        paths = [str(site_packages(self.venv)), str(ROOT)]
        utils.write_text(
            f"import sys as _sys\n_sys.path[:0] = {paths!r}  # serving/triton/server.py\n" + utils.read_text()
        )
        return python.parent

    def _environment(self) -> dict[str, str]:
        libraries = [sysconfig.get_config_var("LIBDIR"), str(site_packages(self.venv) / "nvidia_pytriton.libs")]
        environment = dict(os.environ)
        environment["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, environment.get("LD_LIBRARY_PATH", "")])
        environment["OMP_NUM_THREADS"] = "1"
        return environment

    def start(self) -> TritonServer:
        command = [
            str(self.home / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=10",
        ]
        output = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            command, env=self._environment(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver was not ready in {self.timeout_s:g} s: {self.tail()}")

    def tail(self, characters: int = 3000) -> str:
        """The end of the server's log (what failed, when it did)."""
        if self.log is None or not Path(self.log).is_file():
            return "(no log kept)"
        return re.sub(r"\s+\n", "\n", Path(self.log).read_text(errors="replace")[-characters:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
