"""Base is generic: its config discovers Triton pods by a label in every namespace and names
no workload, model or capacity; the example's values live in manifests/examples/adapter,
whose config differs from base only in predictive.series. No stale notes contradict the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.config import Config, load_config
from adapter.kube.selectors import Selector
from tests.manifests.test_adapter import rendered_config
from tests.manifests.test_validate import (
    BASE,
    EXAMPLE_ADAPTER,
    EXAMPLES,
    MANIFESTS,
    REPO_ROOT,
    one_of,
    render,
)

# The example's names: none of them may appear in base's settings.
EXAMPLE_VALUES = ("prod", "triton-llm", "resnet")
# Notes written before pod discovery existed.
STALE_NOTES = ("(coming)", "(later)", "until discovery lands", "until kubernetes discovery")


def config_text(kustomization: str) -> str:
    return rendered_config(render(kustomization))[1]


def loaded(kustomization: str, tmp_path: Path) -> Config:
    path = tmp_path / f"{kustomization.replace('/', '_')}.yaml"
    path.write_text(config_text(kustomization), encoding="utf-8")
    return load_config(path)


def scalars(value: Any) -> list[str]:
    """Every key and scalar value of a parsed YAML document, as text."""
    if isinstance(value, dict):
        return [str(k) for k in value] + [s for v in value.values() for s in scalars(v)]
    if isinstance(value, list):
        return [s for v in value for s in scalars(v)]
    return [str(value)]


def test_base_settings_name_no_example_workload_model_or_capacity() -> None:
    settings = scalars(yaml.safe_load(config_text(BASE)))
    named = [s for s in settings if any(value in s for value in EXAMPLE_VALUES)]
    assert not named
    assert "capacity_rps" not in settings


def test_base_discovers_triton_pods_by_label_in_every_namespace(tmp_path: Path) -> None:
    config = loaded(BASE, tmp_path)
    assert not config.targets and not config.predictive.series
    (entry,) = config.discovery.kubernetes
    assert entry.namespaces == ()  # every namespace
    assert entry.kind == "triton"
    assert Selector.parse(entry.label_selector).matches({"app.kubernetes.io/component": "triton"})
    assert "app.kubernetes.io/name" not in entry.label_selector  # no workload named


def test_example_config_is_base_plus_the_example_series(tmp_path: Path) -> None:
    base = yaml.safe_load(config_text(BASE))
    example = yaml.safe_load(config_text(EXAMPLE_ADAPTER))
    series = example["predictive"].pop("series")
    base["predictive"].pop("series")
    assert example == base
    assert {tuple(sorted(entry["match"].values())) for entry in series} == {
        ("prod", "resnet", "triton-llm")
    }
    settings = loaded(EXAMPLE_ADAPTER, tmp_path).predictive.for_series(
        {"namespace": "prod", "deployment": "triton-llm", "model": "resnet"}
    )
    assert settings.capacity_rps is not None


def test_the_example_triton_pods_carry_the_discovered_label(tmp_path: Path) -> None:
    (entry,) = loaded(BASE, tmp_path).discovery.kubernetes
    template = one_of(render(EXAMPLES), "Deployment", "triton-llm")["spec"]["template"]
    assert Selector.parse(entry.label_selector).matches(template["metadata"]["labels"])
    port_names = {p.get("name") for c in template["spec"]["containers"] for p in c["ports"]}
    assert entry.port in port_names


def shipped_text_files() -> list[Path]:
    files = [p for p in MANIFESTS.rglob("*") if p.is_file() and p.suffix in {".yaml", ".md"}]
    return [*files, REPO_ROOT / "Dockerfile", REPO_ROOT / ".dockerignore"]


def stale_notes(text: str) -> list[str]:
    """The stale notes in ``text``, whatever the line breaks and case."""
    flat = " ".join(text.lower().split())
    return [note for note in STALE_NOTES if note in flat]


def test_stale_notes_are_found_across_line_breaks() -> None:
    assert stale_notes("one URL per pod until Kubernetes\n  discovery lands") == [
        "until kubernetes discovery"
    ]
    assert stale_notes("discovery (coming) will list") == ["(coming)"]
    assert stale_notes("pods are discovered") == []


@pytest.mark.parametrize("path", shipped_text_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_stale_notes(path: Path) -> None:
    found = stale_notes(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(REPO_ROOT)}: {found}"
