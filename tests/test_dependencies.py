"""fgjax's packages import one way: each layer below only from the layers before it (and a
package from itself). The same order is drawn in the README's "Layout" section."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "fgjax"

# lowest first; a package may import its own modules and those of earlier layers only, so
# siblings of one layer (train and evaluate) never import each other
LAYERS = (
    ("distributed", "integrity", "config_utils", "console", "trees"),
    ("storage",),
    ("models",),
    ("data",),
    ("native", "sharding"),
    ("rundir",),
    ("hf",),
    ("train", "evaluate"),
    ("study", "export", "fit", "smoke", "launch", "predict"),
    ("main",),
)
LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def package_of(path: Path, root: Path) -> str:
    """fgjax/train/step.py -> "train"; fgjax/native.py -> "native"."""
    return path.relative_to(root).parts[0].removesuffix(".py")


def imported_packages(path: Path) -> set[str]:
    """The fgjax packages a file imports, anywhere in it (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fgjax":  # from fgjax import models, native
                names = [f"fgjax.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("fgjax.")}
    return found


def back_edges(root: Path) -> list[str]:
    """'file imports package' for every import against the layer order, and every package that
    has no layer."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "__init__.py":
            continue
        mine = package_of(path, root)
        if mine not in LAYER_OF:
            problems.append(f"{path.relative_to(root.parent)}: package {mine!r} has no layer")
            continue
        for other in sorted(imported_packages(path) - {mine}):
            if LAYER_OF.get(other, len(LAYERS)) >= LAYER_OF[mine]:
                problems.append(f"{path.relative_to(root.parent)} imports fgjax.{other}")
    return problems


def test_packages_import_only_from_earlier_layers():
    assert back_edges(ROOT) == []


@pytest.mark.parametrize(
    "where, code",
    [
        ("hf/workdir.py", "from fgjax.train.init import PARAMS_EXPORT\n"),
        ("evaluate/evaluator.py", "def f():\n    from fgjax.train import sharding\n"),
        ("models/vlm.py", "import fgjax.data.images\n"),
        ("data/x.py", "from fgjax import native\n"),
        ("newpackage/x.py", "import numpy\n"),
    ],
)
def test_a_back_edge_or_an_unlayered_package_is_found(tmp_path, where, code):
    path = tmp_path / "fgjax" / where
    path.parent.mkdir(parents=True)
    path.write_text(code)
    (tmp_path / "fgjax" / "models").mkdir(exist_ok=True)
    (tmp_path / "fgjax" / "models" / "ok.py").write_text("from fgjax.models import layers\n")
    assert len(back_edges(tmp_path / "fgjax")) == 1, back_edges(tmp_path / "fgjax")
