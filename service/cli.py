"""The `rmserve` command: serve, manage the model store, and train, evaluate and calibrate models."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError

from model_store.store import DEFAULT_STORE, ModelStore, ModelStoreError
from service.backends.onnx_backend import BackendUnavailableError


def _store_root(arg: Path | None) -> Path:
    from service.settings import StoreSettings

    return arg or StoreSettings().store


def _serve(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    from model_store.demo.build import build_demo
    from service.allocator import fix_mmap_threshold
    from service.lifecycle import locate_models
    from service.logs import configure_logging
    from service.processes import serve_in_process
    from service.serving import fit_fd_limit
    from service.settings import Settings
    from service.supervisor import serve_processes

    settings = Settings(_cli_parse_args=argv)
    configure_logging(settings.log_level, settings.log_format,
                      "supervisor" if settings.separate_engine else None)
    # Before any model loads: see service/allocator.py for why the server picks this itself (an
    # engine process fixes its own).
    fix_mmap_threshold(settings.malloc_mmap_threshold_kib * 1024)
    # A server's log is lines (JSON by default); progress bars would only break them.
    hf_logging.disable_progress_bar()
    if not settings.model:
        build_demo(ModelStore(settings.store))
    # Before anything opens a socket: the connection bound must fit in the descriptor limit.
    settings = settings.model_copy(update={"max_connections": fit_fd_limit(settings.max_connections)})
    sources = locate_models(settings)
    if settings.separate_engine:
        return serve_processes(settings, sources)
    serve_in_process(settings, sources)
    return 0


def _models(args: argparse.Namespace) -> int:
    store = ModelStore(_store_root(args.store))
    if args.action == "list":
        for stored in store.list():
            m = stored.manifest
            onnx = f" onnx={m.onnx.dtype}" if m.onnx else ""
            print(f"{m.ref:40} {m.architecture:40} max_length={m.max_length} {m.created:%Y-%m-%d}"
                  f" backend={m.preferred_backend}{onnx}")
    elif args.action == "show":
        print(store.get(args.ref).manifest.model_dump_json(indent=2))
    elif args.action == "import":
        from model_store.hub import resolve_source

        folder, source = resolve_source(args.src)
        stored = store.publish(
            folder, name=args.name, version=args.version, source=source,
            max_length=args.max_length,
        )
        print(f"imported {stored.manifest.ref} into {stored.path}")
    elif args.action == "export-onnx":
        from model_store.onnx_export import export_onnx, timed_progress

        opset = {"opset": args.opset} if args.opset else {}
        stored, report = export_onnx(
            store, args.ref, fp16=args.fp16, optimize=args.optimize, prefer=args.prefer, **opset,
            progress=timed_progress(lambda line: print(line, file=sys.stderr, flush=True)),
        )
        print(json.dumps({"model": stored.manifest.ref, "file": str(stored.path / "onnx" / "model.onnx"),
                          "preferred_backend": stored.manifest.preferred_backend, **report.as_dict()}))
    elif args.action == "build-demo":
        from model_store.demo.build import build_demo

        stored = build_demo(store)
        print(json.dumps({"model": stored.manifest.ref, **stored.manifest.evaluation}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", add_help=False,
        help="serve reward models over HTTP (rmserve serve --help lists every flag)",
    )
    models = commands.add_parser("models", help="manage the model store")
    models.add_argument("--store", type=Path, help="store root (default: $RMSERVE_STORE or "
                        f"{DEFAULT_STORE})")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every stored model version")
    show = actions.add_parser("show", help="a version's manifest")
    show.add_argument("ref", metavar="NAME[:VERSION]")
    imp = actions.add_parser("import", help="copy an HF model folder (or hub id) into the store")
    imp.add_argument("src", help="local Hugging Face model folder, or a hub id when reachable")
    imp.add_argument("--name", required=True)
    imp.add_argument("--version", help="default: the next vN")
    imp.add_argument("--max-length", type=int, help="default: the tokenizer's or model's limit")
    export = actions.add_parser(
        "export-onnx", help="export a stored model to ONNX, check it against PyTorch, record it"
    )
    export.add_argument("ref", metavar="NAME[:VERSION]")
    export.add_argument("--opset", type=int, help="ONNX opset, 14 to 20 (default: 17)")
    export.add_argument("--fp16", action="store_true", help="float16 weights (for GPUs; checked by ranking)")
    export.add_argument("--optimize", action="store_true",
                        help="apply ONNX Runtime's transformer fusions (attention, layer norm, GELU) offline")
    export.add_argument("--prefer", action="store_true",
                        help="make ONNX this version's preferred backend (`serve --backend auto`)")
    actions.add_parser("build-demo", help="train the embedded demo-minilm-rm model (once)")
    # Offline tools register their own subcommands (rmserve_train: train, eval, models calibrate), so
    # the server never imports them.
    for plugin in entry_points(group="rmserve.commands"):
        plugin.load()(commands, actions)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["serve"]:
            return _serve(argv[1:])
        args = _parser().parse_args(argv)
        if hasattr(args, "run"):
            return args.run(args, ModelStore(_store_root(args.store)))
        return _models(args)
    except (ModelStoreError, BackendUnavailableError) as exc:
        print(f"rmserve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder the user named (its path is in the message)
        print(f"rmserve: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # inconsistent settings: say which, without a traceback
        problems = "; ".join(
            ("--" + str(e["loc"][0]).replace("_", "-") + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        print(f"rmserve: {problems}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
