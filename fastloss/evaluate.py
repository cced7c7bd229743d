"""fastloss eval: the statistics of a loss over .npy/.npz files, read memory-mapped in batches.

Examples:
  fastloss eval binary_cross_entropy_with_logits --input logits.npy --target labels.npy
  fastloss eval cross_entropy --input data.npz:logits --target data.npz:classes \\
      --param label_smoothing=0.1 --json stats.json --hist hist.png
  fastloss eval sigmoid_focal_loss --input test.npy --target test_y.npy --param gamma=2 \\
      --compare train.npy train_y.npy --hist train_vs_test.png

Each batch of rows is mapped from the file, evaluated by StreamingLoss (one fused pass) and
unmapped, so memory stays bounded by the batch size whatever the file size.
"""
import argparse
import json
import math
import mmap
import os
import struct
import sys
import time
import zipfile
import zlib

import numpy as np

from .streaming import LOG_BINS_PER_DECADE, LOSSES, StreamingLoss, _json_float


class InputError(Exception):
    """A problem with the command's files or options: reported on one line."""


# ---- reading .npy files and .npz members in batches of rows ----

def _read_header(f, where):
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, EOFError, SyntaxError, zlib.error, zipfile.BadZipFile) as e:
        raise InputError(f"{where} is not a valid .npy array ({e})") from None
    if dtype.kind not in "biuf":
        raise InputError(f"{where} has the non-numeric dtype {dtype}")
    if len(shape) == 0:
        raise InputError(f"{where} is 0-d: it needs at least one dimension (rows)")
    return shape, fortran, dtype


class _Array:
    """An array in a .npy file or an .npz member, read a batch of rows (axis 0) at a time."""

    def __init__(self, spec):
        self.name = spec
        path, member = spec, None
        if ":" in spec and not os.path.exists(spec):
            path, member = spec.rsplit(":", 1)
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
        self._stream = self._archive = None
        self._whole = None  # the whole array mapped, when rows are not contiguous
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if is_zip:
            self._open_member(path, member)
        else:
            if member is not None:
                raise InputError(f"{path} is not an .npz archive: it has no member {member!r}")
            self._path, self._offset = path, 0
            with open(path, "rb") as f:
                self.shape, fortran, self.dtype = _read_header(f, path)
                self._offset = f.tell()
            self._check_size(os.path.getsize(path) - self._offset, fortran)
        self.rows = self.shape[0]
        self._row_shape = self.shape[1:]
        self._row_bytes = math.prod(self._row_shape) * self.dtype.itemsize
        self._next_row = 0

    def _open_member(self, path, member):
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            if member is None:
                if len(names) != 1:
                    raise InputError(f"{path} holds {len(names)} arrays ({', '.join(names)}): "
                                     f"name one as {path}:NAME")
                member = names[0]
            if member not in names:
                raise InputError(f"{path} has no array {member!r}; it has "
                                 f"{', '.join(names) or 'none'}")
            info = z.getinfo(member + ".npy")
        where = f"{path}:{member}"
        if info.compress_type == zipfile.ZIP_STORED:  # np.savez: map it in place
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                if len(local) < 30:
                    raise InputError(f"{where} is truncated")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                start = f.tell()
                self.shape, fortran, self.dtype = _read_header(f, where)
                self._path, self._offset = path, f.tell()
            self._check_size(info.file_size - (self._offset - start), fortran)
        else:  # np.savez_compressed: decompress as a stream, batch by batch
            self._archive = zipfile.ZipFile(path)
            self._stream = self._archive.open(info)
            self.shape, fortran, self.dtype = _read_header(self._stream, where)
            if fortran and len(self.shape) > 1:
                raise InputError(f"{where}: Fortran-ordered arrays in compressed archives are "
                                 "not supported; store it in C order or uncompressed")
        self.name = where

    def _check_size(self, available, fortran):
        needed = math.prod(self.shape) * self.dtype.itemsize
        if available < needed:
            raise InputError(f"{self.name} is truncated: its header promises {needed:,} bytes "
                             f"of data, the file holds {available:,}")
        if fortran and len(self.shape) > 1:
            # rows are not contiguous: map the whole array once (memory grows with what is read)
            self._whole = np.memmap(self._path, self.dtype, "r", self._offset, self.shape,
                                    order="F")

    def read(self, rows):
        """The next `rows` rows (fewer at the end)."""
        start = self._next_row
        rows = min(rows, self.rows - start)
        self._next_row += rows
        shape = (rows,) + self._row_shape
        if self._stream is not None:
            try:
                data = self._stream.read(rows * self._row_bytes)
            except (zlib.error, EOFError, zipfile.BadZipFile) as e:
                raise InputError(f"{self.name} is corrupt ({e})") from None
            if len(data) < rows * self._row_bytes:
                raise InputError(f"{self.name} is truncated")
            return np.frombuffer(data, self.dtype).reshape(shape)
        if self._whole is not None:
            return self._whole[start:start + rows]
        if rows == 0 or self._row_bytes == 0:
            return np.empty(shape, self.dtype)
        # A mapping of just these rows, gone when the array is: memory stays bounded by the
        # batch. MAP_POPULATE maps every page in one call, which halves the time of a batch
        # whose pages are in the page cache (one fault per 4 KiB page otherwise).
        begin = self._offset + start * self._row_bytes
        base = begin - begin % mmap.ALLOCATIONGRANULARITY
        with open(self._path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), begin - base + rows * self._row_bytes,
                                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                prot=mmap.PROT_READ, offset=base)
        return np.frombuffer(mapping, self.dtype, math.prod(shape), begin - base).reshape(shape)

    def close(self):
        if self._archive is not None:
            self._stream.close()
            self._archive.close()


