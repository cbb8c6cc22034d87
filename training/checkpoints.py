"""The checkpoint registry: trained policies, their lineage and how they were made.

A checkpoint is a directory ``$AUTODIDACT_HOME/checkpoints/<name>/`` holding a
``checkpoint.json`` record (:class:`Checkpoint`) and, by default, the weights under
``model/``: a PEFT adapter (``kind="lora"``), a whole transformers model (``kind="full"``), or
value heads read on a policy's features (``kind="value"``: a process reward model, ``VALUE_FILE``).
The record says what the weights were trained from (``base_model``, ``parent``), by which
method, on which data (:class:`DataSource`), with which config, and what training measured
(:class:`TrainMetrics`). Records are frozen and versioned; they are written once, atomically,
and never overwritten.

This module is imported on the CLI's model-resolution path (``--model <checkpoint name>``),
so it imports nothing heavier than pydantic at import time.

Example:
    >>> ckpt = find_checkpoint("sft-20261122-103000-ab12")  # doctest: +SKIP
    >>> ckpt.base_model, ckpt.parent, ckpt.metrics.loss_after  # doctest: +SKIP
    ('embedded', None, 0.41)
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from autodidact.config import home
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Record

CHECKPOINT_SCHEMA_VERSION = 1
RECORD_FILE = "checkpoint.json"
WEIGHTS_DIR = "model"
VALUE_FILE = "value_heads.pt"  # a value checkpoint's heads, in its weights dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_log = logging.getLogger(__name__)

Kind = Literal["lora", "full", "value"]


class DataSource(Record):
    """Which trajectories a checkpoint was trained on, how they were filtered and how many survived."""

    kind: str = Field("success", description="the data kind(s), e.g. success, revision+success, dpo")
    runs: tuple[str, ...] = Field((), description="run ids the examples came from; empty means every run")
    suite: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict, description="e.g. min_reward, roles")
    counts: dict[str, int] = Field(default_factory=dict, description="e.g. trajectories, selected, examples")


class TrainMetrics(Record):
    """What training measured. Losses are mean per-token NLL on the training examples."""

    loss_before: float | None = None
    loss_after: float | None = None
    train_loss: float | None = Field(None, description="the trainer's running mean over all steps")
    examples: int = 0
    tokens: int = Field(0, description="tokens processed by training (prompt + completion, all epochs)")
    steps: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = Field(default_factory=dict)


class Checkpoint(Record):
    """A registered checkpoint.

    ``path`` is the weights dir: a PEFT adapter applied on top of ``base_model``
    (``kind="lora"``), or a complete model (``kind="full"``). ``base_model`` is a model spec
    (``"embedded"``, a model dir, an HF id): for a checkpoint trained on top of another one it
    stays the original base, except that an adapter trained on a *full* checkpoint has that
    checkpoint's weights dir as its base. ``parent`` names the checkpoint training started from.
    """

    v: int = CHECKPOINT_SCHEMA_VERSION
    name: str
    path: Path
    kind: Kind
    base_model: str
    parent: str | None = None
    method: str = "sft"
    datasets: tuple[DataSource, ...] = ()
    config: dict[str, Any] = Field(default_factory=dict, description="the training config, JSON-safe")
    metrics: TrainMetrics = TrainMetrics()
    created_at: float = Field(default_factory=time.time)

    def load_spec(self) -> tuple[str, str | None]:
        """``(model path, adapter dir or None)`` to load this checkpoint with.

        Example:
            >>> Checkpoint(name="a", path=Path("/c/a/model"), kind="lora", base_model="embedded").load_spec()
            ('embedded', '/c/a/model')
        """
        if self.kind == "value":
            raise ConfigError(
                f"checkpoint {self.name!r} is a value model (heads on {self.base_model}'s features), not a "
                "policy; use it where a process reward model is asked for (graph_options.prm, --set prm=...)"
            )
        if self.kind == "full":
            return str(self.path), None
        return self.base_model, str(self.path)


def checkpoints_dir() -> Path:
    """Where checkpoints live: ``$AUTODIDACT_HOME/checkpoints``."""
    return home() / "checkpoints"


def checkpoint_dir(name: str) -> Path:
    """The directory of checkpoint ``name`` (it need not exist yet); a malformed name is a ConfigError.

    Example:
        >>> checkpoint_dir("sft-1").name
        'sft-1'
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"checkpoint name {name!r} is invalid; use letters, digits, '.', '_' or '-' (at most 128, not starting with '.')"
        )
    return checkpoints_dir() / name


