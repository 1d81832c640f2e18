"""The store against a hostile folder or reference: verification covers the set of files, not only
their contents; names and references are plain folder names that stay inside the store root;
import copies regular files only; a malformed model file is a one-line error naming it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from model_store.manifest import MANIFEST_FILE
from model_store.store import ModelStore, ModelStoreError, StoredModel
from service.cli import main
from service.loading import locate_model


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.fixture
def stored(store: ModelStore, tiny_model_dirs: dict[str, Path]) -> StoredModel:
    return store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")


@pytest.fixture
def model_copy(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> Path:
    """A model folder of our own to spoil."""
    return Path(shutil.copytree(tiny_model_dirs["bert-right"], tmp_path / "src"))


def _make(path: Path, kind: str, tmp_path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        path.write_text("{{ 'every reward changes' }}")
    elif kind == "file-link":
        (tmp_path / "elsewhere.txt").write_text("secret")
        path.symlink_to(tmp_path / "elsewhere.txt")
    elif kind == "dir-link":
        (tmp_path / "elsewhere").mkdir(exist_ok=True)
        (tmp_path / "elsewhere" / "x.jinja").write_text("x")
        path.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    elif kind == "dangling-link":
        path.symlink_to(tmp_path / "nothing-here")
    elif kind == "fifo":
        os.mkfifo(path)


# Finding 5: the set of files is verified.

@pytest.mark.parametrize("relative, kind", [
    ("chat_template.jinja", "file"),
    ("additional_chat_templates/evil.jinja", "file"),
    ("onnx/model.onnx", "file"),
    (".hidden.json", "file"),
    ("chat_template.jinja", "file-link"),
    ("additional_chat_templates", "dir-link"),
    ("added_tokens.json", "dangling-link"),
    ("chat_template.jinja", "fifo"),
])
def test_a_file_the_manifest_does_not_list_fails_verification(
    store: ModelStore, stored: StoredModel, tmp_path: Path, relative: str, kind: str
) -> None:
    _make(stored.path / relative, kind, tmp_path)
    with pytest.raises(ModelStoreError, match=rf"does not list: {relative} in "):
        store.verify(store.get("rm"))
    with pytest.raises(ModelStoreError, match=rf"does not list: {relative} in "):
        locate_model("rm:v1", store)


def test_every_unlisted_file_is_named_up_to_five(store: ModelStore, stored: StoredModel) -> None:
    for number in range(7):
        (stored.path / f"extra-{number}.json").write_text("{}")
    with pytest.raises(ModelStoreError, match=r"extra-0\.json, extra-1\.json, .*extra-4\.json and 2 more"):
        store.verify(stored)


def test_a_listed_file_replaced_by_a_link_to_the_same_bytes_fails(
    store: ModelStore, stored: StoredModel, tmp_path: Path
) -> None:
    outside = tmp_path / "config-copy.json"
    shutil.copyfile(stored.path / "config.json", outside)
    (stored.path / "config.json").unlink()
    (stored.path / "config.json").symlink_to(outside)
    with pytest.raises(ModelStoreError, match=r"config\.json .* is no longer a regular file"):
        store.verify(stored)


def test_the_stores_own_work_folders_do_not_fail_verification(store: ModelStore, stored: StoredModel) -> None:
    """An export being written beside a served version (staging_folder) must not stop it loading."""
    staging = store.staging_folder(stored)
    (staging / "model.onnx").write_bytes(b"half written")
    store.verify(stored)
    assert locate_model("rm", store).version == "v1"


@pytest.mark.parametrize("listed", ["../outside.json", "/etc/hostname", "a/../../b", "", "a//b", "a\\b"])
def test_a_manifest_naming_a_path_outside_its_version_is_refused(
    store: ModelStore, stored: StoredModel, listed: str
) -> None:
    manifest = json.loads((stored.path / MANIFEST_FILE).read_text())
    manifest["files"][listed] = "0" * 64
    (stored.path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelStoreError, match=r"manifest\.json is unreadable or invalid: .*relative path"):
        store.get("rm")


# Finding 10: names, references and the store root.

BAD_NAMES = ["rm\n", "rm\r", "rm\n\n", "\nrm", "rm/x", "../x", "..", ".", ".hidden", "a b", "", "x" * 129,
             "rm\x00", "rm\\x", "rm:v1", "-rm", "ŕm"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_publish_refuses_a_name_or_version_that_is_not_one_plain_folder_name(
    store: ModelStore, tiny_model_dirs: dict[str, Path], name: str
) -> None:
    source = tiny_model_dirs["bert-right"]
    with pytest.raises(ModelStoreError, match="invalid model name"):
        store.publish(source, name=name, source="test")
    with pytest.raises(ModelStoreError, match="invalid version"):
        store.publish(source, name="rm", version=name, source="test")
    assert not store.root.exists() or not any(store.root.rglob(MANIFEST_FILE))


BAD_REFS = [*(n for n in BAD_NAMES if n and n != "rm:v1"), "rm:v1\n", "rm:", "rm:../v1", "rm:v1:v2",
            "../store/rm", "rm/../rm", "rm/v1"]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_a_reference_that_is_not_plain_name_version_is_refused(
    store: ModelStore, stored: StoredModel, ref: str
) -> None:
    if ref == "rm:":  # an empty version means the latest, as before
        assert store.get(ref).manifest.version == "v1"
        return
    with pytest.raises(ModelStoreError, match="invalid model reference"):
        store.get(ref)
    assert not store.contains(ref)
    with pytest.raises(ModelStoreError, match=r"invalid model reference|no config\.json"):
        locate_model(ref, store)


def test_a_reference_cannot_reach_a_model_outside_the_store(
    tmp_path: Path, tiny_model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real model with a valid manifest beside the store is not a store model, whatever the path."""
    outside = ModelStore(tmp_path / "outside")
    outside.publish(tiny_model_dirs["gpt2-left"], name="other", source="test")
    store = ModelStore(tmp_path / "store")
    store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    # Relative to the store root these name the outside model; relative to here, nothing (a path
    # to an existing folder would be served as a folder, by design).
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b" / "c")
    for ref in ["../outside/other", "../../outside/other", "rm/../../outside/other",
                "rm:../../outside/other/v1", f"{tmp_path}/outside/other:v1"]:
        with pytest.raises(ModelStoreError, match="invalid model reference"):
            locate_model(ref, store)


