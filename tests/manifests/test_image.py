"""The image's supply chain, read from the Dockerfile and renovate.json (no container engine
runs here): both bases pinned by digest and on the same Debian release and Python, the
dependencies installed only from the hashed lock, pip and setuptools gone, only the
service's packages copied and run as ``python -m adapter``, and Renovate keeping the digests
and the lock fresh. The lock itself is tested in test_lock.py and test_lock_install.py."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from tests.manifests.lockfile import (
    LOCK_INSTALL_FLAGS,
    LOCK_RELATIVE,
    REPO_ROOT,
    VENV_BOOTSTRAP,
    pyproject,
)
from tests.manifests.test_dockerfile import (
    Instruction,
    copies_from_context,
    dockerignore_excludes,
    dockerignore_patterns,
    final,
    instructions,
    stages,
)

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
BUILD_BASE = "docker.io/library/debian:12-slim"
RUNTIME_BASE = "gcr.io/distroless/python3-debian12:nonroot"
DEBIAN_PYTHON = "3.11"  # Debian 12's python3 (both bases take it from Debian's packages)
SERVICE_PACKAGES = {"adapter", "policies"}


def base_images() -> list[str]:
    """The image of each FROM (stage names excluded)."""
    stage_names = {i.arguments.split()[-1] for i in instructions() if " AS " in i.arguments}
    images = [stage[0].arguments.split()[0] for stage in stages()]
    return [image for image in images if image not in stage_names]


def run_words(instruction: Instruction) -> list[list[str]]:
    """The shell commands of a RUN, split on && into words."""
    return [shlex.split(part) for part in instruction.arguments.split("&&")]


def pip_commands(verb: str) -> list[list[str]]:
    found = []
    for instruction in instructions():
        if instruction.keyword != "RUN":
            continue
        for words in run_words(instruction):
            if verb in words and any(w.endswith("pip") for w in words[: words.index(verb)]):
                found.append(words)
    return found


def env_of_final_stage() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final("ENV"):
        for word in shlex.split(instruction.arguments):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def copy_destination(source: str) -> str:
    (destination,) = [dest for sources, dest in copies_from_context() if source in sources]
    return destination


# --- the bases ---------------------------------------------------------------------------


def test_every_base_is_pinned_by_digest() -> None:
    bases = base_images()
    assert len(bases) == 2
    unpinned = [image for image in bases if not DIGEST.search(image)]
    assert not unpinned, f"pin these by digest (image@sha256:...): {unpinned}"


def test_build_and_runtime_are_the_same_debian_and_python() -> None:
    # The venv is built on one and run on the other: its bin/python links to Debian's
    # /usr/bin/python3.11, which both must have.
    build, runtime = (DIGEST.sub("", image) for image in base_images())
    assert (build, runtime) == (BUILD_BASE, RUNTIME_BASE)
    venv_made = [
        words
        for i in stages()[0]
        if i.keyword == "RUN"
        for words in run_words(i)
        if "venv" in words
    ]
    assert venv_made and venv_made[0][:3] == [f"/usr/bin/python{DEBIAN_PYTHON}", "-m", "venv"]
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert f"{DEBIAN_PYTHON}.2" in requires  # bookworm's 3.11.2


def test_the_runtime_stage_runs_nothing() -> None:
    # distroless has no shell: a RUN there would fail, and nothing may be installed there.
    assert not final("RUN")
    assert stages()[-1][0].arguments.split()[0].startswith("gcr.io/distroless/")


# --- the dependencies --------------------------------------------------------------------


def test_dependencies_come_only_from_the_hashed_lock() -> None:
    installs = pip_commands("install")
    assert len(installs) == 1, f"one pip install, of the lock only: {installs}"
    (words,) = installs
    for flag in LOCK_INSTALL_FLAGS:
        assert flag in words, f"pip install without {flag}"
    requirement_file = words[words.index("-r") + 1]
    assert requirement_file == copy_destination(LOCK_RELATIVE)
    assert not [w for w in words[words.index("install") + 1 :] if not w.startswith("-")][1:], (
        "pip install names something besides the lock"
    )


def test_pip_and_setuptools_leave_the_venv_after_installing() -> None:
    (uninstall,) = pip_commands("uninstall")
    assert "--yes" in uninstall
    assert set(VENV_BOOTSTRAP) <= set(uninstall)
    order = [n for n, i in enumerate(instructions()) if "pip" in i.arguments]
    assert "uninstall" in instructions()[order[-1]].arguments


# --- what the runtime holds and runs -----------------------------------------------------


def test_only_the_service_packages_and_the_lock_are_copied() -> None:
    sources = {source for sources, _ in copies_from_context() for source in sources}
    assert sources == SERVICE_PACKAGES | {LOCK_RELATIVE}
    for package in SERVICE_PACKAGES:
        assert (REPO_ROOT / package / "__init__.py").is_file()


def test_the_harness_and_project_metadata_stay_out_of_the_build_context() -> None:
    patterns = dockerignore_patterns()
    for path in (
        "loadtest/simulator/cli.py",
        "pyproject.toml",
        "tests/conftest.py",
        "manifests/README.md",
    ):
        assert dockerignore_excludes(path, patterns), path


def test_the_entry_point_runs_the_service_module_from_the_venv() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    python, flag, module = entrypoint.json_arguments()
    assert (flag, module) == ("-m", "adapter")
    assert Path(python).parts[:3] == ("/", "opt", "venv")
    assert (REPO_ROOT / module / "__main__.py").is_file()
    # the sources' directory is on the path, and holds the module
    (path,) = env_of_final_stage()["PYTHONPATH"].split(":")
    assert Path(copy_destination(module)) == Path(path) / module


def test_the_runtime_never_writes_bytecode() -> None:
    # Read-only root filesystem: the build compiles the sources instead.
    assert env_of_final_stage()["PYTHONDONTWRITEBYTECODE"] == "1"
    compiled = [
        words
        for i in stages()[0]
        if i.keyword == "RUN"
        for words in run_words(i)
        if "compileall" in words
    ]
    assert compiled and "/opt/tritonscale" in compiled[0]


# --- Renovate keeps the pins fresh -------------------------------------------------------


def renovate() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((REPO_ROOT / "renovate.json").read_text(encoding="utf-8"))
    return config


def renovate_regex(pattern: str) -> re.Pattern[str]:
    assert pattern.startswith("/") and pattern.endswith("/"), "a /regex/ file pattern"
    return re.compile(pattern[1:-1])


def test_renovate_pins_and_refreshes_the_base_digests_and_action_shas() -> None:
    extends = renovate()["extends"]
    assert {"docker:pinDigests", "helpers:pinGitHubActionDigests"} <= set(extends)


def test_renovate_refreshes_the_lock_with_its_header_command() -> None:
    config = renovate()
    patterns = config["pip-compile"]["managerFilePatterns"]
    assert any(renovate_regex(p).search(LOCK_RELATIVE) for p in patterns)
    assert config["lockFileMaintenance"]["enabled"] is True
    assert config["constraints"]["python"] == f"=={DEBIAN_PYTHON}"


@pytest.mark.parametrize("image", [BUILD_BASE, RUNTIME_BASE])
def test_renovate_moves_digests_but_never_the_debian_release(image: str) -> None:
    name = image.split(":")[0]
    rules = [
        rule
        for rule in renovate()["packageRules"]
        if name in rule.get("matchPackageNames", []) and rule.get("enabled") is False
    ]
    assert rules and {"major", "minor", "patch"} <= set(rules[0]["matchUpdateTypes"])
    assert "digest" not in rules[0]["matchUpdateTypes"]
