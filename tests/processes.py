"""Stopping the worker processes a test or a benchmark started."""

from __future__ import annotations

import subprocess


def stop_all(processes: list[subprocess.Popen], timeout: float) -> None:
    """Ask every process to stop, then wait up to `timeout` seconds for each; kill those that do not."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