def test_a_link_in_the_store_that_leads_out_of_it_is_refused(
    tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    outside = ModelStore(tmp_path / "outside")
    outside.publish(tiny_model_dirs["gpt2-left"], name="other", source="test")
    store = ModelStore(tmp_path / "store")
    store.publish(tiny_model_dirs["bert-right"], name="rm", source="test")
    (store.root / "evil").symlink_to(outside.root / "other", target_is_directory=True)
    with pytest.raises(ModelStoreError, match="resolves outside the store root"):
        locate_model("evil", store)
    with pytest.raises(ModelStoreError, match="resolves outside the store root"):
        store.publish(tiny_model_dirs["bert-right"], name="evil", source="test")


def test_an_existing_folder_is_still_served_as_is(
    store: ModelStore, stored: StoredModel, tiny_model_dirs: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented folder feature, relative paths outside the store included."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    relative = os.path.relpath(tiny_model_dirs["gpt2-left"])
    assert relative.startswith("..")
    source = locate_model(f"helper={relative}", store)
    assert (source.name, source.version) == ("helper", "local")
    assert locate_model(str(tiny_model_dirs["gpt2-left"]), store).version == "local"


def test_a_folder_that_shadows_a_stored_name_is_ambiguous(
    store: ModelStore, stored: StoredModel, model_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model rm` from a directory holding a folder `rm` would serve that folder, unverified, in
    place of the stored (checksummed) rm."""
    (tmp_path / "cwd").mkdir()
    shutil.copytree(model_copy, tmp_path / "cwd" / "rm")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(ModelStoreError, match=r"'rm' is both a folder here and a model in the store"):
        locate_model("rm", store)
    assert locate_model("./rm", store).version == "local"
    monkeypatch.chdir(store.root)  # inside the store, `rm` is the store's own folder
    assert locate_model("rm", store).version == "v1"


@pytest.mark.parametrize("arg", ["", " ", "alias=", "rm\n=rm", "a/b=rm", "../x=rm", "a b=rm"])
def test_an_empty_reference_or_a_bad_alias_is_refused(
    store: ModelStore, stored: StoredModel, arg: str
) -> None:
    with pytest.raises(ModelStoreError, match=r"empty model reference|invalid model alias"):
        locate_model(arg, store)


# Finding 10: import copies regular files only.

@pytest.mark.parametrize("relative, kind", [
    ("tokenizer_config.json", "file-link"), ("chat_template.jinja", "file-link"),
    ("templates", "dir-link"), ("nested/deeper/x.json", "file-link"), ("added_tokens.json", "dangling-link"),
    ("special_tokens_map.json", "fifo"),
])
def test_import_refuses_a_link_or_special_file_and_names_it(
    store: ModelStore, model_copy: Path, tmp_path: Path, relative: str, kind: str
) -> None:
    target = model_copy / relative
    if target.exists():
        target.unlink()
    _make(target, kind, tmp_path)
    with pytest.raises(ModelStoreError, match=rf"cannot import .*{relative}"):
        store.publish(model_copy, name="rm", source="test")
    leftovers = list((store.root / "rm").iterdir()) if (store.root / "rm").exists() else []
    assert leftovers == []  # no version, no staging folder


def test_links_in_what_import_skips_do_not_matter(
    store: ModelStore, model_copy: Path, tmp_path: Path
) -> None:
    (model_copy / ".git").mkdir()
    _make(model_copy / ".git" / "HEAD", "file-link", tmp_path)
    stored = store.publish(model_copy, name="rm", source="test")
    assert not any(name.startswith(".git") for name in stored.manifest.files)
    store.verify(stored)


# Finding 10: malformed model files are one-line errors from the CLI.

@pytest.mark.parametrize("file, content", [
    ("config.json", b'{"architectures": ['), ("config.json", b"[]"), ("config.json", b"\xff\xfe{}"),
    ("config.json", b""), ("tokenizer_config.json", b"{oops"), ("tokenizer_config.json", b'"text"'),
])
def test_a_malformed_model_file_is_one_line_naming_it(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, content: bytes
) -> None:
    (model_copy / file).write_bytes(content)
    code = main(["models", "--store", str(tmp_path / "store"), "import", str(model_copy), "--name", "rm"])
    stderr = capsys.readouterr().err
    assert code == 1
    assert stderr.startswith("rmserve: ") and stderr.count("\n") == 1, stderr
    assert str(model_copy / file) in stderr and "Traceback" not in stderr
    with pytest.raises(ModelStoreError, match=str(model_copy / file)):
        locate_model(str(model_copy), ModelStore(tmp_path / "store"))


def test_a_malformed_manifest_is_one_line_naming_it(
    store: ModelStore, stored: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    (stored.path / MANIFEST_FILE).write_text('{"name": "rm"')
    assert main(["models", "--store", str(store.root), "show", "rm"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"rmserve: {stored.path / MANIFEST_FILE} is unreadable or invalid")
    assert stderr.count("\n") == 1


def test_a_bad_name_on_the_cli_is_one_line(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--store", str(tmp_path / "s"), "import", str(model_copy), "--name", "rm\n"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("rmserve: invalid model name 'rm\\n'") and stderr.count("\n") == 1
