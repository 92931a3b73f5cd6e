"""The package as installed: one ``pyro_base.*`` namespace, its folders, no import cycles."""

import ast
import importlib
import importlib.metadata
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import pyro_base

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"pyro_base": ROOT / "pyro_base", "pyro_base.models": ROOT / "models",
           "pyro_base.inference": ROOT / "inference"}


def _modules() -> dict[str, Path]:
    """Every module of the namespace, by its dotted name, from the folders on disk."""
    out: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _top_level_imports(name: str, path: Path) -> set[str]:
    """``pyro_base`` modules imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("pyro_base")}


def test_version_is_the_installed_metadata():
    assert pyro_base.__version__ == importlib.metadata.version("pyro-base")


def test_every_package_folder_is_installed():
    """pyproject's package list is exactly the folders that hold an ``__init__.py``."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    on_disk = {n for n, p in _modules().items() if p.name == "__init__.py"}
    assert listed == on_disk


def test_every_module_imports_under_the_namespace():
    names = [m.name for m in pkgutil.walk_packages(pyro_base.__path__, "pyro_base.")]
    assert "pyro_base.models.base_model" in _modules()
    for name in sorted(set(names) | set(_modules())):
        if name.endswith("__main__"):
            continue
        assert importlib.import_module(name).__name__ == name


def test_no_import_cycle():
    """The module-level import graph of pyro_base.* is acyclic (lazy imports inside functions
    are allowed: they break no initialisation order)."""
    mods = _modules()
    graph = {n: {m for m in _top_level_imports(n, p) if m in mods and m != n}
             for n, p in mods.items()}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m):] + [n, m])
                            if m in stack else f"import cycle through {n} -> {m}")
            if m not in state:
                visit(m, [*stack, n])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])


def test_no_module_under_two_names():
    """Library, scripts and tests import ``pyro_base.*`` only, never the bare folder names."""
    bad = []
    for path in [*ROOT.glob("*/**/*.py")]:
        if ".git" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            bad += [f"{path}: {n}" for n in names if n.split(".")[0] in ("models", "inference")]
    assert not bad


def test_bare_folder_names_are_not_importable_outside_the_repo(tmp_path):
    code = ("import importlib.util as u; import pyro_base.models, pyro_base.inference; "
            "print(u.find_spec('models') is None, u.find_spec('inference') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "True"]


def test_cli_splits_are_the_tasks_splits():
    from pyro_base.cli import SPLITS
    from pyro_base.tasks.base import SPLITS as TASK_SPLITS

    assert SPLITS == TASK_SPLITS


@pytest.mark.parametrize("command", ["meta-svi", "adapt", "evaluate", "search", "train", "plot",
                                     "bench", "fuzz", "agreement",
                                     "experiment"])
def test_command_help_does_not_import_torch(command):
    """``--help`` builds the parser only: torch and Pyro (seconds to import) stay unloaded."""
    code = ("import sys; from pyro_base.__main__ import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'pyro' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-2:] == ["False", "False"]


def test_pyro_base_command_lists_every_command_and_refuses_unknown_ones():
    from pyro_base.__main__ import COMMANDS

    help_ = subprocess.run([sys.executable, "-m", "pyro_base", "--help"], capture_output=True,
                           text=True, check=True).stdout
    assert all(name in help_ for name in COMMANDS)
    bad = subprocess.run([sys.executable, "-m", "pyro_base", "fly"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown command 'fly'" in bad.stderr
    version = subprocess.run([sys.executable, "-m", "pyro_base", "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"pyro-base {pyro_base.__version__}"


def test_the_wheel_holds_one_namespace_and_the_command(tmp_path):
    """``pip install .`` installs pyro_base/ only (models/ and inference/ inside it) and the
    ``pyro-base`` console command."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyro_base", "models", "inference"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(src)], check=True, capture_output=True,
                   cwd=tmp_path)
    (wheel,) = tmp_path.glob("pyro_base-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"pyro_base", f"pyro_base-{pyro_base.__version__}.dist-info"}
    for module in ("pyro_base/models/base_model.py", "pyro_base/inference/vi/guides.py",
                   "pyro_base/inference/commands/meta_svi.py", "pyro_base/__main__.py"):
        assert module in names
    entry = zipfile.ZipFile(wheel).read(
        f"pyro_base-{pyro_base.__version__}.dist-info/entry_points.txt").decode()
    assert "pyro-base = pyro_base.__main__:main" in entry
