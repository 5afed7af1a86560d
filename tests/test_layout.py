"""The package's architecture, checked: a layer imports only the layers below it, and modules import no circle.

Ranks, from the bottom: the array layer, the reference pairs, the fast tier, layers, models, then what uses
models (decoding, data parallelism) and training. Data (tokenizers, batches) needs only the array layer.
Imports inside functions count for the ranks too: a lazy import of an upper layer is still a dependency on it.
"""

import ast
import pathlib

import npformer

PACKAGE = pathlib.Path(npformer.__file__).parent
RANKS = {  # the first matching prefix decides a module's rank
    "npformer.backend": 0, "npformer.state": 0, "npformer.counter_random": 0,
    "npformer.config_dicts": 0, "npformer.io": 0, "npformer.gradcheck": 1,
    "npformer.functional": 1, "npformer.kernels.cpu": 1, "npformer.data": 1,
    "npformer.kernels": 2,
    "npformer.nn": 3,
    "npformer.models": 4,
    "npformer.decode": 5, "npformer.parallel": 5, "npformer.inspect": 5,
    "npformer.train": 6, "npformer.size": 6,
    "npformer.scaling": 7,
    "npformer": 7,  # the package's own __init__ gathers everything
}


def rank(module: str) -> int:
    for prefix in sorted(RANKS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return RANKS[prefix]
    raise AssertionError(f"{module} has no rank: add it to RANKS")


def module_name(path: pathlib.Path, package: pathlib.Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, root: pathlib.Path = PACKAGE):
    """(imported npformer module, at top level?) for every import in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" may name a submodule: count the submodule when there is one
            found = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (root.parent / (sub.replace(".", "/") + ".py")).exists() or \
                    (root.parent / sub.replace(".", "/") / "__init__.py").exists()
                found.append(sub if is_module else base)
        else:
            continue
        for target in found:
            if target == "npformer" or target.startswith("npformer."):
                yield target, id(node) in top


def all_modules(root: pathlib.Path = PACKAGE):
    return {module_name(p, root): p for p in root.rglob("*.py")}


def upward_imports(root: pathlib.Path = PACKAGE) -> list[str]:
    problems = []
    for name, path in sorted(all_modules(root).items()):
        for target, _ in imports(path, root):
            if rank(target) > rank(name):
                problems.append(f"{name} (rank {rank(name)}) imports {target} (rank {rank(target)})")
    return problems


def test_lower_layers_never_import_upper_ones():
    problems = upward_imports()
    assert not problems, "\n".join(problems)


def test_no_import_circles():
    modules = all_modules()
    graph = {name: {t for t, at_top in imports(path) if at_top and t != name and t in modules}
             for name, path in modules.items()}
    # a package's __init__ importing its own submodules is how packages work, not a circle
    for name in graph:
        graph[name] = {t for t in graph[name] if not (modules[name].name == "__init__.py" and t.startswith(name + "."))}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_violation(tmp_path):
    """The layering check is not vacuous: in a copy of the tree where an nn module imports npformer.train, the
    upward import is reported (relative and absolute spellings alike)."""
    root = tmp_path / "npformer"
    for path in PACKAGE.rglob("*.py"):
        target = root / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (root / "nn" / "probe.py").write_text("from ..train import checkpoint\n")
    (root / "functional" / "probe.py").write_text("def f():\n    import npformer.models.gpt\n")
    problems = upward_imports(root)
    assert problems == ["npformer.functional.probe (rank 1) imports npformer.models.gpt (rank 4)",
                        "npformer.nn.probe (rank 3) imports npformer.train.checkpoint (rank 6)"]
