"""fastloss.show_config() and `fastloss info`: what a bug report needs."""
import io
import os
import subprocess
import sys

from threadpoolctl import threadpool_info

import fastloss


def test_show_config_names_everything_a_bug_report_needs():
    buf = io.StringIO()
    fastloss.show_config(file=buf)
    text = buf.getvalue()
    for key in ("fastloss:", "numpy:", "simd path:", "simd paths supported:", "compiler:",
                "compile flags:", "openmp:", "default threads:", "openmp runtimes:"):
        assert key in text, key
    assert fastloss.__version__ in text and fastloss.simd_path() in text
    assert "-fno-trapping-math" in text
    assert "-ffast-math" not in text and "-Ofast" not in text


def test_our_openmp_runtime_is_visible_to_threadpoolctl():
    if fastloss._kernels.build_info()["openmp"]:
        assert any(i["user_api"] == "openmp" for i in threadpool_info())


def test_info_command():
    out = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(__file__))
    assert out.stdout.startswith("fastloss:") and fastloss.__version__ in out.stdout


def test_info_help_and_bad_options():
    run = lambda *args: subprocess.run([sys.executable, "-m", "fastloss", "info", *args],
                                       capture_output=True, text=True,
                                       cwd=os.path.dirname(__file__))
    out = run("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: fastloss info")
    out = run("--bogus")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr
