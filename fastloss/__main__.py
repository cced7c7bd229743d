"""The fastloss command line: `fastloss COMMAND ...` or `python -m fastloss COMMAND ...`."""
import os
import sys

COMMANDS = {"bench": "speed comparison against NumPy and torch on generated data",
            "eval": "a loss's statistics and histogram over .npy/.npz files of any size",
            "info": "version, SIMD paths, OpenMP, compiler and flags: for bug reports"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: fastloss COMMAND [options]\n\ncommands:", file=sys.stderr)
        for name, text in COMMANDS.items():
            print(f"  {name:8} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        if argv[0] == "bench":
            from . import bench
            bench.main(argv[1:])
        elif argv[0] == "eval":
            from . import evaluate
            return evaluate.main(argv[1:])
        elif argv[0] == "info":
            from .info import show_config
            show_config()
    except BrokenPipeError:  # output piped into a command that stopped reading, such as head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