# ---- evaluating ----

def _progress(done, total, started, stream):
    rate = done / max(time.perf_counter() - started, 1e-9)
    percent = 100 * done / total if total else 100
    stream.write(f"\r{percent:5.1f}% {done:,}/{total:,} elements, {rate:.3g} elements/s ")
    stream.flush()


def evaluate(meter, input, target, weight=None, batch_size=10**7, n_threads=None,
             progress=None):
    """Update meter with the arrays named by the specs input, target and weight (paths, or
    path.npz:member), batch_size input elements at a time; progress: a stream or None."""
    sources = []
    try:
        for spec in (input, target, weight):
            if spec:
                sources.append(_Array(spec))
        x, y = sources[:2]
        for other in sources[1:]:
            if other.rows != x.rows:
                raise InputError(f"mismatched lengths: {x.name} has {x.rows:,} rows, "
                                 f"{other.name} has {other.rows:,}")
        softmax = LOSSES[meter.loss][0] == "softmax"
        if softmax and len(x.shape) < 2:
            raise InputError(f"{x.name} has shape {x.shape}: {meter.loss} reads rows of "
                             "classes, (N, C) or (N, C, d1, ...)")
        loss_shape = x.shape[:1] + x.shape[2:] if softmax else x.shape
        if y.shape not in (x.shape, loss_shape):
            raise InputError(f"{y.name} has shape {y.shape}; for {x.name} of shape {x.shape} "
                             f"the target's must be {x.shape}" +
                             (f" (probabilities) or {loss_shape} (classes)" if softmax else ""))
        if weight and sources[2].shape not in (loss_shape, x.shape[:1]):
            raise InputError(f"{sources[2].name} has shape {sources[2].shape}; the weights "
                             f"must have the loss's shape {loss_shape} or one per row "
                             f"{x.shape[:1]}")
        per_row = math.prod(x.shape[1:])
        rows = max(1, batch_size // max(per_row, 1))
        started, last, total = time.perf_counter(), 0.0, x.rows * per_row
        for start in range(0, x.rows, rows):
            batch = [s.read(rows) for s in sources]
            w = batch[2] if weight else None
            if w is not None and w.ndim == 1 and len(x.shape) > 1:  # one weight per row
                w = w.reshape((-1,) + (1,) * (len(x.shape) - (2 if softmax else 1)))
            try:
                meter.update(batch[0], batch[1], w, n_threads=n_threads)
            except (ValueError, TypeError, IndexError) as e:
                raise InputError(f"rows {start:,} to {start + len(batch[0]):,}: {e}") from None
            del batch, w  # unmap
            now = time.perf_counter()
            if progress is not None and (now - last > 0.2 or start + rows >= x.rows):
                _progress(min(start + rows, x.rows) * per_row, total, started, progress)
                last = now
        if progress is not None:
            progress.write("\n")
    finally:
        for s in sources:
            s.close()
    return meter


# ---- reporting ----

def _text_histogram(m, width=40, max_rows=16):
    """A compact text histogram: rows of merged bins (a decade each for log bins)."""
    counts, edges = m.histogram
    nonzero = np.flatnonzero(counts)
    lines = []
    if m.underflow:
        lines.append((f"< {edges[0]:.3g}", m.underflow))
    if nonzero.size:
        first, last = nonzero[0], nonzero[-1] + 1
        step = max(1, math.ceil((last - first) / max_rows))
        if edges[0] > 0 and np.allclose(np.diff(np.log10(edges)), 1 / LOG_BINS_PER_DECADE):
            # bins="log": whole decades
            step = LOG_BINS_PER_DECADE * math.ceil(step / LOG_BINS_PER_DECADE)
            first -= first % step
        for lo in range(first, last, step):
            hi = min(lo + step, len(counts))
            lines.append((f"[{edges[lo]:.3g}, {edges[hi]:.3g})", int(counts[lo:hi].sum())))
    if m.overflow:
        lines.append((f"> {edges[-1]:.3g}", m.overflow))
    if not lines:
        return []
    top = max(c for _, c in lines) or 1
    label_width = max(len(label) for label, _ in lines)
    total = max(m.count, 1)
    return [f"  {label:>{label_width}} {c / total:7.2%} {'#' * round(width * c / top)}".rstrip()
            for label, c in lines]


def _report(m, title):
    lines = [title]
    for key in ("mean", "sum", "count", "weight_sum", "min", "max", "nan_count"):
        value = getattr(m, key)
        lines.append(f"  {key:<10} {value:,}" if isinstance(value, int)
                     else f"  {key:<10} {value:.9g}")
    histogram = [] if m.histogram is None else _text_histogram(m)
    if histogram:
        lines += ["  histogram (fraction of examples):", *histogram]
    return "\n".join(lines)


def _summary(m, **files):
    state = m.to_dict()
    counts, edges = m.histogram if m.histogram is not None else (None, None)
    return {"loss": m.loss, **files, "params": state["params"],
            "mean": _json_float(m.mean), "sum": state["sum"], "count": m.count,
            "weight_sum": state["weight_sum"], "min": _json_float(m.min),
            "max": _json_float(m.max), "nan_count": m.nan_count,
            "histogram": None if counts is None else {
                "edges": edges.tolist(), "counts": counts.tolist(),
                "underflow": m.underflow, "overflow": m.overflow}}


def _param(text):
    """NAME=VALUE: a JSON number or list, or the path of a .npy array."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if value.endswith(".npy"):
        try:
            return name, np.load(value)
        except (OSError, ValueError) as e:
            raise argparse.ArgumentTypeError(f"{name}: cannot read {value} ({e})") from None
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number, a list or a "
                                         ".npy file") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastloss eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("loss", choices=list(LOSSES), metavar="LOSS",
                        help="one of: " + ", ".join(LOSSES))
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="predictions: a .npy file, or FILE.npz:NAME")
    parser.add_argument("--target", required=True, metavar="FILE", help="targets, as --input")
    parser.add_argument("--weight", metavar="FILE",
                        help="sample weights: the loss's shape, or one per row")
    parser.add_argument("--param", action="append", type=_param, default=[],
                        metavar="NAME=VALUE",
                        help="a loss parameter, e.g. gamma=2, pos_weight=[1,3], weight=w.npy")
    parser.add_argument("--batch-size", type=float, default=1e7, metavar="N",
                        help="input elements per batch (default 1e7)")
    parser.add_argument("--bins", default="log",
                        help="'log' (10 per decade, 1e-8 to 1e3; the default), a number of "
                             "bins with --range, or 'none'")
    parser.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"),
                        help="the histogram's range, for a number of bins")
    parser.add_argument("--hist", metavar="PNG", help="write the histogram plot (matplotlib)")
    parser.add_argument("--compare", nargs=2, metavar=("INPUT", "TARGET"),
                        help="a second data set (e.g. train against test): reported and "
                             "overlaid in --hist")
    parser.add_argument("--json", metavar="FILE", help="write the statistics as JSON")
    parser.add_argument("--threads", type=int, metavar="N", help="kernel threads")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress on stderr (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (InputError, ValueError, TypeError, ImportError, OSError, zipfile.BadZipFile) as e:
        print(f"fastloss eval: error: {e}", file=sys.stderr)
        return 1


def _run(args):
    if not 1 <= args.batch_size < 2**63:
        raise InputError(f"--batch-size must be a number from 1 up; got {args.batch_size:g}")
    bins = None if args.bins == "none" else args.bins
    if bins not in (None, "log"):
        try:
            bins = float(bins)
        except ValueError:
            bins = math.nan
        if not (bins.is_integer() and bins > 0):
            raise InputError(f"--bins must be 'log', 'none' or a number of bins; got "
                             f"{args.bins!r}")
        bins = int(bins)
    if args.hist and bins is None:
        raise InputError("--hist needs a histogram: drop --bins none")
    if args.hist:
        from .plot import require_matplotlib
        require_matplotlib("--hist")
    params = dict(args.param)
    progress = sys.stderr if (args.progress or (args.progress is None and
                                                 sys.stderr.isatty())) else None

    def meter():
        return StreamingLoss(args.loss, bins=bins,
                             range=tuple(args.range) if args.range else None, **params)

    runs = [(args.input, args.target, args.weight)]
    if args.compare:
        runs.append((*args.compare, None))
    meters = [evaluate(meter(), x, y, w, int(args.batch_size), args.threads, progress)
              for x, y, w in runs]
    for m, (x, y, w) in zip(meters, runs):
        print(_report(m, f"{args.loss} of {x} against {y}" + (f", weighted by {w}" if w
                                                               else "")))
    if args.json:
        summary = _summary(meters[0], input=args.input, target=args.target,
                           weight=args.weight)
        if args.compare:
            summary["compare"] = _summary(meters[1], input=args.compare[0],
                                          target=args.compare[1])
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, allow_nan=False)
    if args.hist:
        from .plot import plot_loss_histograms
        labels = [x for x, _, _ in runs]
        if len(set(labels)) < len(labels):
            labels = ["input", "compare"]
        plot_loss_histograms(dict(zip(labels, meters)), path=args.hist)
    return 0
