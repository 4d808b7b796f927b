"""The house rule, checked: dependencies run one way, downhill (see the layer table in DEVELOPERS.md).

Every module of every project package is parsed with :mod:`ast` (nothing is imported), and every import in it is
collected — at module level, inside functions and methods, under ``if TYPE_CHECKING:``, in ``try``/``except`` —
plus ``importlib.import_module(...)``, ``importlib.util.find_spec(...)`` and ``__import__(...)`` calls whose
module name starts with a literal. A module may import its own package and packages of a strictly lower level;
``model``, ``lambda_fn``, ``web`` and ``core`` import nothing of the project at all (they ship or stand alone).

Type-only imports (``if TYPE_CHECKING:``) count like any other: the module still depends on the names it
annotates with, and the guard is one edit away from a real import cycle. Put shared types in the lower level.

Not seen (by design): code run in a child process from a command line (``python -c "from sentiflow.cli …"``),
which is a process boundary, not an import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "sentiflow": 7,  # roof: the CLI (sentiflow/cli) and Prefect operations (sentiflow/ops)
    "flows": 6,
    "tasks": 5,
    "evaluation": 4,
    "backends": 3,
    "serve": 2,
    "model": 1,
    "lambda_fn": 1,
    "web": 1,  # static files, read by serve through importlib.resources
    "core": 0,  # ground
}
"""Top-level package → level. Higher levels may import lower ones, never the reverse nor a sibling level."""

SELF_CONTAINED = frozenset({"model", "lambda_fn", "web", "core"})
"""Packages that import nothing of the project (``model`` is what ``model.tar.gz`` ships, ``lambda_fn`` what the
Lambda zip ships)."""

OUTSIDE = frozenset({"tests", "benchmarks", "scripts", "deployments", "docs"})
"""Folders beside the packages: they may import the project; the project never imports them."""

_DYNAMIC_IMPORTERS = frozenset({"import_module", "find_spec", "__import__"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (absolute)
    path: Path
    line: int


@dataclass(frozen=True)
class Violation:
    edge: Import
    reason: str

    def __str__(self) -> str:
        edge, where = self.edge, f"{self.edge.path}:{self.edge.line}"
        return f"{edge.module} ({_describe(edge.module)}) imports {edge.target} ({self.reason}) at {where}"


def _top(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def _describe(dotted: str) -> str:
    top = _top(dotted)
    return f"level {LAYERS[top]}" if top in LAYERS else "outside the packages"


def module_name(path: Path, root: Path) -> str:
    """``tasks/data/load.py`` → ``tasks.data.load``; ``tasks/__init__.py`` → ``tasks``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: dict[str, int] = LAYERS) -> list[Path]:
    """Every ``.py`` file of the given top-level packages under ``root`` (sorted)."""
    return sorted(
        path
        for package in packages
        if (root / package).is_dir()
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([name] if name else [])])


def _literal_prefix(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import in ``path``, at any depth, with relative imports made absolute."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, path.relative_to(root), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            relative = node.level > 0
            target = _resolve_relative(module, is_package, node.level, node.module) if relative else node.module or ""
            found.append(Import(module, target, path.relative_to(root), node.lineno))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            prefix = _literal_prefix(node.args[0]) if name in _DYNAMIC_IMPORTERS else None
            if prefix and not prefix.startswith("."):
                found.append(Import(module, prefix.rstrip("."), path.relative_to(root), node.lineno))
    return found


def check(edges: list[Import]) -> list[Violation]:
    """The imports that break the layer table."""
    violations = []
    for edge in edges:
        source, target = _top(edge.module), _top(edge.target)
        if target == source:
            continue
        if target in OUTSIDE:
            violations.append(Violation(edge, "outside the packages: the project never imports it"))
        elif target in LAYERS and source in SELF_CONTAINED:
            violations.append(Violation(edge, f"level {LAYERS[target]}; {source}/ imports nothing of the project"))
        elif target in LAYERS and LAYERS[target] >= LAYERS[source]:
            kind = "uphill" if LAYERS[target] > LAYERS[source] else "the same level"
            violations.append(Violation(edge, f"level {LAYERS[target]}: {kind}"))
    return violations


def import_graph(root: Path = PROJECT_ROOT) -> list[Import]:
    return [edge for path in project_modules(root) for edge in imports_of(path, root)]


# --- the rule, on the real tree -----------------------------------------------------------------------------


def test_no_module_imports_one_above_it() -> None:
    edges = import_graph()
    assert len({edge.module for edge in edges}) > 40  # the walk found the project
    violations = check(edges)
    assert not violations, "imports against the layer table:\n" + "\n".join(f"  {v}" for v in violations)


def test_model_and_lambda_fn_import_nothing_of_the_project() -> None:
    leaks = sorted(
        f"{edge.module} imports {edge.target}"
        for edge in import_graph()
        if _top(edge.module) in ("model", "lambda_fn")
        and _top(edge.target) != _top(edge.module)
        and _top(edge.target) in {*LAYERS, *OUTSIDE}
    )
    assert leaks == []


def test_every_package_has_a_level() -> None:
    """A new top-level package must be placed in the table (or the checker would not see it)."""
    packages = {path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py")}
    assert packages - set(LAYERS) - OUTSIDE == set()


# --- the checker itself -------------------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_reports_an_uphill_import_and_only_that(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/low.py": "def helper():\n    from tasks.high import stage  # uphill, hidden in a function\n",
            "tasks/__init__.py": "",
            "tasks/high.py": "from core.low import helper  # downhill: legal\nfrom . import other\n",
            "tasks/other.py": "import json\n",
        },
    )
    edges = [edge for path in project_modules(tmp_path) for edge in imports_of(path, tmp_path)]
    assert {(edge.module, edge.target) for edge in edges} == {
        ("core.low", "tasks.high"),
        ("tasks.high", "core.low"),
        ("tasks.high", "tasks"),
        ("tasks.other", "json"),
    }
    (violation,) = check(edges)
    assert str(violation) == (
        "core.low (level 0) imports tasks.high (level 5; core/ imports nothing of the project) at core/low.py:2"
    )


def test_the_checker_sees_type_checking_sibling_and_dynamic_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "serve/__init__.py": "",
            "serve/app.py": (
                "from typing import TYPE_CHECKING\n"
                "import importlib\n"
                "if TYPE_CHECKING:\n"
                "    from backends.base import Backend\n"
                "def load(name):\n"
                "    return importlib.import_module(f'flows.{name}')\n"
            ),
            "model/__init__.py": "",
            "model/net.py": "import lambda_fn.handler\n",
            "lambda_fn/__init__.py": "",
            "lambda_fn/handler.py": "import boto3\n",
            "evaluation/__init__.py": "",
            "evaluation/metrics.py": "from tests.fixtures import data\nfrom model.net import x\n",
        },
    )
    edges = [edge for path in project_modules(tmp_path) for edge in imports_of(path, tmp_path)]
    reported = sorted(f"{v.edge.module} -> {v.edge.target}" for v in check(edges))
    assert reported == [
        "evaluation.metrics -> tests.fixtures",
        "model.net -> lambda_fn.handler",
        "serve.app -> backends.base",
        "serve.app -> flows",
    ]
