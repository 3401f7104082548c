"""``requirements/runtime.lock`` is the service's dependency set, pinned and hashed: it covers
pyproject's ``dependencies`` within their ranges, pins every package exactly, hashes every
file, holds nothing of the extras, and records the command ``make lock`` runs (Renovate
re-runs that header to refresh it). Installing it is tested in test_lock_install.py."""

from __future__ import annotations

import re
import shlex

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.manifests.lockfile import (
    LOCK_RELATIVE,
    REPO_ROOT,
    VENV_BOOTSTRAP,
    Pin,
    extra_only_names,
    lock_names,
    lock_pins,
    lock_text,
    parse_lock,
    runtime_requirements,
)

# The image: CPython 3.11 on Linux (amd64 and arm64).
IMAGE_ENVIRONMENTS = [
    {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
     "platform_system": "Linux", "platform_machine": machine, "os_name": "posix",
     "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    for machine in ("x86_64", "aarch64")
]  # fmt: skip


def pins_for(environment: dict[str, str]) -> dict[str, Pin]:
    """The pins pip installs in ``environment`` (markers evaluated), by name."""
    chosen: dict[str, Pin] = {}
    for pin in lock_pins():
        if pin.marker is None or Marker(pin.marker).evaluate(environment):
            assert pin.name not in chosen, f"{LOCK_RELATIVE}:{pin.line}: {pin.name} twice"
            chosen[pin.name] = pin
    return chosen


def test_parser_joins_continuations_and_reads_markers_and_hashes() -> None:
    text = (
        "# header\n"
        "a-b==1.0 ; sys_platform == 'linux' \\\n"
        "    --hash=sha256:" + "0" * 64 + " \\\n"
        "    --hash=sha256:" + "f" * 64 + "\n"
        "    # via x\n"
        "C_d==2 \\\n"
        "    --hash=sha256:" + "1" * 64 + "\n"
    )
    pins = parse_lock(text)
    assert [(p.name, p.version, p.marker, len(p.hashes), p.line) for p in pins] == [
        ("a-b", "1.0", 'sys_platform == "linux"', 2, 2),
        ("c-d", "2", None, 1, 6),
    ]


@pytest.mark.parametrize("text", ["a>=1 \\\n    --hash=sha256:" + "0" * 64, "a==1 --hash=md5:00"])
def test_parser_rejects_ranges_and_other_hashes(text: str) -> None:
    with pytest.raises(AssertionError):
        parse_lock(text)


@pytest.mark.parametrize(
    "environment", IMAGE_ENVIRONMENTS, ids=[e["platform_machine"] for e in IMAGE_ENVIRONMENTS]
)
@pytest.mark.parametrize("requirement", runtime_requirements(), ids=str)
def test_every_direct_dependency_is_pinned_within_its_range(
    requirement: Requirement, environment: dict[str, str]
) -> None:
    pins = pins_for(environment)
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} (pyproject dependencies) is not in {LOCK_RELATIVE}"
    assert requirement.specifier.contains(pins[name].version, prereleases=True), (
        f"{LOCK_RELATIVE}:{pins[name].line}: {name}=={pins[name].version} is outside "
        f"pyproject's {requirement}; run `make lock`"
    )


def test_every_pin_has_hashes() -> None:
    unhashed = [f"{LOCK_RELATIVE}:{p.line}: {p.name}" for p in lock_pins() if not p.hashes]
    assert lock_pins() and not unhashed


def test_the_lock_holds_nothing_of_the_extras_nor_the_installers() -> None:
    # tritonclient, nvidia-pytriton, matplotlib, pytest, ruff... and pip/setuptools/wheel.
    forbidden = extra_only_names() | set(VENV_BOOTSTRAP) | {"wheel"}
    assert {"tritonclient", "nvidia-pytriton", "pytest", "matplotlib"} <= forbidden
    assert not lock_names() & forbidden


def test_the_lock_records_the_make_lock_command() -> None:
    # `make lock` and Renovate (which re-runs the header) must produce the same file.
    header = re.search(r"^#\s+(uv pip compile .*)$", lock_text(), flags=re.MULTILINE)
    assert header, f"{LOCK_RELATIVE} has no `uv pip compile` header (was it made by make lock?)"
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^\t\$\(VENV\)/bin/(uv pip compile .*)$", makefile, flags=re.MULTILINE)
    assert recipe, "the Makefile has no `lock` recipe running uv pip compile"
    made = [w for w in shlex.split(recipe.group(1)) if w not in {"--quiet", "$(LOCK_ARGS)"}]
    recorded = shlex.split(header.group(1))
    assert recorded == made
    for flag in ("--generate-hashes", "--universal", "pyproject.toml"):
        assert flag in recorded
    assert recorded[recorded.index("--python-version") + 1] == "3.11"
    assert recorded[recorded.index("--output-file") + 1] == LOCK_RELATIVE
