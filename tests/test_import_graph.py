"""The package's import graph, read from the source: no cycle, every import points down the
layer order of docs/DEVELOPING.md, and no function-local import but of optional dependencies.

A new module must be given a layer here; a failing test names the offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lightsr"

#: Bottom to top. A module may import modules of lower layers, and modules of its own
#: subpackage (``lightsr.data.io`` from ``lightsr.data.training``), never upwards or sideways.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("_version", "atomic", "optim"),
    ("hardware", "config", "layers"),
    ("registry",),
    ("data",),
    ("metrics", "strategies"),
    ("models",),
    ("probe",),
    ("deploy",),
    ("checkpoint", "quantize"),
    ("hub",),
    ("evaluate",),
    ("upscale", "export", "profile", "train", "score"),
    ("visual_report",),  # runs models and counts their cost (profile) for a page
    ("cli",),
    ("", "__main__"),  # the package root: the public API facade, imports everything
]

#: Imports allowed inside functions: optional dependencies (an extra, or one platform's
#: module), each imported where used so the error can name the extra to install.
OPTIONAL = (
    "onnx",
    "onnxruntime",
    "matplotlib",
    "torch.utils.tensorboard",
    "resource",
    "openvino",
    "pillow_heif",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool, bool]]:
    """(node, target, at module level, is lightsr's) for every import of ``path``; lightsr
    targets are given relative to the package (``data.io.read_image``; the root is "")."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    # statements under a module-level if/try (optional imports with a fallback) count as top
    for n in tree.body:
        if isinstance(n, (ast.If, ast.Try)):
            top.update(id(m) for m in ast.walk(n))
    found = []
    for node in ast.walk(tree):
        at_top = id(node) in top
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(p for p in [*base, node.module or ""] if p)
                ours = True
            else:
                module = node.module or ""
                ours = module == "lightsr" or module.startswith("lightsr.")
                module = module.removeprefix("lightsr").lstrip(".") if ours else module
            # `from . import models` imports a module; `from .x import name` a name of x
            found.extend(
                (node, f"{module}.{a.name}".strip(".") if ours else module, at_top, ours)
                for a in node.names
            )
        elif isinstance(node, ast.Import):
            for a in node.names:
                ours = a.name == "lightsr" or a.name.startswith("lightsr.")
                target = a.name.removeprefix("lightsr").lstrip(".") if ours else a.name
                found.append((node, target, at_top, ours))
    return found


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(target: str) -> str:
    """The lightsr module a lightsr import target names (``data.io.read_image`` -> ``data.io``,
    ``_version.__version__`` -> ``_version``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = {_resolve(t) for _n, t, _top, ours in _imports(path) if ours}
        graph[name] = deps - {name}
    return graph


def _layer(module: str) -> int:
    head = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if head in names or module in names:
            return rank
    raise AssertionError(
        f"module lightsr.{module} has no layer: add it to LAYERS in tests/test_import_graph.py "
        "and to the layer list in docs/DEVELOPING.md"
    )


GRAPH = _graph()


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        _layer(module)


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise AssertionError("import cycle: " + " -> ".join(f"lightsr.{c}" for c in cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m))
def test_imports_point_down_the_layers(module: str) -> None:
    head = module.split(".")[0]
    rank = _layer(module)
    for dep in sorted(GRAPH[module]):
        same_package = dep.split(".")[0] == head and "." in module
        subpackage_root = dep.split(".")[0] == head and "." in dep
        if same_package or subpackage_root:
            continue  # inside one subpackage; the cycle test still applies
        assert _layer(dep) < rank, (
            f"lightsr.{module} (layer {rank}) imports lightsr.{dep} (layer {_layer(dep)}): "
            "imports must point down the layer list (tests/test_import_graph.py LAYERS)"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_imports_but_optional_dependencies(module: str) -> None:
    for node, target, top, ours in _imports(MODULES[module]):
        if top:
            continue
        target = f"lightsr.{target}" if ours else target
        optional = any(target == o or target.startswith(o + ".") for o in OPTIONAL)
        assert optional, (
            f"lightsr.{module or '__init__'} line {node.lineno} imports {target} inside a "
            "function: import it at the top (only optional dependencies are imported where used)"
        )


def test_the_graph_reader_sees_real_edges() -> None:
    """Guards the reader itself: edges known from the source must be found."""
    assert "checkpoint" in GRAPH["hub"]
    assert "probe" in GRAPH["deploy"]
    assert "data.io" in GRAPH["data.training"]
    assert GRAPH["errors"] == set()
