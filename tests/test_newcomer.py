"""What a newcomer meets first: the README's commands run where the README runs them, the
command line's conventions (help on stdout, errors that say what was wrong, --version), and a
clear message when the unbuilt source tree shadows the installed package."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import fastloss

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = os.path.join(sysconfig.get_path("scripts"), "fastloss")  # what `pip install .` puts on PATH
# The bench part of the README's first command made tiny: one loss, one size, one competitor.
TINY = ["--sizes", "2e3", "--loss", "binary_cross_entropy_with_logits", "--against", "numpy",
        "--threads", "1", "--repeat", "1", "--quiet"]


def _run(cmd, cwd, env=None):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _cli(*args, cwd=ROOT / "tests"):
    return _run([sys.executable, "-m", "fastloss", *args], cwd)


def _first_command():
    """The README's first shell command: install from the checkout, then the quick bench."""
    block = re.search(r"```\n(.*?)```", README.read_text(), re.S).group(1)
    install, bench = (part.strip() for part in block.strip().split("&&"))
    assert install == "python -m pip install ."
    words = bench.split()
    assert words[:3] == ["fastloss", "bench", "--quick"], bench
    return words[1:]


def _assert_bench_table(result):
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["loss", "n", "dtype", "thr", "implementation"]
    rows = [line.split() for line in lines[1:] if line.startswith("binary_cross_entropy_with")]
    implementations = [" ".join(row[4:next(i for i, word in enumerate(row) if i > 4 and
                                           re.fullmatch(r"[\d.]+", word))]) for row in rows]
    assert implementations == ["fastloss", "numpy textbook", "numpy stable"], lines
    # fastloss's row: median ms, ns/elem, GB/s, %floor, fastloss x, rel diff, extra MB
    ours = rows[0]
    assert ours[1:5] == ["2e+03", "float32", "1", "fastloss"] and len(ours) == 12, ours
    assert float(ours[5]) > 0 and ours[9] == "-" and float(ours[10]) < 1e-5


def test_readme_first_command_from_the_checkout_root():
    """The README runs it in the checkout, right after `pip install .`: the console script
    imports the installed package whatever the current directory holds."""
    _assert_bench_table(_run([SCRIPT, *_first_command(), *TINY], ROOT))


def test_readme_first_command_elsewhere(tmp_path):
    _assert_bench_table(_run([SCRIPT, *_first_command(), *TINY], tmp_path))
    _assert_bench_table(_run([sys.executable, "-m", "fastloss", *_first_command(), *TINY],
                             tmp_path))


def _unbuilt_source_tree(tmp_path, with_setup_py):
    package = tmp_path / "fastloss"
    package.mkdir()
    for source in pathlib.Path(fastloss.__file__).parent.glob("*.py"):  # the package tested
        shutil.copy(source, package)
    if with_setup_py:
        (tmp_path / "setup.py").write_text("")
    # -S: no site-packages, so no installed or editable fastloss can supply the extension;
    # the import fails at the extension, before anything needs NumPy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return _run([sys.executable, "-S", "-c", "import fastloss"], tmp_path, env)


def test_import_from_an_unbuilt_source_tree_says_what_to_do(tmp_path):
    result = _unbuilt_source_tree(tmp_path, with_setup_py=True)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: fastloss is being imported from its source directory")
    assert "cd tests" in message and "python setup.py build_ext --inplace" in message
    assert "circular import" not in result.stderr


def test_a_missing_extension_outside_a_source_tree_keeps_pythons_error(tmp_path):
    result = _unbuilt_source_tree(tmp_path, with_setup_py=False)
    assert result.returncode == 1
    assert "ImportError" in result.stderr and "source directory" not in result.stderr


def test_help_goes_to_stdout():
    for flag in ("--help", "-h"):
        result = _cli(flag)
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout.startswith("usage: fastloss")
        assert all(name in result.stdout for name in ("bench", "eval", "info", "--version"))


def test_unknown_command_says_what_was_wrong():
    result = _cli("bogus")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: fastloss")
    assert result.stderr.splitlines()[-1] == "fastloss: error: unknown command 'bogus'"
    result = _cli("--bogus")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "fastloss: error: unknown option '--bogus'"


def test_no_command_is_a_usage_error():
    result = _cli()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "fastloss: error: a command is required"


def test_version():
    for cmd, cwd in (([sys.executable, "-m", "fastloss", "--version"], ROOT / "tests"),
                     ([SCRIPT, "--version"], ROOT)):
        result = _run(cmd, cwd)
        assert result.returncode == 0 and result.stderr == ""
        assert re.fullmatch(r"fastloss \d+\.\d+\.\d+\n", result.stdout)
        assert result.stdout == f"fastloss {fastloss.__version__}\n"
