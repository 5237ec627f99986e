#!/usr/bin/env bash
# Build csrc/ (kepsparse._core) with AddressSanitizer + UndefinedBehaviorSanitizer into a
# separate build folder (build/sanitize) and run the kernel tests against that build.
#
# The normal .venv install is left untouched: the instrumented _core is loaded only inside
# the test process, by pointing the editable install's import finder at build/sanitize
# (see the launcher below). Python itself is not instrumented, so libasan is preloaded and
# leak detection is off (CPython and numba never free some allocations by design).
# Any sanitizer report aborts the process (halt_on_error), so the run fails.
#
# Usage: bash scripts/sanitize.sh [extra pytest args]      (run from anywhere)
# Env:   SANITIZE_TESTS  the test paths (default below); JOBS build parallelism (default 1);
#        SANITIZE_SRC    the source tree to build (default: this checkout), e.g. a
#                        `git archive HEAD csrc CMakeLists.txt hls` export to test a commit
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
BUILD=$ROOT/build/sanitize
SRC=${SANITIZE_SRC:-$ROOT}
JOBS=${JOBS:-1}
TESTS=${SANITIZE_TESTS:-"tests/kernels tests/test_nonfinite.py tests/test_reliability.py tests/runtime/test_maxpool.py tests/runtime/test_fusion.py tests/runtime/test_native_steps.py"}
start=$(date +%s)

CXX=${CXX:-g++}
LIBASAN=$($CXX -print-file-name=libasan.so)
LIBUBSAN=$($CXX -print-file-name=libubsan.so)
if [ ! -e "$LIBASAN" ] || [ ! -e "$LIBUBSAN" ]; then
    echo "sanitize: $CXX has no libasan.so/libubsan.so (install gcc's sanitizer runtimes)" >&2
    exit 2
fi

SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
# a build folder configured from another source tree (SANITIZE_SRC) cannot be reused
if [ -f "$BUILD/CMakeCache.txt" ] && \
   ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$(cd "$SRC" && pwd)" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD"
fi
echo "sanitize: configuring $BUILD from $SRC ($SAN_FLAGS)"
"$PY" -m cmake -S "$SRC" -B "$BUILD" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$(dirname "$PY")/ninja" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$CXX" \
    -DCMAKE_CXX_FLAGS="$SAN_FLAGS" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DPython_EXECUTABLE="$PY" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$BUILD.configure.log" 2>&1 \
    || { cat "$BUILD.configure.log"; exit 1; }
echo "sanitize: building _core with $JOBS job(s)"
"$PY" -m cmake --build "$BUILD" --target _core -j "$JOBS"
SO=$(ls "$BUILD"/_core*.so | head -n 1)
built=$(date +%s)

# The launcher: make `import kepsparse._core` load the instrumented build, check that it
# did, then run pytest in this same process.
LAUNCH=$(cat <<'EOF'
import os, sys
so = os.environ["KEPSPARSE_SANITIZED_CORE"]
for finder in sys.meta_path:  # scikit-build-core's editable finder
    files = getattr(finder, "known_wheel_files", None)
    if isinstance(files, dict) and "kepsparse._core" in files:
        files["kepsparse._core"] = so
        break
else:
    sys.exit("sanitize: kepsparse is not an editable install; cannot redirect kepsparse._core")
import kepsparse._core as core
assert os.path.realpath(core.__file__) == os.path.realpath(so), core.__file__
print("sanitize: kepsparse._core from", core.__file__, flush=True)
import pytest
sys.exit(pytest.main(sys.argv[1:]))
EOF
)

export KEPSPARSE_SANITIZED_CORE=$SO
# halt_on_error: the first report aborts with a non-zero status. detect_leaks=0: CPython.
# alloc_dealloc_mismatch=0: torch/numpy (not instrumented) mix allocators in ways ASan
# cannot see correctly. The rest is for readable reports.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:alloc_dealloc_mismatch=0:detect_odr_violation=0:strict_init_order=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
set +e
# test_repeated_calls_do_not_grow_memory measures resident memory, which ASan's quarantine
# of freed blocks inflates by design: it is meaningless here (it runs in the normal suite).
LD_PRELOAD="$LIBASAN:$LIBUBSAN" "$PY" -c "$LAUNCH" -q -p no:cacheprovider $TESTS \
    --deselect tests/test_reliability.py::test_repeated_calls_do_not_grow_memory "$@"
rc=$?
set -e
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s, exit status $rc"
exit $rc
