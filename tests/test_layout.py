"""The package's shape, read with ``ast``: short functions, imports that only run down the layers, no cycles.

Layers, lowest first (a module may import its own layer and the ones below, never one above)::

    model_config, presets, run_config, settings_file, utils, ops, data, memory  <-  nexttoken  <-  modeling
        <-  evaluation, quantization  <-  integrations  <-  training, tasks  <-  cli

Every import counts, also those inside functions (a lazy import runs all the same) and under
``TYPE_CHECKING``. The bare ``import s3cmn`` (the package, which registers the model with transformers)
sits with modeling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s3cmn"
MAX_FUNCTION_LINES = 80
LAYERS: tuple[tuple[str, ...], ...] = (
    ("model_config", "presets", "run_config", "settings_file", "utils", "ops", "data", "memory"),
    ("nexttoken",),  # the read-outs on the LM's final hidden states; generation in modeling calls them
    ("modeling", ""),  # "": the package itself (s3cmn/__init__.py)
    ("evaluation", "quantization"),
    ("integrations",),
    ("training", "tasks"),
    ("cli",),
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def layer(module: str) -> int:
    """The layer of a dotted s3cmn module name (by its first part below ``s3cmn``)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYER_OF:
        raise AssertionError(f"{module}: its folder {top!r} has no layer; add it to LAYERS in {__file__}")
    return LAYER_OF[top]


def imported_modules(module: str, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, s3cmn module) for every import in ``tree``, relative ones resolved, ``from p import m`` -> p.m."""
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "s3cmn":
                    yield node.lineno, _known(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "s3cmn":
                continue
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield node.lineno, name if name in MODULES else _known(base)


def _known(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package (``s3cmn.x.attr`` -> ``s3cmn.x``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def parsed() -> Iterator[tuple[str, Path, ast.AST]]:
    for module, path in MODULES.items():
        yield module, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def long_functions() -> list[str]:
    found = []
    for _, path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def upward_imports() -> list[str]:
    found = []
    for module, path, tree in parsed():
        for line, target in sorted(set(imported_modules(module, tree))):
            if layer(target) > layer(module):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} (a higher layer)")
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, _, tree in parsed():
        graph[module].update(t for _, t in imported_modules(module, tree) if t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's walk, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(_one_cycle(graph, set(component)))
    return components


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the first module of ``component`` back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


# --------------------------------------------------------------------------------------------------
# the checker's own contract, on small hand-made cases


def test_cycle_walk_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_imports_resolve_relative_lazy_and_from_package() -> None:
    tree = ast.parse("from .checkpoint import save_checkpoint\n"
                     "def f():\n    from s3cmn.cli import train\n    import s3cmn.modeling.lm\n"
                     "from s3cmn.utils.fields import ConfigError\nimport s3cmn\nimport numpy\n")
    assert sorted(t for _, t in imported_modules("s3cmn.training.loop", tree)) == [
        "s3cmn", "s3cmn.cli.train", "s3cmn.modeling.lm", "s3cmn.training.checkpoint", "s3cmn.utils.fields"]
    assert layer("s3cmn.cli.train") > layer("s3cmn.training.loop") > layer("s3cmn.modeling.lm") > layer("s3cmn.ops")


# --------------------------------------------------------------------------------------------------
# the package


@pytest.mark.parametrize("check", [long_functions, upward_imports], ids=["function_length", "import_layers"])
def test_package_layout(check) -> None:
    found = check()
    assert not found, f"{len(found)} found:\n" + "\n".join(found)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
