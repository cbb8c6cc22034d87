"""A Podman engine for the docker sandbox, set up the way this project runs it.

Podman serves the Docker API, so :class:`~environments.sandbox.docker.DockerSandbox` drives it
where no Docker Engine runs. This module owns everything that takes:

* a config of its own — ``containers.conf`` (``runtime = "runc"``, cgroupfs, file event log,
  ``default_ulimits`` within the host's hard limits) and ``storage.conf`` — with podman's
  storage, run state and API socket kept under one project-owned directory
  (``$AUTODIDACT_CACHE/podman``, default ``~/.cache/autodidact/podman``); podman is pointed at
  it through ``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF``, so the host's own podman
  containers and images are neither used nor touched;
* the sandbox image ``localhost/autodidact-sandbox:bookworm-python3``, built once from a Debian rootfs
  (``debootstrap --variant=minbase --include=python3 bookworm``, from the Debian mirror
  apt uses here, or ``$AUTODIDACT_DEBIAN_MIRROR``; ``/etc/shadow`` and ``/root`` removed) and imported with ``podman import``; the
  rootfs tarball is cached beside the storage, so a rebuild skips debootstrap;
* the API service (``podman system service --time=0 unix://…/podman.sock``), started and
  stopped by :class:`PodmanService`; :func:`start_on_demand` starts it for a docker sandbox
  that was given no engine and found none answering (it then keeps running for later sandboxes
  and other processes, until ``python -m environments.sandbox.podman stop``).

Needs: ``podman``, ``runc`` and ``catatonit`` (the containers' init); building the image needs
root and ``debootstrap`` (``apt-get install podman runc catatonit debootstrap``). Building takes
30–90 s on a fresh machine (mostly debootstrap's downloads; ~130 MB of rootfs) and ~0.3 s when
the image exists.

Example:
    >>> with PodmanService() as podman:  # doctest: +SKIP
    ...     async with DockerSandbox(base_url=podman.base_url) as box:
    ...         print((await box.run(ExecRequest(code="print(1)"))).stdout)

From a shell: ``python -m environments.sandbox.podman image`` builds the image (``make setup``
runs it), ``… start`` starts the service and prints its ``DOCKER_HOST``, ``… stop`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from autodidact.errors import SandboxUnavailableError
from environments.sandbox.docker import DEFAULT_IMAGE, LABEL

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CATATONIT_PATHS = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")
# Files the image does without: host-like secrets and what only people read.
_STRIP = (
    *("etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-", "root"),
    *("usr/share/doc", "usr/share/man", "usr/share/info", "var/cache/apt", "var/lib/apt/lists"),
)

_HEADER = "# Written by environments/sandbox/podman.py (PodmanService.write_config); edits are overwritten.\n"
_CONTAINERS_CONF = (
    _HEADER
    + """
[containers]
# The engine's default exceeds the hard limits of some hosts.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
# crun fails on hosts with hybrid (v1) cgroups; runc works.
runtime = "runc"
cgroup_manager = "cgroupfs"
# How long an exec's conmon (~3 MB) lingers before cleaning up; Docker's 300 s add up to
# gigabytes under a stream of sandbox jobs.
exit_command_delay = 5
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/libpod"
static_dir = "{root}/storage/libpod"
volume_path = "{root}/storage/volumes"
lock_type = "file"

[network]
network_config_dir = "{root}/networks"
"""
)
_STORAGE_CONF = (
    _HEADER
    + """
[storage]
driver = "{driver}"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""
)


def default_root() -> Path:
    """Where podman's config, storage and socket live: ``$AUTODIDACT_CACHE/podman`` (default ``~/.cache/autodidact/podman``)."""
    return Path(os.environ.get("AUTODIDACT_CACHE", Path.home() / ".cache" / "autodidact")) / "podman"


def debian_mirror(sources: Iterator[Path] | None = None) -> str:
    """The Debian mirror apt uses on this machine for ``bookworm`` main (or ``$AUTODIDACT_DEBIAN_MIRROR``).

    Reads one-line ``.list`` files and deb822 ``.sources`` files; falls back to deb.debian.org.

    Example:
        >>> debian_mirror()  # doctest: +SKIP
        'http://deb.debian.org/debian'
    """
    if os.environ.get("AUTODIDACT_DEBIAN_MIRROR"):
        return os.environ["AUTODIDACT_DEBIAN_MIRROR"]
    if sources is None:
        names = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
        sources = iter(Path(n) for n in names)
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uris, suites, components in entries:
            if SUITE in suites and "main" in components and uris:
                return uris[0].rstrip("/")
    return DEFAULT_MIRROR


def _one_line_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb":
            if words[1].startswith("["):  # options: [arch=amd64 signed-by=…]
                while words and not words[1].endswith("]"):
                    words.pop(1)
                words.pop(1)
            if len(words) >= 3:
                yield [words[1]], [words[2]], words[3:]


def _deb822_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
            yield fields.get("uris", []), fields.get("suites", []), fields.get("components", [])