def new_checkpoint_name(method: str) -> str:
    """A fresh, sortable checkpoint name: ``<method>-<UTC yyyymmdd-HHMMSS>-<4 hex>``.

    Example:
        >>> new_checkpoint_name("sft")  # doctest: +SKIP
        'sft-20261122-103000-ab12'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{method}-{stamp}-{secrets.token_hex(2)}"


def register_checkpoint(
    name: str,
    path: str | Path,
    *,
    kind: Kind,
    base_model: str,
    parent: str | None = None,
    method: str = "sft",
    datasets: Sequence[DataSource] = (),
    config: Mapping[str, Any] | None = None,
    metrics: TrainMetrics | None = None,
) -> Checkpoint:
    """Record the weights at ``path`` as checkpoint ``name`` and return the record.

    The record is written to a temporary file and hard-linked into place, so readers see a
    whole ``checkpoint.json`` or none, and two writers racing for one name cannot both win.

    Args:
        name: a new checkpoint name (see :func:`new_checkpoint_name`).
        path: the weights dir: an adapter dir (``adapter_config.json``) or a model dir (``config.json``).
        kind: ``"lora"``, ``"full"`` or ``"value"``.
        base_model: the model spec the weights were trained from (see :class:`Checkpoint`).
        parent: the checkpoint training started from, if any; it must be registered.
        method: the training method, e.g. ``"sft"``.
        datasets: where the training data came from.
        config: the training config as a JSON-safe mapping.
        metrics: what training measured.

    Raises:
        ConfigError: the name is malformed or taken, the parent is unknown, or ``path`` does
            not hold weights of the given kind.

    Example:
        >>> register_checkpoint("sft-a", "/tmp/adapter", kind="lora", base_model="embedded")  # doctest: +SKIP
        Checkpoint(name='sft-a', ...)
    """
    where = checkpoint_dir(name)
    record_file = where / RECORD_FILE
    if record_file.exists():
        raise ConfigError(f"checkpoint {name!r} already exists at {where}; choose another name or delete that dir")
    weights = Path(path).absolute()
    marker = {"lora": "adapter_config.json", "full": "config.json", "value": VALUE_FILE}[kind]
    if not (weights / marker).is_file():
        raise ConfigError(f"{weights} has no {marker}, so it is not a {kind} checkpoint; save the weights there first")
    if parent is not None and _read(checkpoint_dir(parent) / RECORD_FILE) is None:
        raise ConfigError(f"parent checkpoint {parent!r} is not registered; see `autodidact checkpoints list`")
    ckpt = Checkpoint(
        name=name,
        path=weights,
        kind=kind,
        base_model=base_model,
        parent=parent,
        method=method,
        datasets=tuple(datasets),
        config=_json_safe(dict(config or {})),
        metrics=metrics or TrainMetrics(),
    )
    where.mkdir(parents=True, exist_ok=True)
    data = ckpt.model_dump(mode="json")
    if weights.is_relative_to(where.absolute()):
        # Stored relative to the record, so a checkpoints dir can be moved or copied whole.
        data["path"] = str(weights.relative_to(where.absolute()))
    tmp = where / f".{RECORD_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.link(tmp, record_file)  # unlike rename, fails if the name was taken meanwhile
    except FileExistsError:
        raise ConfigError(f"checkpoint {name!r} already exists at {where}; choose another name") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ckpt


def find_checkpoint(name: str) -> Checkpoint | None:
    """The checkpoint called ``name``, or the only one whose name starts with ``name``; else None.

    Anything that cannot be a checkpoint name (a path, a URL, an HF id) gives None at once,
    so model resolution can ask this first.

    Raises:
        ConfigError: ``name`` is a prefix of several checkpoint names.

    Example:
        >>> find_checkpoint("no-such-checkpoint") is None
        True
    """
    if not _NAME.match(name):
        return None
    exact = _read(checkpoints_dir() / name / RECORD_FILE)
    if exact is not None:
        return exact
    root = checkpoints_dir()
    if not root.is_dir():
        return None
    matches = sorted(p.name for p in root.iterdir() if p.name.startswith(name) and (p / RECORD_FILE).is_file())
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
        raise ConfigError(f"checkpoint prefix {name!r} is ambiguous ({shown}); give more of the name")
    return _read(root / matches[0] / RECORD_FILE) if matches else None


def list_checkpoints() -> list[Checkpoint]:
    """Every registered checkpoint, newest first. Unreadable records are skipped with a warning.

    Example:
        >>> [c.name for c in list_checkpoints()]  # doctest: +SKIP
        ['sft-20261122-110000-cd34', 'sft-20261122-103000-ab12']
    """
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        record = d / RECORD_FILE
        if not record.is_file():
            continue
        try:
            ckpt = _read(record)
        except ModelLoadError as e:
            _log.warning("%s", e)
            continue
        if ckpt is not None:
            found.append(ckpt)
    return sorted(found, key=lambda c: (c.created_at, c.name), reverse=True)


def _read(record: Path) -> Checkpoint | None:
    try:
        text = record.read_text()
    except FileNotFoundError:
        return None
    try:
        ckpt = Checkpoint.model_validate_json(text)
    except ValidationError as e:
        raise ModelLoadError(
            f"checkpoint record {record} is malformed ({e.errors()[0]['msg']}); fix or delete that dir"
        ) from None
    if not ckpt.path.is_absolute():
        ckpt = ckpt.model_copy(update={"path": (record.parent / ckpt.path).absolute()})
    return ckpt


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so the record holds plain data (enums and paths become strings)."""
    return json.loads(json.dumps(value, default=str))
