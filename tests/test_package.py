"""The package installs as a regular package (not only editable): a non-editable `pip install .`, as
the Docker image does, must carry every module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("tunefleet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT / "platform")) for p in (ROOT / "platform" / "tunefleet").rglob("*.py")}
    assert expected and expected <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_public_names_resolve():
    import tunefleet

    for name in tunefleet.__all__:
        assert getattr(tunefleet, name) is not None


PACKAGE = ROOT / "platform" / "tunefleet"
# The flow, as platform/tunefleet/__init__.py describes it: each stage imports only from those before it.
STAGES = ["spec", "cluster", "data", "tasks", "train", "tracking", "search", "serve", "cli"]
# Importable from anywhere: the plug-in registry of names and the lazy re-export helper.
BASE_MODULES = {"plugins", "_lazy", "spec"}


def _stage(module: str) -> str:
    """'tunefleet.train.loop' -> 'train'; the package's own __init__ sits on top, with cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cli"


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every tunefleet import in a file, lazy ones too."""
    import ast

    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = ".".join(parts[:-1])
    tree = ast.parse(path.read_text())
    # Imports for type checkers only (`if TYPE_CHECKING:`) never run: they are not a dependency.
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for statement in node.body for inner in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target.startswith("tunefleet"):
                if target == "tunefleet" or (node.module is None and node.level):
                    for name in names:  # `from . import tracking` names a module
                        found.append((f"{target}.{name}", [], node.lineno))
                else:
                    found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("tunefleet")]
    return found


def test_each_stage_imports_only_from_stages_before_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _stage(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if own in BASE_MODULES - {"spec"} or path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        for target, _, line in _imports(path):
            stage = _stage(target)
            if stage in BASE_MODULES or stage == own:
                continue
            if own == "spec" or STAGES.index(stage) > STAGES.index(own):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {target} (a later stage)")
    assert not wrong, "\n".join(wrong)


def test_no_module_reaches_into_another_modules_private_names():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {private} from {target}")
            if any(part.startswith("_") and part != "_lazy" and not (part == "_tags" and "tasks" in str(path))
                   for part in target.split(".")[1:]):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports the private module {target}")
    assert not wrong, "\n".join(wrong)


def test_no_task_is_named_outside_tasks_and_the_registry():
    """What is task-specific lives in its task module: the rest of the package asks the task."""
    from tunefleet import plugins

    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "tasks" or relative.name == "plugins.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for name in plugins.TASKS:
                if f'"{name}"' in line or f"'{name}'" in line:
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: names task {name!r}")
    assert not wrong, "\n".join(wrong)
