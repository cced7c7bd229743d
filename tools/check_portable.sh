#!/usr/bin/env bash
# Compile the C kernels for a non-x86 target (aarch64, with Debian's cross compiler): the x86
# dispatch must fall away and the portable kernels build alone. Usage: tools/check_portable.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null
fi
out=$(mktemp -d)
for src in "$root"/src_c/*.c; do
    aarch64-linux-gnu-gcc -O3 -ffp-contract=fast -fno-trapping-math -fopenmp -Wall -Werror \
        -I"$root/src_c" -c "$src" -o "$out/$(basename "$src" .c).o"
done
aarch64-linux-gnu-nm "$out/fl_dispatch.o" | grep -q "U fl_table_scalar"
if aarch64-linux-gnu-nm "$out"/*.o | grep -q "fl_table_avx"; then
    echo "x86 kernels compiled for aarch64" >&2
    exit 1
fi
echo "aarch64: src_c compiles; the scalar kernels are the only path"
