"""The sandbox interface: run a program under limits, get a typed result.

Limits are part of each :class:`ExecRequest`; a backend (``process``: bubblewrap with a warm
pool; ``docker``: Docker Engine or Podman) enforces them and reports what happened in an
:class:`ExecResult`. Network is off unless the request allows it — on backends that can
enforce that (see each backend's docstring for what it protects against).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import Field

from autodidact.types import Record


class ExecRequest(Record):
    """A program to run and the limits to run it under."""

    code: str = Field(description="Python source to run")
    stdin: str = ""
    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit")
    cpu_s: int = Field(10, ge=1, description="CPU-time limit")
    memory_mb: int = Field(1024, ge=16, description="address-space limit")
    max_processes: int = Field(32, ge=1)
    max_output_bytes: int = Field(64_000, ge=1, description="stdout and stderr are each cut to this")
    max_file_mb: int = Field(16, ge=0, description="largest file the program may write")
    disk_mb: int = Field(64, ge=1, description="size of the job's private /tmp")
    network: bool = False


class ExecResult(Record):
    """What happened when a program ran."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Exited 0 within its limits."""
        return self.exit_code == 0 and not self.timed_out and not self.memory_exceeded


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted code under limits."""

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request.code`` and report the outcome; never raises for the program's faults.

        Raises:
            SandboxUnavailableError: a fault of the sandbox itself (its worker, container or
                engine died or cannot be reached), when the program's outcome is unknown.
        """
        ...

    async def close(self) -> None:
        """Stop warm workers or containers (later runs may start new ones)."""
        ...
