"""The package as a user meets it: imports without the C++ extension, builds without a
compiler, runs the demo."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_imports_without_core_and_says_why():
    r = _python("import sys; sys.modules['kepsparse._core'] = None\n"
                "import kepsparse, numpy as np\n"
                "st = kepsparse.backend_status()\n"
                "assert st['reference'] is None, st\n"
                "assert isinstance(st['cpp'], str) and st['cpp'], st\n"
                "print(st['cpp'])\n"
                "w = np.zeros((2, 2, 3, 3), np.float32); w[0, 0, 1, 1] = 1\n"
                "y = kepsparse.conv2d(np.ones((1, 2, 4, 4), np.float32), w, backend='auto')\n"
                "assert y.shape == (1, 2, 2, 2)\n"
                "try:\n"
                "    kepsparse.conv2d(np.ones((1, 2, 4, 4), np.float32), w, backend='cpp')\n"
                "except kepsparse.KepError as e:\n"
                "    print('refused:', e)\n"
                "else:\n"
                "    raise SystemExit('cpp backend ran without _core')\n")
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout


def test_runtime_import_does_not_need_torch():
    r = _python("import sys, kepsparse, numpy as np\n"
                "w = np.zeros((2, 2, 3, 3), np.float32); w[1, 0, 0, 0] = 2\n"
                "kepsparse.conv2d(np.ones((1, 2, 5, 5), np.float32), w)\n"
                "assert 'torch' not in sys.modules, 'torch imported'\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_wheel_builds_without_a_compiler(tmp_path):
    env = {**__import__("os").environ, "CXX": "/nonexistent/g++", "CC": "/nonexistent/gcc"}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                        "--no-build-isolation", "-w", str(tmp_path), "-C",
                        f"build-dir={tmp_path / 'build'}"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheel = next(tmp_path.glob("kepsparse-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kepsparse/__init__.py" in names
    assert not [n for n in names if "_core" in n and n.endswith((".so", ".pyd"))]  # no extension
    assert any(n.startswith("kepsparse/_hls/") for n in names)


@pytest.mark.slow
def test_demo_runs():
    r = subprocess.run([sys.executable, "-m", "kepsparse", "demo"], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "checks passed" in r.stdout and "failed" not in r.stdout
