"""Authentication fails closed: a key source that is configured but holds no usable key stops the
server at start with a one-line reason (it never serves without auth), comments in a keys file are
comments at any indentation, and an open default is logged as a warning.

Over the wire with the real `rmserve serve` on loopback, and in-process where that is cheaper."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.api.auth import ApiKeyConfigError, ApiKeys
from service.cli import main
from service.settings import Settings
from tests.integration.server import free_port, running_server

KEY = "real-key-0123456789abcdef"
SCORE = {"inputs": [{"prompt": "Hi", "response": "Hello!"}]}
START_TIMEOUT_S = 120

# The findings' repros, over the wire: (name, keys file text or None, env, what the error says).
# An existing Secret holding an empty value reaches the server as RMSERVE_API_KEYS="".
REFUSED_STARTS = [
    ("env-only-commas", None, {"RMSERVE_API_KEYS": " , "}, "RMSERVE_API_KEYS is set but holds no key"),
    ("env-empty-secret", None, {"RMSERVE_API_KEYS": ""}, "RMSERVE_API_KEYS is set but holds no key"),
    ("file-comment-only", "# none\n", {}, "holds no key (only blank lines and # comments)"),
]
# More ways to configure keys badly, through `rmserve` in-process (same code path, no start-up
# cost): (keys file text or None, env, args, what the error says).
REFUSED_SETTINGS = [
    ("  # none\n\t# still none\n\n   \n", {}, [], "holds no key (only blank lines and # comments)"),
    (None, {"RMSERVE_API_KEYS": f"{KEY} other"}, [], "RMSERVE_API_KEYS, key 1: an API key must be"),
    (None, {"RMSERVE_API_KEYS": f"{KEY},\x7fdel"}, [], "RMSERVE_API_KEYS, key 2: an API key must be"),
    (None, {"RMSERVE_API_KEYS": f"#{KEY}"}, [], "RMSERVE_API_KEYS, key 1: an API key cannot start with #"),
    (f"{KEY} # prod\n", {}, [], "line 1: an API key must be visible ASCII"),
    (f"# a\n{KEY}\nsecond key\n", {}, [], "line 3: an API key must be visible ASCII"),
    ("<missing>", {}, [], "cannot read it"),
    ("<directory>", {}, [], "cannot read it"),
    (None, {}, ["--protect-metrics"], "--protect-metrics: protecting a path needs API keys"),
    (None, {}, ["--protect-health"], "--protect-health: protecting a path needs API keys"),
]


def _keys_file_args(tmp_path: Path, keys_file: str | None) -> list[str]:
    if keys_file is None:
        return []
    path = tmp_path / "keys"
    if keys_file == "<directory>":
        path.mkdir()
    elif keys_file != "<missing>":
        path.write_text(keys_file)
    return ["--api-keys-file", str(path)]


def _start(tmp_path: Path, keys_file: str | None, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    tmp_path.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--grpc-port", "0", "--store", str(tmp_path / "store"), "--model", "/nonexistent-unused",
         *_keys_file_args(tmp_path, keys_file)],
        env={**base_env, "HF_HUB_OFFLINE": "1", **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_configured_but_empty_key_source_stops_the_server(tmp_path: Path) -> None:
    """All started at once (each start imports torch): every one must exit 2 before listening,
    with one `rmserve: ...` line and no traceback. The model path is bogus on purpose: the keys
    are checked first, so the reason given is the keys'."""
    ports = [free_port() for _ in REFUSED_STARTS]
    processes = [_start(tmp_path / name, text, env, port)
                 for (name, text, env, _), port in zip(REFUSED_STARTS, ports, strict=True)]
    try:
        for (name, *_, message), process, port in zip(REFUSED_STARTS, processes, ports, strict=True):
            _, stderr = process.communicate(timeout=START_TIMEOUT_S)
            assert process.returncode == 2, (name, stderr)
            assert stderr.startswith("rmserve: ") and stderr.count("\n") == 1, (name, stderr)
            assert message in stderr and "Traceback" not in stderr, (name, stderr)
            assert _nothing_listens(port), name
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.mark.parametrize("keys_file, env, args, message", REFUSED_SETTINGS)
def test_bad_key_settings_stop_rmserve_serve_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    keys_file: str | None, env: dict[str, str], args: list[str], message: str,
) -> None:
    for name in [n for n in os.environ if n.startswith("RMSERVE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["serve", "--model", "/nonexistent-unused", *args, *_keys_file_args(tmp_path, keys_file)]
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("rmserve: ") and stderr.count("\n") == 1, stderr
    assert message in stderr, stderr
    assert KEY not in stderr, "a key must never be echoed"


def test_an_indented_comment_is_no_key_over_http(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"  # comment, indented\n\t# another\n  {KEY}  \n")
    args = ["--model", str(tiny_model_dirs["bert-right"]), "--api-keys-file", str(keys_file)]
    with running_server(args, store=tmp_path / "store") as url:
        for authorization in ["Bearer # comment, indented", "Bearer #", "Bearer", "# comment, indented"]:
            response = httpx.post(f"{url}/v1/score", json=SCORE, headers={"Authorization": authorization})
            assert response.status_code == 401, authorization
            assert response.json()["error"]["type"] == "unauthorized"
            assert httpx.get(f"{url}/v1/models", headers={"Authorization": authorization}).status_code == 401
        # The real key passes the same gate (a protected read, so that this test is about the key).
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# In-process: the same rules on the settings, which is where the server applies them.

@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("RMSERVE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("value", ["", " ", ",", " , ", ",,, ,", "\t"])
def test_blank_env_keys_are_a_settings_error(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("RMSERVE_API_KEYS", value)
    with pytest.raises(ValidationError, match="RMSERVE_API_KEYS is set but holds no key"):
        Settings(_cli_parse_args=[])


@pytest.mark.parametrize("text", [
    "# none\n", "  # none\n", "\t#none\n", "\n\n", "", "\ufeff# none\n", " \r\n#x\r\n",
])
def test_a_keys_file_without_keys_is_a_settings_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError, match=r"holds no key"):
        Settings(_cli_parse_args=["--api-keys-file", str(path)])


def test_comments_and_blanks_are_skipped_and_keys_trimmed(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"\ufeff# header\n   # indented\n\n  {KEY}\t\n#{KEY}-commented\n")
    clean_env.setenv("RMSERVE_API_KEYS", " env-key-01234567 , ,")
    settings = Settings(_cli_parse_args=["--api-keys-file", str(path)])
    assert settings.all_api_keys() == ["env-key-01234567", KEY]


@pytest.mark.parametrize("args", [["--protect-health"], ["--protect-metrics"]])
def test_protecting_a_path_without_keys_is_a_settings_error(
    clean_env: pytest.MonkeyPatch, args: list[str]
) -> None:
    with pytest.raises(ValidationError, match=f"{args[0]}: protecting a path needs API keys"):
        Settings(_cli_parse_args=args)


@pytest.mark.parametrize("keys", [[""], [" "], ["a b"], ["ключ"], ["line\nbreak"]])
def test_api_keys_refuse_a_key_that_would_match_nothing_or_everything(keys: list[str]) -> None:
    with pytest.raises(ApiKeyConfigError, match="API key 1: an API key must be visible ASCII"):
        ApiKeys(keys)


@pytest.mark.parametrize("host, warned", [
    ("0.0.0.0", True), ("::", True), ("", True), ("rm.example.com", True), ("10.1.2.3", True),
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("[::1]", False), ("localhost", False),
])
def test_running_without_keys_off_loopback_is_logged_as_a_warning(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="rmserve.auth"):
        assert Settings(_cli_parse_args=["--host", host]).all_api_keys() == []
    warnings = [r for r in caplog.records if r.name == "rmserve.auth" and r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    if warned:
        assert "no API keys configured" in warnings[0].getMessage()


def test_keys_silence_the_warning(clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clean_env.setenv("RMSERVE_API_KEYS", KEY)
    with caplog.at_level(logging.WARNING, logger="rmserve.auth"):
        assert Settings(_cli_parse_args=["--host", "0.0.0.0"]).all_api_keys() == [KEY]
    assert not [r for r in caplog.records if r.name == "rmserve.auth"]


def test_a_short_key_is_logged_as_a_warning(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("RMSERVE_API_KEYS", f"{KEY},zq9")
    with caplog.at_level(logging.WARNING, logger="rmserve.auth"):
        assert Settings(_cli_parse_args=[]).all_api_keys() == [KEY, "zq9"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "rmserve.auth"]
    assert "API key(s) 2 are shorter than 16 characters" in warning and "zq9" not in warning
