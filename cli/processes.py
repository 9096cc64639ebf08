"""Running the API and Celery workers as `invoicechain` subprocesses (the demo, the
end-to-end tests, the pipeline benchmark): each in its own process group, so that stopping
one also ends a worker's pool children, even when the worker has to be killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name: str, args: list[str], env: dict[str, str], logs: Path | None = None) -> subprocess.Popen:
    """`python -m cli <args>` in a new session; output goes to `<logs>/<name>.log`,
    or to this process's own output when `logs` is None."""
    cmd = [sys.executable, "-m", "cli", *args]
    if logs is None:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    with open(logs / f"{name}.log", "w") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def tail(logs: Path, name: str, chars: int = 3000) -> str:
    path = logs / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def wait_ready(base_url: str, api: subprocess.Popen, logs: Path, timeout: float = 90) -> None:
    """Wait until the API answers /readyz (database and broker reachable)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"API exited with {api.returncode}: " + tail(logs, "api"))
        try:
            if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("API did not become ready: " + tail(logs, "api"))


def stop(procs: Iterable[subprocess.Popen], grace: float = 30) -> None:
    """SIGTERM every process group (warm shutdown), then SIGKILL the groups still running."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
