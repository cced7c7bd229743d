"""The fastloss command line: `fastloss COMMAND ...` or `python -m fastloss COMMAND ...`."""
import os
import sys

COMMANDS = {"bench": "speed comparison against NumPy and torch on generated data",
            "eval": "a loss's statistics and histogram over .npy/.npz files of any size",
            "info": "version, SIMD paths, OpenMP, compiler and flags: for bug reports"}


def _usage(file):
    print("usage: fastloss [--help] [--version] COMMAND [options]\n\ncommands:", file=file)
    for name, text in COMMANDS.items():
        print(f"  {name:8} {text}", file=file)
    print("\n`fastloss bench --help` and `fastloss eval --help` list their options.", file=file)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # Asked-for output (help, version) goes to stdout with status 0, so `| less` shows it;
    # mistakes go to stderr with status 2, saying what was wrong, as argparse does.
    if argv and argv[0] in ("-h", "--help"):
        _usage(sys.stdout)
        return 0
    if argv and argv[0] == "--version":
        from ._version import __version__
        print(f"fastloss {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        _usage(sys.stderr)
        problem = (f"unknown command {argv[0]!r}" if argv and not argv[0].startswith("-")
                   else f"unknown option {argv[0]!r}" if argv else "a command is required")
        print(f"fastloss: error: {problem}", file=sys.stderr)
        return 2
    try:
        if argv[0] == "bench":
            from . import bench
            bench.main(argv[1:])
        elif argv[0] == "eval":
            from . import evaluate
            return evaluate.main(argv[1:])
        elif argv[0] == "info":
            import argparse
            argparse.ArgumentParser(prog="fastloss info", description=COMMANDS["info"]
                                    ).parse_args(argv[1:])  # --help, and no other option
            from .info import show_config
            show_config()
    except BrokenPipeError:  # output piped into a command that stopped reading, such as head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
