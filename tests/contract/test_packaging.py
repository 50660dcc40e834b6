"""Every component folder is a package listed in pyproject.toml, and each has the two-file layout."""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_component_folder_is_declared():
    folders = {p.parent.name for p in (ROOT / "components").glob("*/__init__.py")}
    declared = {name.rsplit(".", 1)[1] for name in _declared_packages() if name.startswith("kfp_tabular.components.")}
    assert folders == declared


def test_component_folders_have_core_and_component_and_core_never_imports_kfp():
    for folder in (ROOT / "components").iterdir():
        if not (folder / "component.py").exists():
            continue
        assert (folder / "core.py").is_file(), folder
        for module in folder.glob("*.py"):
            if module.name == "component.py":
                continue
            tree = ast.parse(module.read_text())
            imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            assert "kfp" not in imported, f"{module} imports kfp"


def test_component_function_is_named_after_its_folder():
    for component in (ROOT / "components").glob("*/component.py"):
        tree = ast.parse(component.read_text())
        functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        assert component.parent.name in functions, component
