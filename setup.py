"""Build of the fastloss extension: Cython drivers plus the C kernels in src_c/.

OpenMP is used when the compiler supports it; otherwise the extension builds and runs serially.
"""
import glob
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -fno-trapping-math lets GCC turn the selects of the clamped polynomials into blends (without it
# the loops stay scalar); -ffp-contract=fast allows FMA. Never GCC's fast-math option: it
# reassociates the loss formulas and, from a shared library built by GCC <= 12, sets
# flush-to-zero process-wide.
KERNEL_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-trapping-math"]
OPENMP_FLAG = "-fopenmp"
OPENMP_SIMD_FLAG = "-fopenmp-simd"

SOURCES = ["fastloss/_kernels.pyx"] + [
    f"src_c/{name}.c"
    for name in ("fl_dispatch", "fl_isa_scalar", "fl_isa_avx2", "fl_isa_avx512")
]


def _compiler_accepts(compiler, flag, link=False):
    """Whether this compiler compiles (and links) a tiny OpenMP-using program with flag."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
                    if link else "int main(void) { return 0; }\n")
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            if link:
                compiler.link_executable(objects, os.path.join(tmp, "probe"),
                                         extra_postargs=[flag])
        except Exception:
            return False
    return True


def _compile_in_parallel(compiler, jobs):
    """Make compiler.compile build its sources on `jobs` threads, each running one compiler.

    setuptools' parallel option builds different extensions at once, but the sources of one
    extension one after the other; ours is one extension of five large translation units.
    """
    serial = compiler.compile

    def compile(sources, *args, **kwargs):
        with ThreadPoolExecutor(jobs) as pool:
            parts = pool.map(lambda source: serial([source], *args, **kwargs), sources)
            return [obj for objects in parts for obj in objects]

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        compile_flags, link_flags = list(KERNEL_FLAGS), []
        if _compiler_accepts(self.compiler, OPENMP_FLAG, link=True):
            compile_flags.append(OPENMP_FLAG)
            link_flags.append(OPENMP_FLAG)
        else:
            print("fastloss: no OpenMP in this compiler; building the serial kernels",
                  file=sys.stderr)
            if _compiler_accepts(self.compiler, OPENMP_SIMD_FLAG):
                compile_flags.append(OPENMP_SIMD_FLAG)
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = link_flags
            # recorded for fastloss.show_config(); a list of arguments, so no shell quoting
            ext.define_macros.append(("FL_COMPILE_FLAGS", '"%s"' % " ".join(compile_flags)))
        # -j N wins; otherwise one compiler per CPU this process may use.
        jobs = self.parallel or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 1)
        if jobs > 1:
            _compile_in_parallel(self.compiler, jobs)
        super().build_extensions()


extensions = [
    Extension(
        "fastloss._kernels",
        sources=SOURCES,
        include_dirs=["src_c", np.get_include()],
        depends=sorted(glob.glob("src_c/*.h")),  # rebuild when a kernel header changes
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
