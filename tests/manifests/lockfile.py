"""Reading ``requirements/runtime.lock`` (uv/pip-compile format) and what the image does with
it, shared by the lock, image and install tests."""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO_ROOT

LOCK = REPO_ROOT / "requirements" / "runtime.lock"
LOCK_RELATIVE = "requirements/runtime.lock"

# How the Dockerfile installs the lock, and how tests/manifests/test_lock_install.py replays
# it: exact pins only (--no-deps: nothing the lock does not name), every file's hash checked,
# wheels only (nothing is compiled, so no compiler in the build either).
LOCK_INSTALL_FLAGS = ("--no-deps", "--require-hashes", "--only-binary=:all:")
# What the ensurepip of Debian's python3.11-venv puts in a new venv; the image removes both
# after installing the lock.
VENV_BOOTSTRAP = ("pip", "setuptools")

_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    """One requirement of the lock: ``name==version ; marker`` and its hashes."""

    name: str  # canonical (PEP 503)
    version: str
    marker: str | None
    hashes: tuple[str, ...]
    line: int
    requirement: Requirement


def parse_lock(text: str) -> list[Pin]:
    """Requirements with their continuation lines joined; comments and the header dropped."""
    pins: list[Pin] = []
    entry: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not entry and (not line or line.startswith("#")):
            continue
        if not entry:
            start = number
        entry.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        pins.append(_pin(entry, start))
        entry = []
    assert not entry, f"{LOCK_RELATIVE} ends inside a line continuation"
    return pins


def _pin(words_by_line: list[str], line: int) -> Pin:
    requirement_text, *hash_words = " ".join(words_by_line).split(" --hash=")
    hashes = []
    for word in hash_words:
        match = _HASH.match("--hash=" + word.strip())
        assert match, f"{LOCK_RELATIVE}:{line}: not a sha256 hash: {word!r}"
        hashes.append(match.group(1))
    requirement = Requirement(requirement_text.strip())
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == "==", (
        f"{LOCK_RELATIVE}:{line}: {requirement_text!r} is not pinned with =="
    )
    return Pin(
        name=canonicalize_name(requirement.name),
        version=specifiers[0].version,
        marker=str(requirement.marker) if requirement.marker else None,
        hashes=tuple(hashes),
        line=line,
        requirement=requirement,
    )


@functools.cache
def lock_text() -> str:
    return LOCK.read_text(encoding="utf-8")


def lock_pins() -> list[Pin]:
    return parse_lock(lock_text())


def lock_names() -> set[str]:
    return {pin.name for pin in lock_pins()}


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def runtime_requirements() -> list[Requirement]:
    """pyproject's ``dependencies``: what the service needs, without any extra."""
    return [Requirement(text) for text in pyproject()["project"]["dependencies"]]


def extra_only_names() -> set[str]:
    """Direct dependencies of the extras (sim, triton, dev) that the service does not need."""
    runtime = {canonicalize_name(r.name) for r in runtime_requirements()}
    extras = pyproject()["project"]["optional-dependencies"]
    names = {canonicalize_name(Requirement(t).name) for group in extras.values() for t in group}
    return {str(name) for name in names - runtime}
