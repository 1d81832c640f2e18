"""Access control over the wire: API keys for HTTP and gRPC, open or closed health and metrics,
and model code that runs only when trusted by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from service.api.grpc import rmserve_pb2 as pb
from service.api.grpc import rmserve_pb2_grpc
from tests.integration.server import free_port, running_server

KEYS = ("first-key-0123456789", "second-key-9876543210")
SCORE = {"inputs": [{"prompt": "Hi", "response": "Hello!"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(
    tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC target) of a server whose keys come from RMSERVE_API_KEYS."""
    port, env = free_port(), {"RMSERVE_API_KEYS": ",".join(KEYS)}
    args = ["--model", str(tiny_model_dirs["bert-right"])]
    with running_server(args, grpc_port=port, store=tmp_path_factory.mktemp("store"), env=env) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.mark.parametrize("headers", [
    {}, bearer("wrong"), bearer(KEYS[0][:-1]),
    {"Authorization": KEYS[0]}, {"Authorization": f"Basic {KEYS[0]}"},
], ids=["missing", "wrong", "prefix-of-a-key", "no-scheme", "basic-scheme"])
def test_a_missing_or_wrong_key_gets_the_same_401_and_no_detail(
    keyed: tuple[str, str], headers: dict[str, str]
) -> None:
    for path, body in [("/v1/score", SCORE), ("/v1/rank", {"prompt": "Hi", "responses": ["a", "b"]}),
                       ("/get_reward", {"query": ["Hi"]})]:
        response = httpx.post(keyed[0] + path, json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": {
            "type": "unauthorized",
            "message": "missing or invalid API key: send the header `Authorization: Bearer <key>`",
        }}
        assert not any(key[:6] in response.text for key in KEYS)
    assert httpx.get(f"{keyed[0]}/v1/models", headers=headers).status_code == 401


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_is_let_in(keyed: tuple[str, str], key: str) -> None:
    response = httpx.post(f"{keyed[0]}/v1/score", json=SCORE, headers=bearer(key))
    assert response.status_code == 200 and len(response.json()["rewards"]) == 1


def test_health_metrics_and_docs_stay_open_by_default(keyed: tuple[str, str]) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(keyed[0] + path).status_code == 200, path


def test_grpc_wants_the_same_keys(keyed: tuple[str, str]) -> None:
    request = pb.ScoreRequest(inputs=[pb.Item(pair=pb.PromptResponse(prompt="Hi", response="Hello!"))])
    with grpc.insecure_channel(keyed[1]) as channel:
        stub = rmserve_pb2_grpc.RewardServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.RpcError) as refused:
                stub.Score(request, metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Authorization: Bearer" in refused.value.details()
        reply = stub.Score(request, metadata=(("authorization", f"Bearer {KEYS[1]}"),), timeout=30)
    over_http = httpx.post(f"{keyed[0]}/v1/score", json=SCORE, headers=bearer(KEYS[1])).json()
    assert list(reply.rewards) == pytest.approx(over_http["rewards"], abs=1e-6)


def test_health_and_metrics_can_be_closed_and_keys_read_from_a_file(
    tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# one key per line\n{KEYS[0]}\n\n")
    args = ["--model", str(tiny_model_dirs["bert-right"]), "--api-keys-file", str(keys_file),
            "--protect-health", "--protect-metrics"]
    with running_server(args, store=tmp_path / "store", probe_headers=bearer(KEYS[0])) as url:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(url + path).status_code == 401, path
            assert httpx.get(url + path, headers=bearer(KEYS[0])).status_code == 200, path
        assert httpx.post(f"{url}/v1/score", json=SCORE, headers=bearer(KEYS[1])).status_code == 401


def _model_with_custom_code(tiny_bert: Path, folder: Path, marker: Path) -> Path:
    """The tiny BERT, but declared as an architecture whose code ships in the folder."""
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-bert"
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig",
                          "AutoModelForSequenceClassification": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(
        "from pathlib import Path\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        f"Path({str(marker)!r}).touch()  # proof that this code ran\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-bert'\n"
        "class CustomModel(BertForSequenceClassification):\n    config_class = CustomConfig\n"
    )
    return folder


def test_model_code_runs_only_when_trusted_by_name(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    marker = tmp_path / "custom-code-ran"
    folder = _model_with_custom_code(tiny_model_dirs["bert-right"], tmp_path / "custom", marker)
    refused = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--model", f"custom={folder}", "--port", "0",
         "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode == 1 and not marker.exists()
    assert "--trust-remote-code custom" in refused.stderr, refused.stderr

    args = ["--model", f"custom={folder}", "--trust-remote-code", "custom"]
    with running_server(args, store=tmp_path / "store") as url:
        assert httpx.post(f"{url}/v1/score", json=SCORE).status_code == 200
    assert marker.exists()
