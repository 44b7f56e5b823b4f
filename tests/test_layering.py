"""The layout's promises, checked: ``scheduler/`` never imports Kubernetes, Kopf or the operator, and
``pyproject.toml`` ships every package folder (a subpackage missing from its list would silently
be missing from the wheel)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: Folder → the package it is mapped to (``[tool.setuptools.package-dir]``).
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
#: What the pure scheduler must not import (top-level names, and the operator's package).
FORBIDDEN = ("kopf", "kubernetes", "kubernetes_asyncio", "hetsched.operator")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_scheduler_imports_neither_kubernetes_nor_kopf_nor_the_operator() -> None:
    files = sorted((ROOT / "scheduler").rglob("*.py"))
    assert len(files) > 20
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert bad == []


def test_pyproject_lists_every_package_folder() -> None:
    found = set()
    for package, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert sorted(listed) == sorted(found)
    # A folder of modules without __init__.py would be a namespace package nobody lists.
    for folder in PACKAGE_DIRS.values():
        for module in (ROOT / folder).rglob("*.py"):
            assert (module.parent / "__init__.py").exists(), module.relative_to(ROOT)


def _folder(package: str) -> Path:
    for mapped, folder in PACKAGE_DIRS.items():
        if package == mapped or package.startswith(mapped + "."):
            return ROOT / folder / Path(*package.removeprefix(mapped).lstrip(".").split(".") or [])
    raise AssertionError(f"{package} is not under {sorted(PACKAGE_DIRS)}")


def test_package_data_ships_every_data_file() -> None:
    """Each package-data glob matches files, and every non-Python file of a package is matched by one
    (the catalogs and the fitted efficiencies are data the code reads at import)."""
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]
    shipped: set[Path] = set()
    for package, globs in package_data.items():
        for pattern in globs:
            matched = sorted((_folder(package)).glob(pattern))
            assert matched, f"{package}: {pattern} matches no file"
            shipped.update(matched)
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        folder = _folder(package)
        for path in folder.rglob("*"):
            in_subpackage = any((p / "__init__.py").exists() for p in path.parents if folder in p.parents)
            if (
                path.is_dir()
                or path.suffix in (".py", ".pyc")
                or "__pycache__" in path.parts
                or in_subpackage
            ):
                continue
            assert path in shipped, f"{path.relative_to(ROOT)} is not in any package-data glob"
