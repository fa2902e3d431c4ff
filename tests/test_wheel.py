"""The package as users install it: a wheel built from the checkout installs into a fresh
venv and runs the demo from there (the report's templates and the shipped data sets are
package data; a missing file fails here, not on a user's machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs_the_demo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("obliviate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "obliviate/report/templates/report.html" in names  # package data went in
    assert any(n.startswith("obliviate/resources/") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the fresh venv sees this venv's dependencies (torch and the rest, installed already:
    # the test runs offline) but not the editable checkout: obliviate comes from the wheel
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True)
    where = subprocess.run([str(py), "-c", "import obliviate; print(obliviate.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed wheel, not the checkout
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([str(venv / "bin" / "obliviate"), "demo", "--out", str(tmp_path / "demo"),
                          "--entities", "10", "--methods", "ga"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").is_file()
    assert "Report:" in out.stdout
