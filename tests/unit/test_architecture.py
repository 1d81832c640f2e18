"""The layout's rules (ARCHITECTURE.md): import arrows, a torch-free client, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = ["service", "model_store", "rmserve_client", "rmserve_train", "benchmarks"]
# Generated stubs and pure data are exempt from the size rules.
EXEMPT = {"service/api/grpc/rmserve_pb2.py", "service/api/grpc/rmserve_pb2_grpc.py",
          "model_store/demo/topics.py"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 50


def _modules() -> list[Path]:
    files = [path for package in CODE for path in sorted((ROOT / package).rglob("*.py"))]
    return [path for path in files if str(path.relative_to(ROOT)) not in EXEMPT]


def test_the_import_rules_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_client_imports_without_torch_fastapi_or_the_server() -> None:
    probe = ("import sys, rmserve_client; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "{'torch', 'transformers', 'fastapi', 'uvicorn', 'model_store'} "
             "or m.startswith(('service.scoring', 'service.batching', 'service.backends'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_composition_root_does_not_import_torch_itself() -> None:
    tree = ast.parse((ROOT / "service" / "app.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"torch", "transformers", "onnxruntime"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name}: split it by responsibility"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"
