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
