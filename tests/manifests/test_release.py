"""The release workflow builds what the manifests deploy: on a tag v<pyproject version> it
builds linux/amd64 and linux/arm64, pushes to the image the manifests name, attaches an SBOM
and provenance, signs the digest with cosign (keyless) and attests it. Its own guard step is
run here against the repository, with a matching and a wrong tag."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.manifests.lockfile import REPO_ROOT, pyproject
from tests.manifests.test_validate import BASE, CERT_MANAGER, EXAMPLE_ADAPTER, render

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"
SHA_PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*$")


@functools.cache
def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def triggers() -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean True.
    found = workflow().get("on", workflow().get(True))
    assert isinstance(found, dict), "the workflow has no `on:`"
    return found


def steps() -> list[dict[str, Any]]:
    (job,) = workflow()["jobs"].values()
    found: list[dict[str, Any]] = job["steps"]
    return found


def step_using(action: str) -> dict[str, Any]:
    found = [s for s in steps() if s.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


def image_repository() -> str:
    repository: str = workflow()["env"]["IMAGE"]
    return repository


def release_tag() -> str:
    return f"v{pyproject()['project']['version']}"


def test_runs_on_version_tags_only() -> None:
    assert triggers() == {"push": {"tags": ["v*"]}}


def test_job_may_push_sign_and_attest_and_nothing_more() -> None:
    assert workflow()["permissions"] == {"contents": "read"}
    (job,) = workflow()["jobs"].values()
    assert job["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
        "artifact-metadata": "write",
    }


def test_builds_both_platforms_with_sbom_and_provenance() -> None:
    build = step_using("docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["sbom"] is True
    assert str(build["provenance"]).startswith("mode=max")
    assert step_using("docker/setup-qemu-action")["with"]["platforms"] == "arm64"


def test_tags_are_the_release_version() -> None:
    meta = step_using("docker/metadata-action")["with"]
    assert meta["images"] == "${{ env.IMAGE }}"
    assert "type=semver,pattern=v{{version}}" in meta["tags"].splitlines()


def test_signs_and_attests_the_pushed_digest() -> None:
    build_id = step_using("docker/build-push-action")["id"]
    digest = "${{ steps." + build_id + ".outputs.digest }}"
    step_using("sigstore/cosign-installer")
    signing = [s for s in steps() if "cosign sign" in s.get("run", "")]
    assert len(signing) == 1
    assert signing[0]["env"]["DIGEST"] == digest
    assert '"${IMAGE}@${DIGEST}"' in signing[0]["run"] and "--yes" in signing[0]["run"]
    attest = step_using("actions/attest")["with"]
    assert (attest["subject-name"], attest["subject-digest"]) == ("${{ env.IMAGE }}", digest)
    assert attest["push-to-registry"] is True


def test_every_action_is_pinned_to_a_commit() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    uses = re.findall(r"^\s*(?:- )?uses: (.+)$", text, flags=re.MULTILINE)
    assert len(uses) == len([s for s in steps() if "uses" in s]) >= 8
    unpinned = [u for u in uses if not SHA_PINNED.match(u.strip())]
    assert not unpinned, f"pin to a commit SHA with a `# vX.Y.Z` comment: {unpinned}"


@pytest.mark.parametrize("kustomization", [BASE, CERT_MANAGER, EXAMPLE_ADAPTER])
def test_manifests_deploy_the_release_image(kustomization: str) -> None:
    images = {
        container["image"]
        for obj in render(kustomization)
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "tritonscale"
        for container in obj["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"{image_repository()}:{release_tag()}"}


def guard_step() -> dict[str, Any]:
    (guard,) = [s for s in steps() if s.get("name", "").startswith("Check the tag")]
    return guard


@pytest.mark.parametrize(("tag", "passes"), [(None, True), ("v0.0.0-wrong", False)])
def test_the_guard_step_checks_tag_version_and_manifests(tag: str | None, passes: bool) -> None:
    bash = shutil.which("bash")
    assert bash
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GITHUB_REF_NAME": tag or release_tag(),
        "IMAGE": image_repository(),
    }
    done = subprocess.run(
        [bash, "-e", "-c", guard_step()["run"]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    if not passes:
        assert "::error::" in done.stdout
