"""The docker backend's own behaviour, on Podman: a warm pool reused job after job, a cold path
for other limits, a clean container for every job (also after a job attacks the sandbox's own
machinery), clear errors when there is no engine or no image, and the project's Podman started
on demand when the CLI finds no engine. The containment properties both backends share are in
test_sandbox_containment.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from autodidact.errors import SandboxUnavailableError
from environments.sandbox.base import ExecRequest, ExecResult
from environments.sandbox.docker import JOB_UID, LABEL, DockerSandbox
from environments.sandbox.podman import PodmanService, _answers, debian_mirror

pytest.importorskip("docker")

HOSTNAME = "print(open('/etc/hostname').read().strip())"
# Live processes of the job uid other than this job's own (its ancestors and their children:
# the wrapper shell, timeout, python3), by command line.
LEFTOVERS = """
import os
def stat(p):  # (state, parent pid) or None once the process is gone
    try:
        fields = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()
        return fields[0], int(fields[1])
    except OSError:
        return None
mine, pid = set(), os.getpid()
while pid > 1:
    mine.add(pid)
    pid = stat(pid)[1]
others = []
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        if os.stat('/proc/' + p).st_uid != os.getuid() or int(p) in mine:
            continue
        cmdline = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
    except OSError:
        continue
    st = stat(p)
    if st and st[0] != 'Z' and st[1] not in mine:
        others.append(cmdline)
print(sorted(others))
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def box(podman_service: PodmanService) -> AsyncIterator[DockerSandbox]:
    """One warm container, so that consecutive jobs share it."""
    sandbox = DockerSandbox(base_url=podman_service.base_url, pool_size=1)
    yield sandbox
    await sandbox.close()


def containers(service: PodmanService, sandbox: DockerSandbox) -> list[dict[str, Any]]:
    import docker

    client = docker.APIClient(base_url=service.base_url)
    try:
        return client.containers(all=True, filters={"label": f"{LABEL}={sandbox.label}"})  # type: ignore[no-any-return]
    finally:
        client.close()


async def job(sandbox: DockerSandbox, code: str, **limits: Any) -> ExecResult:
    return await sandbox.run(ExecRequest(code=textwrap.dedent(code), **limits))


@pytest.mark.docker
async def test_warm_jobs_reuse_the_pool_container(box: DockerSandbox, podman_service: PodmanService) -> None:
    first, second = await job(box, HOSTNAME), await job(box, HOSTNAME)
    assert first.ok and first.stdout == second.stdout
    assert [c["Id"][:12] for c in containers(podman_service, box)] == [first.stdout.strip()[:12]]


@pytest.mark.docker
async def test_other_limits_run_in_a_fresh_container_made_with_them(box: DockerSandbox) -> None:
    warm = await job(box, HOSTNAME)
    code = f"import os\n{HOSTNAME}\nst = os.statvfs('/tmp')\nprint(st.f_blocks * st.f_frsize // 2**20)"
    cold = await job(box, code, disk_mb=8)
    assert cold.ok and cold.stdout.split()[0] != warm.stdout.strip()
    assert cold.stdout.split()[1] == "8"  # the request's /tmp size


@pytest.mark.docker
async def test_without_a_pool_each_job_gets_a_container_that_is_removed(podman_service: PodmanService) -> None:
    sandbox = DockerSandbox(base_url=podman_service.base_url, pool_size=0)
    try:
        first, second = await job(sandbox, HOSTNAME), await job(sandbox, HOSTNAME)
    finally:
        await sandbox.close()
    assert first.ok and second.ok and first.stdout != second.stdout
    assert containers(podman_service, sandbox) == []


