"""The package's layers, checked on its import graph (built with ``ast``, function-level imports included)."""

import ast
from pathlib import Path

import amodalize

PACKAGE = Path(amodalize.__file__).parent
# Conversion and inference must not stand on training code: whoever changes the training loop
# should not be able to break `convert`.
BELOW_TRAINING = ("amodalize.data", "amodalize.models", "amodalize.infer", "amodalize.scene")
BELOW_TRAINING_MODULES = ("amodalize.pipeline", "amodalize.errors", "amodalize.config") + tuple(
    f"amodalize.check.{m}" for m in ("evaluate", "amodal_ap", "quality", "review", "report", "visualize")
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the amodalize modules it imports (``from pkg import mod`` resolved to the module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "amodalize.infer.hosts" in graph["amodalize.pipeline"]
    assert "amodalize.infer.convert" in graph["amodalize.infer.hosts"]
    assert "amodalize.infer.calibrate" in graph["amodalize.train.loop"]


def test_nothing_below_training_imports_it():
    offenders = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith(BELOW_TRAINING) or module in BELOW_TRAINING_MODULES
        for target in targets
        if target.startswith("amodalize.train")
    ]
    assert offenders == []


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_command_modules_never_import_the_group():
    graph = import_graph()
    commands = [m for m in graph if m.startswith("amodalize.cli.")]
    assert len(commands) >= 6
    assert all("amodalize.cli" not in graph[m] for m in commands)


def test_command_modules_stay_readable():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 400, sizes
