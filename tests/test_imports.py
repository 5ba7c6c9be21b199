"""The package's layering, read from its source: every ``pdnn`` import sits at module top level,
the import graph has no cycle, and energy accounting never reaches training code; and what
eager work imports of the heavy libraries it does not need."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pdnn

PACKAGE = Path(pdnn.__file__).parent


def _module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(root: Path) -> dict[str, list[tuple[str, ast.stmt, bool]]]:
    """``{module: [(imported module, statement, at top level), ...]}`` for every module under the
    package directory ``root``, counting only imports of the package itself -- absolute or
    relative, at any depth (inside functions, classes, ``if`` and ``try`` blocks too).
    ``from X import name`` counts as an import of ``X.name`` when that is a module."""
    files = {_module_name(root, f): f for f in sorted(root.rglob("*.py"))}
    graph: dict[str, list[tuple[str, ast.stmt, bool]]] = {}
    for module, file in files.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(file.read_text(), str(file))
        top = set(map(id, tree.body))
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                if target == root.name or target.startswith(root.name + "."):
                    found.append((target, node, id(node) in top))
        graph[module] = found
    return graph


def find_cycle(root: Path) -> list[str] | None:
    """One import cycle among the modules of the package at ``root`` (as a closed path), or None."""
    imports = _imports(root)
    graph = {m: sorted({t for t, _, _ in edges if t in imports and t != m}) for m, edges in imports.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_every_pdnn_import_is_at_module_top_level():
    late = [f"{module} imports {target} (line {node.lineno})"
            for module, edges in _imports(PACKAGE).items() for target, node, top in edges if not top]
    assert not late, "imports of pdnn modules inside functions or blocks:\n" + "\n".join(late)


def test_no_module_is_imported_by_name_at_run_time():
    """``importlib.import_module`` and ``__import__`` would hide edges from the graph above."""
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("import_module", "__import__"):
                    found.append(f"{file.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_the_import_graph_has_no_cycle():
    assert find_cycle(PACKAGE) is None, " -> ".join(find_cycle(PACKAGE))


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_cycle_hidden_inside_a_function(tmp_path):
    """The cycle runs through a late, relative import two packages deep, as ``runs`` -> ``convert``
    -> ``runs`` once did; without the late import the same package is acyclic."""
    files = {
        "__init__.py": "",
        "runs.py": "def load():\n    from .convert import replay\n    return replay\n",
        "convert/__init__.py": "from .rundir import replay\n",
        "convert/rundir.py": "import torch\nfrom ..runs import load\n\ndef replay():\n    pass\n",
    }
    root = _write_package(tmp_path / "pkg", files)
    assert find_cycle(root) == ["pkg.convert", "pkg.convert.rundir", "pkg.runs", "pkg.convert"]
    late = [(m, t) for m, edges in _imports(root).items() for t, _, top in edges if not top]
    assert late == [("pkg.runs", "pkg.convert")]

    acyclic = _write_package(tmp_path / "pkg2", {**files, "runs.py": "def load():\n    pass\n"})
    assert find_cycle(acyclic) is None


def test_the_checker_reads_absolute_and_from_package_imports(tmp_path):
    root = _write_package(tmp_path / "pkg", {
        "__init__.py": "from . import a\n",
        "a.py": "import pkg.b\n",
        "b.py": "from pkg import c\n",
        "c.py": "if True:\n    from pkg.a import x\n",
    })
    assert find_cycle(root) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_convert_modules_depend_one_way():
    """pdnn.convert is one module per idea, each importing only the ones before it."""
    order = ["methods", "sites", "rewrite", "batchnorm", "calibration", "rundir"]
    imports = _imports(PACKAGE)
    assert sorted(m for m in imports if m.startswith("pdnn.convert.")) == sorted(f"pdnn.convert.{m}" for m in order)
    for i, name in enumerate(order):
        for target, node, _ in imports[f"pdnn.convert.{name}"]:
            if target.startswith("pdnn.convert."):
                assert target.split(".")[2] in order[:i], f"{name}.py imports {target} (line {node.lineno})"


def test_energy_code_imports_no_training_code():
    """The layering rule: energy reads a model, never trains one (convert, models, io are fine)."""
    forbidden = {"train", "evaluate", "experiments", "cli", "data", "plots", "runs"}
    for name, edges in _imports(PACKAGE).items():
        if name.startswith("pdnn.energy"):
            for target, node, _ in edges:
                assert target.split(".")[1] not in forbidden, f"{name} imports {target} (line {node.lineno})"


def test_eager_work_loads_neither_the_compiler_nor_matplotlib():
    """``import pdnn``, the command's parser, and sampling, training and evaluating eagerly load
    neither torch's compiler (1.3 s) nor matplotlib (0.5 s): only what compiles or draws pays."""
    code = """if True:
        import sys, torch
        from torch import nn
        from pdnn import SampledModel, sample_aware_loss
        from pdnn.cli import build_parser
        from pdnn.nn import PBit
        build_parser()
        net = nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 3))
        sample_aware_loss(net, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), samples=4)[0].backward()
        SampledModel(net.eval(), 10).sample(torch.randn(5, 4))
        print(sorted({"torch._dynamo", "matplotlib"} & set(sys.modules)))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