class PodmanService:
    """A ``podman system service`` on a project-owned config and storage (see the module docstring).

    Args:
        root: the directory for config, storage, rootfs cache, socket and logs (default :func:`default_root`).
        image: the sandbox image :meth:`ensure_image` builds.
        mirror: the Debian mirror for debootstrap (default :func:`debian_mirror`).
        storage_driver: containers/storage's driver; ``overlay`` needs a root directory that is
            not itself on overlayfs (use ``vfs`` there; slower, more disk).

    Example:
        >>> service = PodmanService()  # doctest: +SKIP
        >>> service.start()  # builds the image first when it is missing  # doctest: +SKIP
        'unix:///root/.cache/autodidact/podman/podman.sock'
        >>> service.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        image: str = DEFAULT_IMAGE,
        mirror: str | None = None,
        storage_driver: str = "overlay",
    ) -> None:
        self.root = (root or default_root()).resolve()
        self.image = image
        self.mirror = mirror
        self.storage_driver = storage_driver
        self.socket_path = self.root / "podman.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The Docker API URL of this service, for ``DockerSandbox(base_url=…)`` or ``DOCKER_HOST``."""
        return f"unix://{self.socket_path}"

    @property
    def pid_file(self) -> Path:
        return self.root / "service.pid"

    def __enter__(self) -> PodmanService:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment podman runs with here: the caller's plus this service's config files."""
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "TMPDIR": str(self.root / "tmp"),  # where image imports stage their layers
        }

    def write_config(self) -> None:
        """Write ``containers.conf`` and ``storage.conf`` under :attr:`root` (when they differ)."""
        for sub in ("", "tmp", "networks"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_if_changed(self.root / "containers.conf", _CONTAINERS_CONF.format(root=self.root))
        _write_if_changed(self.root / "storage.conf", _STORAGE_CONF.format(root=self.root, driver=self.storage_driver))

    def podman(self, *args: str, check: bool = True, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS`` on this service's config and storage."""
        binary = _require("podman", "apt-get install podman runc catatonit")
        self.write_config()
        proc = subprocess.run(
            [binary, *args], env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and proc.returncode != 0:
            raise SandboxUnavailableError(f"podman {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def image_exists(self) -> bool:
        """Whether :attr:`image` is in this service's storage."""
        return self.podman("image", "exists", self.image, check=False).returncode == 0

    def ensure_image(self) -> bool:
        """Build :attr:`image` unless it exists; return whether it was built.

        Raises:
            SandboxUnavailableError: podman or debootstrap is missing, not root, or the build failed.
        """
        self.write_config()
        if self.image_exists():
            return False
        with self._lock("build.lock"):
            if self.image_exists():  # another process built it while we waited
                return False
            tar = self.root / f"rootfs-{SUITE}-python3.tar"
            if not tar.exists():
                self._build_rootfs(tar)
            self.podman("import", str(tar), self.image, timeout_s=600)
        return True

    def start(self, *, ensure_image: bool = True, timeout_s: float = 30.0) -> str:
        """Start the API service (or find it already running) and return :attr:`base_url`.

        Raises:
            SandboxUnavailableError: podman, runc or catatonit is missing, the image cannot be
                built, or the service does not answer within ``timeout_s``.
        """
        _require("podman", "apt-get install podman runc catatonit")
        _require("runc", "apt-get install runc")
        if not any(os.path.exists(p) for p in CATATONIT_PATHS):
            raise SandboxUnavailableError(
                "catatonit (the containers' init) is not installed: apt-get install catatonit"
            )
        self.write_config()
        if ensure_image:
            self.ensure_image()
        with self._lock("service.lock"):  # two processes starting at once: the second finds the first's
            if _answers(self.socket_path):
                return self.base_url  # somebody else's: leave it running when we stop
            self.socket_path.unlink(missing_ok=True)
            log = (self.root / "service.log").open("ab")
            binary = _require("podman", "apt-get install podman")
            self._proc = subprocess.Popen(
                [binary, "system", "service", "--time=0", self.base_url],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not killed by the terminal's Ctrl-C; stop() ends it
            )
            log.close()
            self.pid_file.write_text(str(self._proc.pid))
            deadline = time.monotonic() + timeout_s
            while not _answers(self.socket_path):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.root / "service.log").read_text(errors="replace")[-2000:]
                    raise SandboxUnavailableError(f"podman system service did not start at {self.base_url}:\n{tail}")
                time.sleep(0.05)
        return self.base_url

    def detach(self) -> None:
        """Leave the service this object started running after this process ends (``stop`` with
        ``even_if_not_started_here=True`` finds it by its pid file)."""
        self._proc = None

    def stop(self, *, even_if_not_started_here: bool = False) -> None:
        """Stop the service if this object started it (or, with the flag, the one its pid file names).

        Containers of the docker sandbox left in this storage are removed first: with the
        service gone nobody could reach them.
        """
        pid = self._proc.pid if self._proc is not None else None
        if pid is None and even_if_not_started_here:
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.pid_file.read_text())
                if b"podman" not in Path(f"/proc/{pid}/cmdline").read_bytes():  # gone; the pid was reused
                    pid = None
        if pid is None:
            return
        with contextlib.suppress(SandboxUnavailableError, subprocess.TimeoutExpired):
            ids = self.podman("ps", "-aq", "--filter", f"label={LABEL}", timeout_s=30).stdout.split()
            if ids:
                self.podman("rm", "-f", "-t", "0", *ids, check=False, timeout_s=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        else:
            for _ in range(200):
                if not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with (self.root / name).open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _build_rootfs(self, tar: Path) -> None:
        """debootstrap a minimal Debian with python3, strip it, and pack it as ``tar``."""
        debootstrap = _require("debootstrap", "apt-get install debootstrap")
        if os.geteuid() != 0:
            raise SandboxUnavailableError(
                f"building the sandbox image needs root (debootstrap): run `sudo {sys.executable} -m "
                "environments.sandbox.podman image`, or import a Debian rootfs with python3 as "
                f"{self.image} yourself"
            )
        mirror = self.mirror or debian_mirror()
        log_path = self.root / "debootstrap.log"
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.root))
        try:
            with log_path.open("w") as log:
                proc = subprocess.run(
                    [debootstrap, "--variant=minbase", "--include=python3", SUITE, str(rootfs), mirror],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=1800,
                    check=False,
                )
            if proc.returncode != 0:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SandboxUnavailableError(f"debootstrap of {SUITE} from {mirror} failed (log: {log_path}):\n{tail}")
            for name in _STRIP:
                path = rootfs / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            partial = tar.with_suffix(".partial")
            subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tar)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)


