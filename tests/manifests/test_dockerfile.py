"""The Dockerfile's structure, checked by parsing it: no Docker daemon is available to the
test suite, so the image is never built here. Cross-checks tie it to the Deployment
(user, port, command) and to the build context (.dockerignore). The supply-chain checks
(digests, the hashed lock, what the runtime holds) are in tests/manifests/test_image.py."""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.manifests.test_adapter import adapter_container, pod_spec
from tests.manifests.test_validate import BASE, render
from tests.support.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    arguments: str

    def json_arguments(self) -> list[str]:
        """Exec-form arguments; fails for shell form (signals would not reach the app)."""
        parsed = json.loads(self.arguments)
        assert isinstance(parsed, list), f"Dockerfile:{self.line}: {self.keyword} not JSON"
        return [str(item) for item in parsed]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), arguments.strip()))
        pending = []
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


@functools.cache
def instructions() -> tuple[Instruction, ...]:
    return tuple(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        assert result, "the first instruction must be FROM (ARG before FROM is not used)"
        result[-1].append(instruction)
    return result


def final(keyword: str) -> list[Instruction]:
    return [i for i in stages()[-1] if i.keyword == keyword]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins, `!` re-includes, and a
    pattern that matches a parent directory matches everything below it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copies_from_context() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not from a stage)."""
    copies = []
    for instruction in instructions():
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        copies.append(([w.removeprefix("./").rstrip("/") for w in words[:-1]], words[-1]))
    return copies


def copied_sources() -> list[str]:
    return [source for sources, _ in copies_from_context() for source in sources]


# --- tests ------------------------------------------------------------------------------


def test_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile('# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\nCMD ["z"]\n')
    assert [(i.line, i.keyword, i.arguments) for i in parsed] == [
        (2, "FROM", "a AS b"),
        (3, "RUN", "x && y"),
        (6, "CMD", '["z"]'),
    ]


def test_runtime_runs_as_the_non_root_user_of_the_deployment() -> None:
    users = final("USER")
    assert users, "the runtime stage has no USER: it would run as root"
    uid, _, gid = users[-1].arguments.partition(":")
    assert uid.isdigit() and int(uid) != 0, "use a numeric uid (runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert pod_spec(render(BASE))["securityContext"]["runAsUser"] == int(uid)


def test_default_command_is_what_the_deployment_runs() -> None:
    (cmd,) = final("CMD")
    assert cmd.json_arguments() == adapter_container(render(BASE))["args"]
    assert cmd.json_arguments()[0] == "serve"


def test_exposed_port_is_the_container_port() -> None:
    exposed = {int(port.split("/")[0]) for i in final("EXPOSE") for port in i.arguments.split()}
    ports = {port["containerPort"] for port in adapter_container(render(BASE))["ports"]}
    assert exposed == ports


def test_docker_healthcheck_is_off_in_favour_of_kubernetes_probes() -> None:
    assert [i.arguments.upper() for i in final("HEALTHCHECK")] == ["NONE"]


def test_dependency_layer_comes_before_the_sources() -> None:
    steps = [(i.keyword, i.arguments) for i in instructions()]
    first_source = next(
        n for n, (kw, args) in enumerate(steps) if kw == "COPY" and "adapter" in args
    )
    deps = next(n for n, (kw, args) in enumerate(steps) if kw == "RUN" and "runtime.lock" in args)
    assert deps < first_source  # editing code does not re-download every dependency


@pytest.mark.parametrize(
    ("path", "excluded"),
    [("adapter/cli.py", False), ("policies/hpa.py", False), ("requirements/runtime.lock", False),
     (".venv/bin/python", True), ("adapter/__pycache__/x.pyc", True), ("tests/test_x.py", True),
     ("loadtest/simulator/cli.py", True), ("pyproject.toml", True), ("README.md", True)],
)  # fmt: skip
def test_dockerignore_sends_only_the_build_inputs(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(path, dockerignore_patterns()) is excluded


def test_every_copied_source_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    missing = [s for s in copied_sources() if not (REPO_ROOT / s).exists()]
    ignored = [s for s in copied_sources() if dockerignore_excludes(s, patterns)]
    assert not missing, f"COPY of files that do not exist: {missing}"
    assert not ignored, f"COPY of files .dockerignore leaves out: {ignored}"


def test_the_final_stage_takes_only_the_venv_and_the_sources_from_the_build() -> None:
    copies = final("COPY")
    assert copies and all("--from=build" in i.arguments for i in copies)
    destinations = {Path(i.arguments.split()[-1]) for i in copies}
    assert destinations == {Path("/opt/venv"), Path("/opt/tritonscale")}
