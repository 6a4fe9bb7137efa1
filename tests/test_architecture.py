"""The layer contracts in ``.importlinter`` hold, and would catch a wrong-way import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "captions", "sfu", "meeting", "evaluation", "cli")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (make setup installs it)")
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / ".importlinter"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("static", "*.pyc")
        )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_contracts_hold_on_the_tree(tree_copy: Path) -> None:
    result = lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "wrong_import"),
    [
        ("sfu/room.py", "import captions.events"),  # the SFU must not know captions
        ("captions/track.py", "import meeting.hub"),  # the core must not know the meeting
        ("captions/runtime.py", "import aiortc"),  # the core knows nothing of WebRTC
        ("common/aio.py", "import sfu.room"),  # common is a leaf
        ("meeting/hub.py", "import cli.main"),  # nothing points up
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    tree_copy: Path, module: str, wrong_import: str
) -> None:
    path = tree_copy / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
