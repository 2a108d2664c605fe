"""The package as pip builds it: every subpackage in the wheel, the version where the metadata says."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO


def test_the_wheel_holds_every_module_and_the_version(tmp_path):
    # Built without build isolation, so without a download: the installed setuptools must build wheels.
    pytest.importorskip("setuptools.command.bdist_wheel", reason="this setuptools builds no wheels by itself")
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "rungefit", tree / "rungefit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=110,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    from rungefit._version import __version__

    (wheel,) = (tmp_path / "dist").glob("rungefit-*.whl")
    assert wheel.name.startswith(f"rungefit-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(tree).as_posix() for path in (tree / "rungefit").rglob("*.py")}
    assert modules and modules <= names, sorted(modules - names)
    entry_points = zipfile.ZipFile(wheel).read(f"rungefit-{__version__}.dist-info/entry_points.txt").decode()
    assert "rungefit = rungefit.cli.app:main" in entry_points