def start_on_demand(tried: str) -> str | None:
    """An engine for a docker sandbox that was given none and found none answering at ``tried``.

    In order: Docker Engine's default socket, when an engine answers there (a real Docker
    Engine comes first); else the project's Podman service (:func:`default_root`), started now
    — with a one-line note on stderr — unless it already runs. A service started here keeps
    running after this process ends, for later sandboxes and other processes;
    ``python -m environments.sandbox.podman stop`` stops it. Returns None where neither can be:
    ``$DOCKER_HOST`` names another engine (that choice stands), or podman is not installed.

    Raises:
        SandboxUnavailableError: podman is installed but its service cannot start (runc or
            catatonit missing, or it does not answer).

    Example:
        >>> start_on_demand("unix:///var/run/docker.sock")  # doctest: +SKIP
        starting the project's Podman service at unix:///root/.cache/autodidact/podman/podman.sock (…)
        'unix:///root/.cache/autodidact/podman/podman.sock'
    """
    from environments.sandbox.docker import DOCKER_DEFAULT_URL

    service = PodmanService()
    host = os.environ.get("DOCKER_HOST")
    if host and host != service.base_url:
        return None
    if not host and tried != DOCKER_DEFAULT_URL and _answers(Path(DOCKER_DEFAULT_URL.removeprefix("unix://"))):
        return DOCKER_DEFAULT_URL
    if shutil.which("podman") is None:
        return None
    if _answers(service.socket_path):
        return service.base_url
    print(
        f"starting the project's Podman service at {service.base_url} (no Docker engine answers; it keeps "
        f"running: `{sys.executable} -m environments.sandbox.podman stop` stops it)",
        file=sys.stderr,
        flush=True,
    )
    service.start(ensure_image=False)  # a missing image is the sandbox's own clear error
    service.detach()
    return service.base_url


def _write_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` atomically (other podman processes may be reading it) unless it already says ``text``."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def _require(program: str, install: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SandboxUnavailableError(f"{program} is not installed: {install}")
    return path


def _answers(path: Path) -> bool:
    """Whether a Docker-API server answers ``GET /_ping`` on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            return s.recv(64).split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (our own child, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m environments.sandbox.podman {image,start,stop,info}``."""
    parser = argparse.ArgumentParser(prog="python -m environments.sandbox.podman", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["image", "start", "stop", "info"])
    parser.add_argument("--root", type=Path, default=None, help=f"config and storage dir (default: {default_root()})")
    args = parser.parse_args(argv)
    service = PodmanService(args.root)
    try:
        if args.command == "image":
            built = service.ensure_image()
            print(f"{service.image}: {'built' if built else 'present'} (storage: {service.root})")
        elif args.command == "start":
            service.start()
            service.detach()  # keep it running after this process exits; `stop` ends it
            print(f"DOCKER_HOST={service.base_url}")
        elif args.command == "stop":
            service.stop(even_if_not_started_here=True)
        else:
            running = _answers(service.socket_path)
            print(
                f"root: {service.root}\nimage: {service.image} ({'present' if service.image_exists() else 'missing'})"
            )
            print(f"service: {service.base_url} ({'running' if running else 'stopped'})")
    except SandboxUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