@pytest.mark.docker
async def test_each_job_finds_an_empty_tmp_and_no_process_of_an_earlier_job(box: DockerSandbox) -> None:
    left = await job(
        box,
        """
        import os
        for d in ('/tmp', '/dev/shm'):
            open(f'{d}/file', 'w').write('x')
            open(f'{d}/.hidden', 'w').write('x')
            os.mkdir(f'{d}/locked')
            open(f'{d}/locked/inner', 'w').write('x')
            os.chmod(f'{d}/locked', 0)
        if os.fork() == 0:
            os.setsid()
            os.execv('/usr/bin/sleep', ['sleep', '300'])
        print(os.getuid())
        """,
    )
    assert left.ok and left.stdout.strip() == str(JOB_UID), left
    after = await job(box, f"import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'))\n{LEFTOVERS}")
    assert after.stdout.splitlines() == ["[] []", "[]"], after


@pytest.mark.docker
async def test_a_job_that_kills_its_wrapper_leaves_nothing_behind(box: DockerSandbox) -> None:
    r = await job(
        box,
        """
        import os, signal
        if os.fork() == 0:
            os.setsid()
            os.execv('/usr/bin/sleep', ['sleep', '300'])
        pid = os.getppid()  # timeout, then the wrapper shell
        wrapper = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
        os.kill(wrapper, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        """,
    )
    assert not r.ok
    after = await job(box, LEFTOVERS)
    assert after.ok and after.stdout.strip() == "[]", after


@pytest.mark.docker
async def test_a_job_that_stops_its_timeout_is_killed_from_the_host(box: DockerSandbox) -> None:
    r = await job(
        box,
        """
        import os, signal
        timeout = os.getppid()
        wrapper = int(open(f'/proc/{timeout}/stat').read().rsplit(')', 1)[1].split()[1])
        os.kill(timeout, signal.SIGSTOP)  # neither would kill us now
        os.kill(wrapper, signal.SIGSTOP)
        while True:
            pass
        """,
        timeout_s=1,
    )
    assert r.timed_out and r.duration_s < 5, r
    after = await job(box, LEFTOVERS)
    assert after.ok and after.stdout.strip() == "[]", after


@pytest.mark.docker
async def test_stdin_stdout_stderr_and_exit_code_pass_through(box: DockerSandbox) -> None:
    r = await job(
        box,
        "import sys\ndata = sys.stdin.read()\nprint(len(data), data[:3])\nprint('oops', file=sys.stderr)\nsys.exit(3)",
        stdin="abc" * 400_000,
    )
    assert (r.stdout, r.stderr, r.exit_code) == ("1200000 abc\n", "oops\n", 3)


@pytest.mark.docker
async def test_a_cpu_limit_hit_is_a_timeout_with_only_the_jobs_own_stderr(box: DockerSandbox) -> None:
    r = await job(box, "import sys\nprint('start', file=sys.stderr, flush=True)\nwhile True: pass", cpu_s=1)
    assert r.timed_out and r.exit_code == -24 and r.stderr == "start\n", r  # -SIGXCPU; no shell messages


@pytest.mark.docker
async def test_a_missing_image_is_a_clear_error(podman_service: PodmanService) -> None:
    sandbox = DockerSandbox(base_url=podman_service.base_url, image="localhost/no-such-image:x")
    with pytest.raises(
        SandboxUnavailableError, match=r"localhost/no-such-image:x .*python -m environments.sandbox.podman image"
    ):
        await sandbox.run(ExecRequest(code="print(1)"))
    await sandbox.close()


