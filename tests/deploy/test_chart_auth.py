"""The chart fails closed on API keys: a render that would run a server without the authentication
that was asked for fails, with a message saying what to change; what a render cannot see (the
value inside an existing Secret) the server itself refuses at start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from pydantic import ValidationError

from service.settings import Settings

CHART = Path(__file__).parents[2] / "helm" / "rmserve"
SECRET = {"existingSecret": "rmserve-api-keys", "existingSecretKey": "keys"}
# Keys the server would refuse (blank, spaces, non-ASCII) or split in two (a comma).
BAD_KEYS = ["", " ", "two words", "a,b", "clé-secrète", "tab\tkey"]


def render(values: dict[str, Any], chart: Path = CHART) -> dict[str, str]:
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values, name="rm", namespace="ml")


def server_container(rendered: dict[str, str]) -> dict[str, Any]:
    deployment = yaml.safe_load(rendered["rmserve/templates/deployment.yaml"])
    return deployment["spec"]["template"]["spec"]["containers"][0]


def settings_with(env: dict[str, str]) -> Settings:
    """The server's settings in exactly this RMSERVE_* environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("RMSERVE_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_cli_parse_args=[])


@pytest.fixture
def chart_without_schema(tmp_path: Path) -> Path:
    """The chart as `helm install --skip-schema-validation` sees it: its templates must hold alone."""
    copy = tmp_path / "rmserve"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    return copy


@pytest.mark.parametrize("key", BAD_KEYS)
def test_the_schema_refuses_a_key_the_server_would_not_take(key: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=r"/apiKeys/keys/1"):
        render({"apiKeys": {"keys": ["good-key-0123456789", key]}})


@pytest.mark.parametrize("key", BAD_KEYS)
def test_the_templates_refuse_it_without_the_schema_too(chart_without_schema: Path, key: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"apiKeys\.keys\[1\] is empty or holds a space"):
        render({"apiKeys": {"keys": ["good-key-0123456789", key]}}, chart_without_schema)


@pytest.mark.parametrize("values, message", [
    ({"apiKeys": {"keys": ["k-0123456789"], **SECRET}}, "set keys or existingSecret, not both"),
    ({"extraEnv": [{"name": "RMSERVE_API_KEYS", "value": ""}]}, "not extraEnv"),
    ({"apiKeys": SECRET, "extraEnv": [{"name": "RMSERVE_API_KEYS", "value": " , "}]}, "not extraEnv"),
    ({"config": {"RMSERVE_PROTECT_METRICS": True}}, "RMSERVE_PROTECT_METRICS needs API keys"),
], ids=["keys-and-secret", "extra-env-empty", "extra-env-overrides-secret", "protect-without-keys"])
def test_key_settings_that_would_leave_the_server_open_fail_the_render(
    values: dict[str, Any], message: str, chart_without_schema: Path
) -> None:
    for chart in (CHART, chart_without_schema):
        with pytest.raises(helm.HelmRenderError, match=message):
            render(values, chart)


def test_an_existing_secret_needs_the_name_of_its_key(chart_without_schema: Path) -> None:
    values = {"apiKeys": {**SECRET, "existingSecretKey": ""}}
    with pytest.raises(helm.HelmValuesError, match="existingSecretKey"):
        render(values)
    with pytest.raises(helm.HelmRenderError, match=r"apiKeys\.existingSecretKey: name the key"):
        render(values, chart_without_schema)


@pytest.mark.parametrize("secret_value", ["", " ", " , ", ",,"])
def test_an_existing_secret_holding_no_key_stops_the_server_instead_of_opening_it(secret_value: str) -> None:
    """`helm template` cannot read the Secret, so the server must refuse its empty value: the pod
    crash-loops with the reason in its log, rather than serving without authentication."""
    container = server_container(render({"apiKeys": SECRET}))
    (variable,) = [v for v in container["env"] if v["name"] == "RMSERVE_API_KEYS"]
    assert variable["valueFrom"]["secretKeyRef"] == {
        "name": "rmserve-api-keys", "key": "keys", "optional": False,  # a missing key: no start
    }
    with pytest.raises(ValidationError, match="RMSERVE_API_KEYS is set but holds no key"):
        settings_with({"RMSERVE_HOST": "0.0.0.0", "RMSERVE_API_KEYS": secret_value})


def test_protected_metrics_render_with_keys() -> None:
    rendered = render({"apiKeys": SECRET, "config": {"RMSERVE_PROTECT_METRICS": True}})
    assert server_container(rendered)["env"][0]["name"] == "RMSERVE_API_KEYS"


def test_the_notes_warn_when_the_release_runs_without_keys() -> None:
    assert "WARNING: no API keys" in render({})["rmserve/templates/NOTES.txt"]
    assert "WARNING" not in render({"apiKeys": SECRET})["rmserve/templates/NOTES.txt"]
