"""The package's modules import in one direction, and only the command line prints.

Read from the source (every `import`, function-local ones included), so an import that would
close a cycle or reach upward fails here before it works by accident at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "modeling_fmrilm"

LAYERS = [  # lowest first: a module may import its own layer and those below it, never above
    {
        "",
        "configuration_fmrilm",
        "modeling_fmrilm",
        "modeling_fmri_tokenizer",
        "processing_fmrilm",
        "feature_extraction_fmrilm",
        "errors",
    },  # the remote-code files (and the package root that registers them)
    {"atomic", "locking", "hub", "splits", "io", "embeddings", "figures", "sharded_build", "window_store"},
    {"descriptors"},
    {"tasks"},  # task sources, prompts, labels, baselines, scoring (not the engine)
    {"training"},
    {"tasks.evaluate", "tasks.__init__"},  # the evaluation engine (the tasks package re-exports it)
    {"ask", "export", "model_card", "app"},
    {"pipeline"},
    {"cli"},
]
ALLOWED_UPWARD = {
    # the processor reads scan files through the package's readers when it is installed; as remote
    # code without it, the import fails and the processor says so (tests/models/test_export.py)
    ("processing_fmrilm", "io"),
}


def module_name(path: Path) -> str:
    """`tasks.evaluate` for `modeling_fmrilm/tasks/evaluate.py`, `io` for `io/__init__.py`, `""` for the root."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1] + (("__init__",) if parts[:-1] == ("tasks",) else ())
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Index in `LAYERS` of the most specific entry naming `module` or a package above it."""
    candidates = [module] + [module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)]
    for name in candidates:
        for index, layer in enumerate(LAYERS):
            if name in layer:
                return index
    raise AssertionError(f"{module or 'modeling_fmrilm'}: in no layer of tests/test_layering.py; place it")


def imports_of(path: Path) -> set[str]:
    """The package modules `path` imports, as `module_name` spells them."""
    module = module_name(path)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.removesuffix(".__init__").split(".")
    package = [part for part in package if part]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "modeling_fmrilm":
                target = node.module.removeprefix("modeling_fmrilm").lstrip(".")
            else:
                continue
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("modeling_fmrilm").lstrip(".")
                for alias in node.names
                if alias.name.split(".")[0] == "modeling_fmrilm"
            )
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    importer = module_name(path)
    upward = [
        target
        for target in sorted(imports_of(path))
        if layer_of(target) > layer_of(importer) and (importer, target) not in ALLOWED_UPWARD
    ]
    assert not upward, f"{importer or 'modeling_fmrilm'} (layer {layer_of(importer)}) imports {upward} from above"


def test_the_checker_sees_relative_local_and_absolute_imports():
    """The checker is not vacuous: it finds the imports of a known module, including function-local ones."""
    assert {"training.stage1", "training.stage2", "training.stage3", "tasks.evaluate", "ask"} <= imports_of(
        PACKAGE / "pipeline.py"
    )
    assert "tasks.data" in imports_of(PACKAGE / "training" / "stage3.py")
    assert "io" in imports_of(PACKAGE / "processing_fmrilm.py")  # the one allowed upward import, local and absolute
    assert layer_of("tasks.evaluate") > layer_of("training.stage3") > layer_of("tasks.sources")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("a_new_module")


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_the_command_line_prints(path):
    """Library modules report through `logging` (the `fmrilm` command shows the records) or return text."""
    if module_name(path) == "cli":
        return
    calls = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not calls, f"{path.relative_to(PACKAGE)} prints at lines {calls}"


def top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level: definitions, assignments and imports."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_ends_with_its_public_names(path):
    """`__all__` is the module's last statement (before a `__main__` guard) and names only what it binds, once each."""
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))]
    last = body[-1]
    target = last.targets[0] if isinstance(last, ast.Assign) else getattr(last, "target", None)
    assert isinstance(target, ast.Name) and target.id == "__all__", f"{path.name}: the last statement is not __all__"
    names = [element.value for element in last.value.elts]
    assert len(names) == len(set(names)), f"{path.name}: __all__ repeats a name"
    unbound = sorted(set(names) - top_level_names(tree))
    assert not unbound, f"{path.name}: __all__ names {unbound}, which the module does not bind"
