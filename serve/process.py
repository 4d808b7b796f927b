"""Start ``sentiflow serve`` as a child process and learn its URL (for endpoint managers and benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import SentiflowError

LISTENING_PREFIX = "listening on "


@dataclass
class ServerProcess:
    """A running ``sentiflow serve`` child."""

    process: subprocess.Popen
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL after ``timeout``; returns the exit
        code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_server_process(
    model: str,
    port: int = 0,
    *,
    name: str | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    stderr_path: Path | None = None,
    timeout: float = 120,
) -> ServerProcess:
    """Launch ``sentiflow serve --model MODEL --port PORT`` and wait for its ``listening on URL`` line."""
    command = [sys.executable, "-c", "from sentiflow.cli import main; main()", "serve", "--model", model]
    command += ["--port", str(port), *(["--name", name] if name else []), *extra_args]
    stderr = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})}
    )
    if stderr_path:
        stderr.close()
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    first = line[0].strip() if line else ""
    if not first.startswith(LISTENING_PREFIX):
        process.kill()
        process.wait()
        raise SentiflowError(
            f"sentiflow serve --model {model} did not start (first output {first!r}); "
            f"see {stderr_path or 'its stderr'} and check the model path"
        )
    return ServerProcess(process, first.removeprefix(LISTENING_PREFIX))
