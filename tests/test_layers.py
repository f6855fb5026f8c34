"""The house rules, read from the import graph: layers point down, no module uses another's private
names, no import cycles (deferred imports inside functions included).

The graph is built with `ast` from every .py file of fmu_cli/, training/, core/ and manifests/ under the
names they install as (one import root, `fmu`: pyproject's package-dir), module-level and
function-level imports, relative and absolute. The checker's own tests below feed
it hand-made sources, so a checker that sees nothing cannot pass.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject.toml [tool.setuptools.package-dir])
PACKAGES = {"fmu_cli": "fmu", "training": "fmu.training", "core": "fmu.core", "manifests": "fmu.manifests"}

# Layers, top (0) to bottom. A module may import its own layer or any layer below it, never above.
# The longest matching prefix names a module's layer. Modules of one layer are siblings: they may
# import each other, and the cycle check keeps that acyclic.
LAYERS: dict[str, int] = {
    "fmu": 0,                  # the Typer app: parsing and printing
    "fmu.manifests": 1,        # the demo inputs (photos, manifest, masks): built on core.faces and core.images,
                               # used by `fmu demo-inputs` and the tests; nothing in training/ or core/ needs them
    "fmu.training": 2,         # prepare, data, losses, trainer, finetune
    "fmu.core.runner": 3,      # fmu generate: plan -> distribute -> worker -> results
    "fmu.core.doctor": 4,      # what is usable here: asks model, faces, shading and scoring; only the CLI uses it
    "fmu.core.scoring": 5,     # fmu score: metrics, summary, report
    "fmu.core.regions": 6,     # face-region parsing on faces + shading, used by training (prepare, masks)
    "fmu.core.model": 7,       # siblings: the diffusers model, face analysis, 3D shading, manifest reading
    "fmu.core.faces": 7,
    "fmu.core.shading": 7,
    "fmu.core.manifest": 7,
    "fmu.core.weights": 7,     # fmu weights pull: the sets, the layout, fetching (converts with core.model)
    "fmu.core": 8,             # utilities: errors, images, digests, native_log, run_record (and core/__init__)
}


@dataclass(frozen=True)
class Edge:
    importer: str
    target: str
    line: int


@dataclass(frozen=True)
class PrivateUse:
    importer: str
    name: str   # "module._name"
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} uses {self.name}"


@dataclass
class Graph:
    modules: set[str]
    edges: list[Edge] = field(default_factory=list)
    private: list[PrivateUse] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)   # relative imports past the top package


def module_name(path: Path, root: Path) -> str:
    """The installed name of a source file: its folder's package, then the path below it."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[parts[0]], *parts[1:]])


def _is_package(name: str, sources: dict[str, tuple[str, bool]]) -> bool:
    return name in sources and sources[name][1]


def _absolute(importer: str, is_package: bool, level: int, module: str | None) -> str | None:
    """The absolute module name of `from <level dots><module> import ...` inside `importer`; None
    when the dots climb above the top package (Python's "beyond top-level package")."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 >= len(base):
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _internal(name: str) -> bool:
    return name.split(".")[0] == "fmu"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.AST) -> str | None:
    """`a.b.c` of a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _private_definitions(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assigned names and `self._x` attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def build_graph(sources: dict[str, tuple[str, bool]]) -> Graph:
    """`sources`: module name -> (source text, is a package __init__). Returns the internal import
    edges and every use of another module's private name: imported by name, read from an imported
    module, or read from an object (`backend._detect_boxes`, `cache._path`) when the name is defined
    by another module and not by the reader (whose own `self._x`/`cls._x` are its business)."""
    graph = Graph(modules=set(sources))
    trees = {name: ast.parse(text) for name, (text, _) in sources.items()}
    definers: dict[str, list[str]] = {}
    for name, tree in trees.items():
        for private in _private_definitions(tree):
            definers.setdefault(private, []).append(name)
    for importer, (_text, is_package) in sources.items():
        tree = trees[importer]
        own = _private_definitions(tree)
        aliases: dict[str, str] = {}  # local name -> internal module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not _internal(alias.name):
                        continue
                    graph.edges.append(Edge(importer, alias.name, node.lineno))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:  # `import a.b.c` binds `a`; attribute chains are resolved below
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(importer, is_package, node.level, node.module)
                if source is None:
                    graph.broken.append(f"{importer}:{node.lineno}")
                    continue
                if not _internal(source):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in sources:  # `from pkg import module`
                        graph.edges.append(Edge(importer, sub, node.lineno))
                        aliases[alias.asname or alias.name] = sub
                        continue
                    graph.edges.append(Edge(importer, source, node.lineno))
                    if _private(alias.name):
                        graph.private.append(PrivateUse(importer, f"{source}.{alias.name}", node.lineno))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            chain = _dotted(node.value)
            if chain is not None and chain.split(".")[0] in aliases:  # an imported module's name
                head, _, rest = chain.partition(".")
                target = ".".join(filter(None, [aliases[head], rest]))
                if target in sources and target != importer:
                    graph.private.append(PrivateUse(importer, f"{target}.{node.attr}", node.lineno))
                continue
            if chain in ("self", "cls") or node.attr in own or node.attr not in definers:
                continue
            owners = sorted(definers[node.attr])
            owner = owners[0] if len(owners) == 1 else "(" + "|".join(owners) + ")"
            graph.private.append(PrivateUse(importer, f"{owner}.{node.attr}", node.lineno))
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module} is in no layer: add its package to LAYERS")


