"""The lock: pyproject's bounds are the contract; uv.lock and its exports in requirements/ are
what every install gets (`make lock` writes both). These tests fail when the three drift apart,
when this environment is not exactly the lock, and when the image installs anything else.

No network: uv.lock records the requirements it was resolved from, so comparing it with
pyproject is a matter of reading two files, and `uv export --frozen` only reads uv.lock.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = sorted((ROOT / "requirements").glob("*.txt"))
RELOCK = "pyproject.toml and uv.lock disagree; run `make lock` and commit uv.lock and requirements/"


def _key(req: Requirement, extra: str | None = None, group: str | None = None) -> str:
    """One spelling for a requirement, whether pyproject or uv.lock states it."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    markers = [str(req.marker)] if req.marker else []
    if extra:
        markers.append(f"extra == '{extra}'")
    where = f" (group {group})" if group else ""
    marker = f" ; {Marker(' and '.join(markers))}" if markers else ""
    return f"{canonicalize_name(req.name)}{extras}{req.specifier}{marker}{where}"


def _from_lock(entry: dict) -> Requirement:
    extras = f"[{','.join(entry['extras'])}]" if entry.get("extras") else ""
    marker = f" ; {entry['marker']}" if entry.get("marker") else ""
    return Requirement(f"{entry['name']}{extras}{entry.get('specifier', '')}{marker}")


def declared(pyproject: dict) -> set[str]:
    """Every requirement pyproject states: dependencies, each extra's, each group's."""
    project = pyproject["project"]
    keys = {_key(Requirement(text)) for text in project["dependencies"]}
    for extra, texts in project.get("optional-dependencies", {}).items():
        keys |= {_key(Requirement(text), extra=extra) for text in texts}
    for group, texts in pyproject.get("dependency-groups", {}).items():
        keys |= {_key(Requirement(text), group=group) for text in texts}
    return keys


def recorded(lock: dict) -> set[str]:
    """The requirements uv.lock was resolved from (uv stores them beside the project)."""
    project = next(p for p in lock["package"] if p.get("source", {}).get("editable") == ".")
    meta = project.get("metadata", {})
    keys = {_key(_from_lock(entry)) for entry in meta.get("requires-dist", [])}
    for group, entries in meta.get("requires-dev", {}).items():
        keys |= {_key(_from_lock(entry), group=group) for entry in entries}
    return keys


def drift(pyproject: dict, lock: dict) -> list[str]:
    """What pyproject says that uv.lock was not made from, and the other way round."""
    problems = [f"{key}: in pyproject.toml, not in uv.lock" for key in
                sorted(declared(pyproject) - recorded(lock))]
    problems += [f"{key}: in uv.lock, not in pyproject.toml" for key in
                 sorted(recorded(lock) - declared(pyproject))]
    if pyproject["project"].get("requires-python") != lock.get("requires-python"):
        problems.append("requires-python differs")
    project = next(p for p in lock["package"] if p.get("source", {}).get("editable") == ".")
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    if extras != set(project.get("metadata", {}).get("provides-extras", [])):
        problems.append("the extras differ")
    return problems


def _pyproject(text: str | None = None) -> dict:
    return tomllib.loads(text if text is not None else (ROOT / "pyproject.toml").read_text())


def _lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_uv_lock_was_made_from_this_pyproject() -> None:
    assert drift(_pyproject(), _lock()) == [], RELOCK


def test_a_dependency_added_or_raised_without_make_lock_is_caught() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    edited = text.replace('"aiogram>=3.15",', '"aiogram>=3.99",\n    "leftpad>=1.0",', 1)
    edited = edited.replace('redis = ["redis>=5.0"]', 'redis = ["redis>=5.0", "hiredis>=3.0"]')
    assert "aiogram>=3.99" in edited and "hiredis" in edited

    problems = drift(_pyproject(edited), _lock())

    assert "leftpad>=1.0: in pyproject.toml, not in uv.lock" in problems
    assert 'hiredis>=3.0 ; extra == "redis": in pyproject.toml, not in uv.lock' in problems
    assert "aiogram>=3.99: in pyproject.toml, not in uv.lock" in problems
    assert "aiogram>=3.15: in uv.lock, not in pyproject.toml" in problems


def _body(text: str) -> str:
    """An export without its header: the lines after the comments uv puts on top."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[first:])


def _command(export: Path) -> list[str]:
    """The `uv export` command an export's header records, minus its output file."""
    header = export.read_text().splitlines()[1]
    args = shlex.split(header.lstrip("# "))
    assert args[:2] == ["uv", "export"] and "--frozen" in args, header
    out = args.index("-o")
    return [*args[1:out], *args[out + 2:], "--offline"]


@pytest.mark.parametrize("export", EXPORTS, ids=lambda path: path.name)
def test_each_export_is_what_uv_lock_says(export: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    done = subprocess.run(  # noqa: S603 (our own uv, arguments from our own file)
        [uv, *_command(export)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _body(done.stdout) == _body(export.read_text()), (
        f"{export.name} is older than uv.lock; run `make lock`"
    )


def locked(export: Path) -> dict[str, str]:
    """Name → exact version of every package an export installs on this machine."""
    text = export.read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(" --hash", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_every_export_pins_each_package_with_hashes() -> None:
    assert {path.name for path in EXPORTS} == {"build.txt", "dev.txt", "server.txt"}
    for export in EXPORTS:
        entries = re.split(r"\n(?=[a-z0-9])", _body(export.read_text()).strip(), flags=re.I)
        unhashed = [entry.split()[0] for entry in entries if "--hash=sha256:" not in entry]
        assert entries and not unhashed, f"{export.name}: no hash for {unhashed}"
    assert set(locked(ROOT / "requirements" / "build.txt")) == {"setuptools"}


def test_this_environment_is_exactly_the_lock() -> None:
    """`make` installs requirements/dev.txt and PayRescue, nothing else (pip came with venv)."""
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    installed.pop("payrescue")
    installed.pop("pip", None)
    assert installed == locked(ROOT / "requirements" / "dev.txt"), (
        "this environment is not the lock: run `make test` (it rebuilds .venv from the lock)"
    )


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_the_image_installs_only_from_the_lock() -> None:
    instructions = _instructions((ROOT / "Dockerfile").read_text())
    ignored = {line.strip("/ ") for line in (ROOT / ".dockerignore").read_text().splitlines()}

    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", bases[0]), bases[0]
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert source.split("/")[0] not in ignored, f"COPY {source}: in .dockerignore"
        if op == "RUN":
            for pip in re.findall(r"pip (?:--python \S+ )?install [^&]*", args):
                files = re.findall(r"-r (\S+)", pip)
                assert "--no-deps" in pip or ("--require-hashes" in pip and files), pip
                assert all((ROOT / name) in EXPORTS for name in files), pip