async def test_an_unreachable_engine_is_a_clear_error(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nothing.sock"
    sandbox = DockerSandbox(base_url=url)
    with pytest.raises(SandboxUnavailableError, match=rf"no Docker-compatible engine answers at {url}.*podman"):
        await sandbox.run(ExecRequest(code="print(1)"))
    await sandbox.close()


def _copy_image(into: PodmanService, tmp_path: Path) -> None:
    """The sandbox image from the project's default Podman storage (built there when missing) into ``into``."""
    source = PodmanService()
    try:
        source.ensure_image()
    except SandboxUnavailableError as e:
        pytest.skip(f"docker backend unavailable: {e}")
    rootfs = source.root / "rootfs-bookworm-python3.tar"  # what ensure_image imported (~7 s to import again)
    if rootfs.exists():
        into.podman("import", str(rootfs), into.image, timeout_s=600)
    else:
        saved = tmp_path / "image.tar"
        source.podman("save", "-o", str(saved), source.image, timeout_s=600)
        into.podman("load", "-i", str(saved), timeout_s=600)
        saved.unlink()


@pytest.mark.docker
def test_the_cli_starts_the_projects_podman_when_no_engine_answers(tmp_path: Path, _isolated_home: Path) -> None:
    """`autodidact sandbox exec --backend docker` with no engine running starts the project's Podman
    service itself, says so in one line on stderr, runs the job, and leaves the service running for
    the next call. The service's root is this test's own (``$AUTODIDACT_CACHE``), so none runs
    before, whatever the session's fixture started; the test stops it after."""
    if _answers(Path("/var/run/docker.sock")):
        pytest.skip("a Docker Engine answers at /var/run/docker.sock: the sandbox uses it, not Podman")
    cache = tmp_path / "cache"
    service = PodmanService(cache / "podman")
    program = tmp_path / "p.py"
    program.write_text("import os\nprint('hi from', os.getuid())\n")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env |= {"AUTODIDACT_CACHE": str(cache), "AUTODIDACT_HOME": str(_isolated_home), "COLUMNS": "200"}
    argv = [sys.executable, "-m", "autodidact.cli", "sandbox", "exec", str(program), "--backend", "docker"]
    try:
        _copy_image(service, tmp_path)
        assert not _answers(service.socket_path)
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"hi from {JOB_UID}\n"
        note = f"starting the project's Podman service at {service.base_url} (no Docker engine answers;"
        assert first.stderr.startswith(note) and first.stderr.count("\n") == 1, first.stderr
        assert _answers(service.socket_path)  # still running after the CLI exited
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert (second.returncode, second.stdout, second.stderr) == (0, first.stdout, "")  # found, not started again
    finally:
        service.stop(even_if_not_started_here=True)
        shutil.rmtree(cache, ignore_errors=True)
    assert not _answers(service.socket_path) and not service.pid_file.exists()


async def test_a_docker_host_that_does_not_answer_stays_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DOCKER_HOST names the engine to use: when it does not answer, no Podman is started in its place."""
    url = f"unix://{tmp_path}/elsewhere.sock"
    monkeypatch.setenv("DOCKER_HOST", url)
    monkeypatch.setenv("AUTODIDACT_CACHE", str(tmp_path / "cache"))
    sandbox = DockerSandbox()
    with pytest.raises(SandboxUnavailableError, match=rf"no Docker-compatible engine answers at {url}"):
        await sandbox.run(ExecRequest(code="print(1)"))
    await sandbox.close()
    assert not (tmp_path / "cache" / "podman").exists()


def test_the_podman_config_lives_under_its_own_root(tmp_path: Path) -> None:
    service = PodmanService(tmp_path / "podman")
    service.write_config()
    conf = (tmp_path / "podman" / "containers.conf").read_text()
    assert 'runtime = "runc"' in conf and 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]' in conf
    assert f'graphroot = "{tmp_path}/podman/storage"' in (tmp_path / "podman" / "storage.conf").read_text()
    assert service.base_url == f"unix://{tmp_path}/podman/podman.sock"
    assert service.env()["CONTAINERS_CONF"] == str(tmp_path / "podman" / "containers.conf")


def test_the_debian_mirror_is_the_one_apt_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTODIDACT_DEBIAN_MIRROR", raising=False)
    one_line = tmp_path / "a.list"
    one_line.write_text("deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n")
    deb822 = tmp_path / "b.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://other.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror(iter([deb822, one_line])) == "http://other.example/debian"
    assert debian_mirror(iter([one_line])) == "http://mirror.example/debian"
    assert debian_mirror(iter([tmp_path / "missing.list"])) == "http://deb.debian.org/debian"