def upward(graph: Graph) -> list[str]:
    return sorted(
        f"{e.importer}:{e.line} -> {e.target}"
        for e in graph.edges
        if layer_of(e.target) < layer_of(e.importer)
    )


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-imports."""
    succ: dict[str, set[str]] = {m: set() for m in graph.modules}
    for e in graph.edges:
        if e.target in succ:
            succ[e.importer].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in succ[v]:
                found.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(found)


def undeclared_deferred_imports(module: str, text: str) -> list[str]:
    """Imports inside functions or classes with no `# deferred: why` reason next to them: on the import
    itself, or on the comment lines right above it (import lines between count as one block). Every
    module of every package keeps its imports at the top unless deferring is the point."""
    lines = text.splitlines()
    tree = ast.parse(text)
    top = set()
    for node in tree.body:  # module level, including `if TYPE_CHECKING:` / `try:` blocks
        top.update(id(n) for n in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                            ast.ClassDef)))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
            continue
        said = any("# deferred:" in lines[i] or "(deferred:" in lines[i]
                   for i in range(node.lineno - 1, node.end_lineno))
        i = node.lineno - 2
        while not said and i >= 0:
            line = lines[i].strip()
            if line.startswith("#"):
                said = "deferred:" in line
            elif not line.startswith(("import ", "from ")):
                break
            i -= 1
        if not said:
            found.append(f"{module}:{node.lineno} {lines[node.lineno - 1].strip()}")
    return found


def repo_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            sources[module_name(path, ROOT)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return sources


# --- the house ---------------------------------------------------------------------------------

def test_every_module_has_a_layer():
    graph = build_graph(repo_sources())
    assert len(graph.modules) > 80  # the walk found the packages
    for module in graph.modules:
        layer_of(module)


def test_no_upward_imports():
    assert upward(build_graph(repo_sources())) == []


def test_no_private_names_across_modules():
    graph = build_graph(repo_sources())
    assert [str(p) for p in graph.private] == []


def test_relative_imports_stay_inside_the_packages():
    assert build_graph(repo_sources()).broken == []


def test_deferred_imports_say_why():
    sources = repo_sources()
    assert len(sources) > 80  # every module of every package
    found = []
    for module, (text, _) in sorted(sources.items()):
        found += undeclared_deferred_imports(module, text)
    assert found == []


def test_no_import_cycles():
    assert cycles(build_graph(repo_sources())) == []


# --- the checker itself, on hand-made sources ---------------------------------------------------

def _graph(**modules: str) -> Graph:
    """Module name (dots written as `__`) -> source; names ending in `__init` are packages."""
    sources = {}
    for key, text in modules.items():
        name = key.replace("__", ".")
        is_package = name.endswith(".init")
        sources[name.removesuffix(".init")] = (text, is_package)
    return build_graph(sources)


def test_checker_sees_an_upward_import_inside_a_function():
    graph = _graph(
        fmu__core__faces__base="def f():\n    from ..runner import worker\n    return worker\n",
        fmu__core__runner__worker="from ..faces.base import Face\n",
    )
    assert upward(graph) == ["fmu.core.faces.base:2 -> fmu.core.runner.worker"]


def test_checker_resolves_relative_and_absolute_imports():
    graph = _graph(
        fmu__core__scoring__init="from .run import score\n",
        fmu__core__scoring__run="import fmu.core.images\nfrom ..faces import base\nfrom . import report as R\n",
        fmu__core__scoring__report="",
        fmu__core__faces__base="",
        fmu__core__images="",
    )
    edges = {(e.importer, e.target) for e in graph.edges}
    assert edges == {
        ("fmu.core.scoring", "fmu.core.scoring.run"),
        ("fmu.core.scoring.run", "fmu.core.images"),
        ("fmu.core.scoring.run", "fmu.core.faces.base"),
        ("fmu.core.scoring.run", "fmu.core.scoring.report"),
    }
    assert upward(graph) == []


def test_checker_sees_private_imports_and_attribute_use():
    graph = _graph(
        fmu__core__faces__cache="def _load(p):\n    return p\n",
        fmu__core__faces__dlib_backend="def _models():\n    return 1\n",
        fmu__training__data="from fmu.core.faces.cache import _load\n",
        fmu__core__scoring__face_batch=(
            "def f():\n    from ..faces import dlib_backend\n    return dlib_backend._models()\n"),
        fmu__core__model__convert="from . import adapter as A\nx = A._prefixed\n",
        fmu__core__model__adapter="",
        fmu__core__runner__plan="import fmu.core.faces.cache\ny = fmu.core.faces.cache._load\n",
    )
    assert sorted(map(str, graph.private)) == [
        "fmu.core.model.convert:2 uses fmu.core.model.adapter._prefixed",
        "fmu.core.runner.plan:2 uses fmu.core.faces.cache._load",
        "fmu.core.scoring.face_batch:3 uses fmu.core.faces.dlib_backend._models",
        "fmu.training.data:1 uses fmu.core.faces.cache._load",
    ]


def test_checker_sees_private_attributes_of_objects_from_other_modules():
    graph = _graph(
        fmu__core__faces__cache="class FaceCache:\n    def _path(self, d):\n        return d\n",
        fmu__training__prepare="def f(faces):\n    return faces._path('x')\n",
        fmu__core__scoring__face_batch="class B:\n    def f(self):\n        return self.backend._detect_boxes(1)\n",
        fmu__core__faces__dlib_backend=(
            "class D:\n    def _detect_boxes(self, i):\n        return self._detect_boxes(i)\n"),
        fmu__core__runner__worker="import os\ndef f(other):\n    os._exit(1)\n    return other._unknown_to_fmu\n",
    )
    assert sorted(map(str, graph.private)) == [
        "fmu.core.scoring.face_batch:3 uses fmu.core.faces.dlib_backend._detect_boxes",
        "fmu.training.prepare:2 uses fmu.core.faces.cache._path",
    ]


def test_checker_sees_a_relative_import_above_the_top_package():
    graph = _graph(fmu__core__run_record="from ...digests import file_digest\n", fmu__core__digests="")
    assert graph.broken == ["fmu.core.run_record:1"]


def test_checker_allows_dunders_and_own_private_names():
    graph = _graph(
        fmu__core__faces__cache="def _load(p):\n    return p\nx = _load\n",
        fmu__core__faces__base="from . import cache\nv = cache.__name__\n",
    )
    assert graph.private == []


def test_checker_finds_a_cycle_hidden_in_a_function():
    graph = _graph(
        fmu__core__shading__lighting="def f():\n    from .render import normal_map\n",
        fmu__core__shading__render="from .lighting import shade\n",
        fmu__core__shading__pose="",
    )
    assert cycles(graph) == [["fmu.core.shading.lighting", "fmu.core.shading.render"]]
    assert upward(graph) == []  # siblings in one package: only the cycle check can catch this


def test_checker_finds_a_cycle_across_sibling_packages():
    graph = _graph(
        fmu__core__faces__base="from ..shading import pose\n",
        fmu__core__shading__pose="def f():\n    import fmu.core.faces.base\n",
    )
    assert cycles(graph) == [["fmu.core.faces.base", "fmu.core.shading.pose"]]


def test_layer_table_order():
    assert layer_of("fmu.app") < layer_of("fmu.manifests.demo") < layer_of("fmu.training.trainer")
    assert layer_of("fmu.training.trainer") < layer_of("fmu.core.runner.worker")
    assert layer_of("fmu.core.runner.worker") < layer_of("fmu.core.doctor") < layer_of("fmu.core.scoring.run")
    assert layer_of("fmu.core.scoring.run") < layer_of("fmu.core.regions.parse") < layer_of("fmu.core.faces.base")
    assert layer_of("fmu.core.faces.base") == layer_of("fmu.core.shading.render") == layer_of("fmu.core.model.load")
    assert layer_of("fmu.core.manifest.read") == layer_of("fmu.core.faces.base") < layer_of("fmu.core.errors")
    assert layer_of("fmu.core.errors") == layer_of("fmu.core")


def test_checker_wants_a_reason_for_a_deferred_import():
    text = ("import numpy as np\n\n\ndef a():\n    import torch  # deferred: heavy (torch)\n\n\n"
            "def b():\n    # deferred: heavy (torch, scipy)\n    import torch\n    from scipy import linalg\n\n\n"
            "def c():\n    from .images import load_rgb\n    return load_rgb\n")
    assert undeclared_deferred_imports("fmu.core.x", text) == ["fmu.core.x:15 from .images import load_rgb"]


# --- the map of the house ----------------------------------------------------------------------

def layout_block(readme: str) -> str:
    """The code block under README's `## Layout` heading."""
    section = readme.split("\n## Layout", 1)[1]
    return section.split("```", 2)[1]


