"""Sandboxes for the environment tests: each backend once per session, and a fixture over both.

The docker backend runs against Podman as ``environments.sandbox.podman`` sets it up (the
image is built when missing: 30–90 s, once). Where that cannot start — podman not installed, not
root, no Debian mirror — the docker cases are skipped and the reason is printed.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from autodidact.errors import SandboxUnavailableError
from environments.sandbox.base import Sandbox
from environments.sandbox.podman import PodmanService


@dataclass(frozen=True)
class Backend:
    """A sandbox under test and its backend's name."""

    name: str
    sandbox: Sandbox


@pytest.fixture(scope="session")
def podman_service() -> Iterator[PodmanService]:
    """A Podman API service for the whole session (started here unless already running)."""
    try:
        service = PodmanService()
        service.start()
    except SandboxUnavailableError as e:
        print(f"\ndocker backend tests skipped: {e}")
        pytest.skip(f"docker backend unavailable: {e}")
    yield service
    service.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_backend(podman_service: PodmanService) -> AsyncIterator[Backend]:
    pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install -e '.[docker]')")
    from environments.sandbox.docker import DockerSandbox

    sandbox = DockerSandbox(base_url=podman_service.base_url)
    await sandbox.start()
    yield Backend("docker", sandbox)
    await sandbox.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def process_backend() -> AsyncIterator[Backend]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (make setup installs it)")
    from environments.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox()
    yield Backend("process", sandbox)
    await sandbox.close()


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each sandbox backend in turn (the same instance for every test of the session)."""
    return request.getfixturevalue(f"{request.param}_backend")  # type: ignore[no-any-return]