def layout_entry(block: str, name: str) -> str:
    """The text of one entry of the layout block: its line and the indented lines under it."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "")), len(lines))
    return "\n".join(lines[start:end])


def named(names: list[str], text: str) -> list[str]:
    """Those of `names` that `text` does not name as a word of its own."""
    return [n for n in names if not re.search(rf"(?<![\w/.]){re.escape(n)}(?![\w])", text)]


def test_readme_layout_and_core_docstring_name_every_package_and_utility():
    block = layout_block((ROOT / "README.md").read_text(encoding="utf-8"))
    core_doc = ast.get_docstring(ast.parse((ROOT / "core" / "__init__.py").read_text(encoding="utf-8")))
    sub = sorted(d.name for d in (ROOT / "core").iterdir() if (d / "__init__.py").is_file())
    utilities = sorted(f.stem for f in (ROOT / "core").glob("*.py") if f.stem not in ("__init__", "doctor"))
    assert len(sub) >= 8 and "runner" in sub and "errors" in utilities
    assert [p for p in PACKAGES if p != "core" and not block.count(f"\n{p}/")] == []
    assert [d for d in sub if not block.count(f"\ncore/{d}/")] == []
    assert named(utilities, layout_entry(block, "core/*.py")) == []
    assert [d for d in sub if f"{d}/" not in core_doc] == []
    utility_list = next(line for line in core_doc.splitlines() if line.strip().startswith("errors,"))
    assert named(utilities, utility_list) == []


def test_readme_layout_names_every_module():
    """Each product module's file name appears, as a word, in README's Layout block."""
    block = layout_block((ROOT / "README.md").read_text(encoding="utf-8"))
    files = [f for folder in PACKAGES for f in (ROOT / folder).rglob("*.py") if f.stem != "__init__"]
    assert len(files) > 100
    assert [str(f.relative_to(ROOT)) for f in files if not re.search(rf"\b{re.escape(f.stem)}\b", block)] == []


def test_no_two_packages_call_a_module_people():
    """The several-people modules say what each does (manifest cells and layout, the model's masked
    identity, generate's row, score's per-person scores), not four `people.py`."""
    modules = set(repo_sources())
    assert not [m for m in modules if m.rsplit(".", 1)[-1] == "people"]
    assert {"fmu.core.manifest.people_layout", "fmu.core.model.masked_identity", "fmu.core.runner.people_row",
            "fmu.core.scoring.person_scores"} <= modules


def test_generate_checks_live_in_preflight_only():
    """core/runner/generate.py orchestrates; every option check (UsageError) is preflight.py's."""
    tree = ast.parse((ROOT / "core" / "runner" / "generate.py").read_text())
    raised = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Raise) and "UsageError" in ast.unparse(n)]
    checks = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and "check" in n.name]
    assert raised == [] and checks == []
    preflight = {n.name for n in ast.parse((ROOT / "core" / "runner" / "preflight.py").read_text()).body
                 if isinstance(n, ast.FunctionDef)}
    assert {"check_generate", "check_devices", "check_model_files", "check_renderer"} <= preflight
