"""fastloss eval: the statistics of a loss over .npy/.npz files, read in batches.

Examples:
  fastloss eval binary_cross_entropy_with_logits --input logits.npy --target labels.npy
  fastloss eval cross_entropy --input data.npz:logits --target data.npz:classes \\
      --param label_smoothing=0.1 --json stats.json --hist hist.png
  fastloss eval sigmoid_focal_loss --input test.npy --target test_y.npy --param gamma=2 \\
      --compare train.npy train_y.npy --hist train_vs_test.png
  fastloss eval binary_cross_entropy_with_logits --input logits.npy --target labels.npy \\
      --calibration 15 --by-class --groups segment.npy --bootstrap 200 --seed 1

Each batch is read from the files into a reused buffer and evaluated by StreamingLoss (one
fused pass), so memory stays bounded by --batch-size elements per file whatever the file size:
rows longer than that are read in pieces by the binary losses; the softmax losses need whole
rows, so there the bound is the larger of --batch-size and one row.
"""
import argparse
import json
import math
import os
import re
import stat
import struct
import sys
import time
import zipfile

import numpy as np

from ._extras import MAX_SLOTS as MAX_GROUPS
from .streaming import LOSSES, LOG_BINS_PER_DECADE, StreamingLoss, _json_float


class InputError(Exception):
    """A problem with the command's files or options: reported on one line."""


# ---- reading .npy files and .npz members in batches ----

def _read_header(f, where):
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged header or archive raises
        raise InputError(f"{where}: not a valid .npy array ({_reason(e)})") from None
    if dtype.kind not in "biuf":
        raise InputError(f"{where}: non-numeric dtype {dtype}")
    if len(shape) == 0:
        raise InputError(f"{where}: 0-d: it needs at least one dimension (rows)")
    if any(d < 0 for d in shape):
        raise InputError(f"{where}: its header gives the negative shape {shape}")
    return shape, fortran and len(shape) > 1, dtype


def _reason(e):
    return str(e) or type(e).__name__


def _open_regular(path):
    """A file descriptor of path, refused unless it is a regular file. O_NONBLOCK: opening a
    FIFO must not wait for a writer (it is refused once open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
        raise InputError(f"{path}: {kind}, not a regular file")
    return fd


def _identity(st):
    # What changes when the file is truncated, rewritten or written to.
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Array:
    """An array in a .npy file or an .npz member, read in file order: a batch of rows (axis 0)
    or, for rows too long for a batch, a piece of a row. The data is copied with pread into a
    buffer reused from batch to batch: unlike a memory mapping, a file truncated meanwhile
    gives a short read (an error), never SIGBUS."""

    def __init__(self, spec):
        self.name = spec
        path, member = spec, None
        if ":" in spec and not os.path.exists(spec):
            path, member = spec.rsplit(":", 1)
        fd = _open_regular(path)
        self._file = os.fdopen(fd, "rb")
        self._stream = self._archive = None
        try:
            self._identity = _identity(os.fstat(fd))
            is_zip = self._file.read(4) == b"PK\x03\x04"
            self._file.seek(0)
            if is_zip:
                self._open_member(path, member)
            else:
                if member is not None:
                    raise InputError(f"{path}: not an .npz archive: it has no member "
                                     f"{member!r}")
                self.shape, self.fortran, self.dtype = _read_header(self._file, path)
                self._offset = self._file.tell()
                self._check_size(self._identity[0] - self._offset)
        except BaseException:
            self.close()
            raise
        self.rows = self.shape[0]
        self._row_shape = self.shape[1:]
        self.per_row = math.prod(self._row_shape)
        self._next = 0  # elements read (C order); rows read (Fortran order)
        self._buffer = np.empty(0, np.uint8)

    def _open_member(self, path, member):
        try:
            self._archive = zipfile.ZipFile(self._file)
            names = [n[:-4] for n in self._archive.namelist() if n.endswith(".npy")]
            if member is None:
                if len(names) != 1:
                    raise InputError(f"{path}: holds {len(names)} arrays ({', '.join(names)}): "
                                     f"name one as {path}:NAME")
                member = names[0]
            if member not in names:
                raise InputError(f"{path}: has no array {member!r}; it has "
                                 f"{', '.join(names) or 'none'}")
            info = self._archive.getinfo(member + ".npy")
            where = self.name = f"{path}:{member}"
            if info.compress_type == zipfile.ZIP_STORED:  # np.savez: read in place
                self._file.seek(info.header_offset)
                local = self._file.read(30)
                if len(local) < 30:
                    raise InputError(f"{where}: truncated")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                self._file.seek(start)
                self.shape, self.fortran, self.dtype = _read_header(self._file, where)
                self._offset = self._file.tell()
                self._check_size(min(info.file_size - (self._offset - start),
                                     self._identity[0] - self._offset))
            else:  # np.savez_compressed: decompress as a stream, batch by batch
                self._stream = self._archive.open(info)
                self.shape, self.fortran, self.dtype = _read_header(self._stream, where)
                if self.fortran:
                    raise InputError(f"{where}: Fortran-ordered arrays in compressed archives "
                                     "are not supported; store it in C order or uncompressed")
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile raises many kinds for a damaged archive
            raise InputError(f"{self.name}: not a valid .npz archive ({_reason(e)})"
                             ) from None

    def _check_size(self, available):
        needed = math.prod(self.shape) * self.dtype.itemsize
        if available < needed:
            raise InputError(f"{self.name}: truncated: its header promises {needed:,} bytes "
                             f"of data, the file holds {max(available, 0):,}")

    def _fill(self, view, offset):
        """Fill view with the file's bytes from offset (of the data); an error if short."""
        got = 0
        if self._stream is not None:
            try:
                while got < len(view):
                    more = self._stream.readinto(view[got:])
                    if not more:
                        break
                    got += more
            except Exception as e:  # noqa: BLE001 - zlib, bz2, lzma errors, bad CRC, ...
                raise InputError(f"{self.name}: corrupt ({_reason(e)})") from None
        else:
            fd = self._file.fileno()
            while got < len(view):
                more = os.preadv(fd, [view[got:]], self._offset + offset + got)
                if not more:
                    break
                got += more
        if got < len(view):
            raise InputError(f"{self.name}: truncated while being read")

    def _buffer_of(self, count):
        """A buffer of count elements reused from read to read (so memory stays that of one
        batch), and a byte view of it. A file changed since it was opened is refused here,
        once a read, rather than giving a mix of old and new data."""
        if self._stream is None and _identity(os.fstat(self._file.fileno())) != self._identity:
            raise InputError(f"{self.name}: changed while being read")
        nbytes = count * self.dtype.itemsize
        if self._buffer.size < nbytes:
            self._buffer = np.empty(nbytes, np.uint8)
        return self._buffer[:nbytes].view(self.dtype), memoryview(self._buffer)[:nbytes]

    def read(self, start, count):
        """count elements from element start, in file order (C order), as a 1-d array valid
        until the next read. A compressed member is read in sequence: start must follow on."""
        data, view = self._buffer_of(count)
        self._fill(view, start * self.dtype.itemsize)
        return data

    def read_rows(self, start, rows):
        """rows rows (axis 0) from row start, as an array valid until the next read."""
        shape = (rows,) + self._row_shape
        if not rows * self.per_row:
            try:
                return np.empty(shape, self.dtype)
            except ValueError:  # numpy refuses (0, 2**62): no data, dtype and ndim remain
                return np.empty((0,) * len(shape), self.dtype)
        if not self.fortran:
            return self.read(start * self.per_row, rows * self.per_row).reshape(shape)
        # Fortran order: these rows are a run of `rows` elements in each of the row's columns,
        # which is one file of shape row_shape[::-1] + (rows,) in C order, transposed.
        data, view = self._buffer_of(rows * self.per_row)
        run = rows * self.dtype.itemsize
        for column in range(self.per_row):
            self._fill(view[column * run:(column + 1) * run],
                       (column * self.rows + start) * self.dtype.itemsize)
        return data.reshape(self._row_shape[::-1] + (rows,)).T

    def close(self):
        for f in (self._stream, self._archive, self._file):
            if f is not None:
                f.close()


# ---- evaluating ----

def _progress(done, total, started, stream):
    rate = done / max(time.perf_counter() - started, 1e-9)
    percent = 100 * done / total if total else 100
    stream.write(f"\r{percent:5.1f}% {done:,}/{total:,} elements, {rate:.3g} elements/s ")
    stream.flush()


def _row_piece(meter, x, sources, batch_size):
    """For rows longer than batch_size elements: the shape of the pieces a row is read in,
    (k,) + the trailing dimensions over which the loss's parameters vary (pos_weight broadcasts
    by trailing dimensions), with k times their size at most batch_size (at least 1)."""
    if LOSSES[meter.loss][0] == "softmax":
        return None  # a softmax reads the whole row of classes
    if any(s.fortran for s in sources):
        raise InputError(f"{next(s for s in sources if s.fortran).name}: Fortran-ordered with "
                         f"rows of {x.per_row:,} elements, more than --batch-size: its rows "
                         "are read whole; raise --batch-size or store it in C order")
    varies = np.shape(meter.params.get("pos_weight", 1.0))
    while varies and varies[0] == 1:  # leading ones broadcast away
        varies = varies[1:]
    if len(varies) >= len(x.shape):
        return None  # the parameter spans the rows: update() says whether it fits
    trailing = x.shape[len(x.shape) - len(varies):]
    return (max(1, batch_size // max(math.prod(trailing), 1)),) + trailing


def _batches(meter, sources, batch_size):
    """(where, arrays, elements) for each batch: rows, or pieces of a row too long for one."""
    x = sources[0]
    widest = max(s.per_row for s in sources)
    piece = (_row_piece(meter, x, sources, batch_size) if x.per_row > batch_size and x.rows
             else None)
    if piece is None:
        if not widest:  # no data: one row stands for them all, (2**62, 0) included
            yield f"rows 0 to {x.rows:,}", [s.read_rows(0, min(x.rows, 1)) for s in sources], 0
            return
        rows = max(1, batch_size // widest)
        for start in range(0, max(x.rows, 1), rows):  # no rows: one empty batch, checked too
            n = min(rows, x.rows - start)
            yield (f"rows {start:,} to {start + n:,}", [s.read_rows(start, n) for s in sources],
                   n * x.per_row)
        return
    unit = math.prod(piece[1:])  # a row is a whole number of units: pieces end on one
    for row in range(x.rows):
        # weights and groups given one per row: read once, kept for the row's pieces
        per_row = [s.read_rows(row, 1).copy() if s.per_row != x.per_row else None
                   for s in sources[2:]]
        for start in range(0, x.per_row, piece[0] * unit):
            n = min(piece[0] * unit, x.per_row - start)
            shape = (n // unit,) + piece[1:]
            batch = [s.read(row * x.per_row + start, n).reshape(shape) for s in sources[:2]]
            batch += [value.reshape((1,) * len(shape)) if value is not None else
                      s.read(row * x.per_row + start, n).reshape(shape)
                      for s, value in zip(sources[2:], per_row)]
            yield f"row {row:,}, elements {start:,} to {start + n:,}", batch, n


def evaluate(meter, input, target, weight=None, batch_size=10**7, n_threads=None,
             progress=None, groups=None):
    """Update meter with the arrays named by the specs input, target, weight and groups
    (paths, or path.npz:member), batch_size elements of each file at a time (or one row of a
    softmax loss's input, if longer); progress: a stream or None. groups (for a meter with
    n_groups): integer ids with the loss's shape or one per row, read in the same batches.

    Raises InputError (one line, naming the file) for a file that is missing, not a regular
    file, not a numeric .npy array, truncated or changed while being read, and for arrays that
    do not fit together or that the loss refuses (group ids outside [0, n_groups) included).
    """
    sources = []
    try:
        for spec in (input, target, weight, groups):
            if spec:
                sources.append(_Array(spec))
        x, y = sources[:2]
        for other in sources[1:]:
            if other.rows != x.rows:
                raise InputError(f"mismatched lengths: {x.name} has {x.rows:,} rows, "
                                 f"{other.name} has {other.rows:,}")
        softmax = LOSSES[meter.loss][0] == "softmax"
        if softmax and len(x.shape) < 2:
            raise InputError(f"{x.name}: has shape {x.shape}: {meter.loss} reads rows of "
                             "classes, (N, C) or (N, C, d1, ...)")
        loss_shape = x.shape[:1] + x.shape[2:] if softmax else x.shape
        if y.shape not in (x.shape, loss_shape):
            raise InputError(f"{y.name}: has shape {y.shape}; for {x.name} of shape {x.shape} "
                             f"the target's must be {x.shape}" +
                             (f" (probabilities) or {loss_shape} (classes)" if softmax else ""))
        if weight and sources[2].shape not in (loss_shape, x.shape[:1]):
            raise InputError(f"{sources[2].name}: has shape {sources[2].shape}; the weights "
                             f"must have the loss's shape {loss_shape} or one per row "
                             f"{x.shape[:1]}")
        g = sources[-1] if groups else None
        if g is not None:
            if g.shape not in (loss_shape, x.shape[:1]):
                raise InputError(f"{g.name}: has shape {g.shape}; the group ids must have the "
                                 f"loss's shape {loss_shape} or one per row {x.shape[:1]}")
            if g.dtype.kind not in "iu":
                raise InputError(f"{g.name}: dtype {g.dtype}: group ids must be integers")
        names = {"input": x.name, "target": y.name, "weight": weight and sources[2].name,
                 "groups": g and g.name}

        started, last, done, total = time.perf_counter(), 0.0, 0, x.rows * x.per_row
        for where, batch, elements in _batches(meter, sources, batch_size):
            # one value per row: broadcast over the rest of the batch's loss shape (a piece
            # of a row comes with its row's value already shaped to broadcast)
            loss_ndim = batch[0].ndim - softmax
            w, ids = ((a.reshape((-1,) + (1,) * (loss_ndim - 1)) if a.ndim == 1 else a)
                      if a is not None else None
                      for a in (batch[2] if weight else None, batch[-1] if groups else None))
            try:
                meter.update(batch[0], batch[1], w, groups=ids, n_threads=n_threads)
            except (ValueError, TypeError, IndexError) as e:
                # The loss's messages name the argument at fault ("... of target should ...").
                blamed = re.search(r"\b(input|target|weight|groups)\b", str(e),
                                   re.IGNORECASE)
                name = blamed and names[blamed[1].lower()] or x.name
                raise InputError(f"{name}: {where}: {e}") from None
            del batch, w, ids
            done += elements
            now = time.perf_counter()
            if progress is not None and (now - last > 0.2 or done >= total):
                _progress(done, total, started, progress)
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


# Most classes or groups listed in the printed summary (the JSON has them all).
MAX_LISTED = 20
CI_LEVEL = 0.95


def _breakdown_lines(name, count, mean):
    lines = [f"  {'per ' + name:<14}{'count':>14} {'mean':>16}"]
    shown = np.flatnonzero(count)[:MAX_LISTED]
    lines += [f"  {i:<14,}{count[i]:>14,} {mean[i]:>16.9g}" for i in shown]
    hidden = np.count_nonzero(count) - shown.size
    if hidden:
        lines.append(f"  ({hidden:,} more in the JSON)")
    return lines


def _report(m, title):
    lines = [title]
    for key in ("mean", "sum", "count", "weight_sum", "min", "max", "nan_count"):
        value = getattr(m, key)
        lines.append(f"  {key:<10} {value:,}" if isinstance(value, int)
                     else f"  {key:<10} {value:.9g}")
    boot = m.to_dict().get("bootstrap")
    if boot is not None:
        lo, hi = m.mean_ci(CI_LEVEL)
        lines.append(f"  mean {CI_LEVEL:.0%} interval [{lo:.9g}, {hi:.9g}] "
                     f"({boot['n']:,} bootstrap replicates, seed {boot['seed']})")
    histogram = [] if m.histogram is None else _text_histogram(m)
    if histogram:
        lines += ["  histogram (fraction of examples):", *histogram]
    r = m.reliability()
    if r is not None:
        lines.append(f"  calibration: ece {m.ece:.6g}, mce {m.mce:.6g}, rms_ce {m.rms_ce:.6g}, "
                     f"brier {m.brier:.6g}")
        lines.append(f"  {'confidence bin':>16} {'count':>14} {'confidence':>11} {'accuracy':>9}")
        for i in np.flatnonzero(r["count"]):
            close = "]" if i == r["count"].size - 1 else ")"  # the last bin holds p = 1
            lines.append(f"  [{r['edges'][i]:.3f}, {r['edges'][i + 1]:.3f}{close} "
                         f"{r['count'][i]:>14,} {r['confidence'][i]:>11.4f} "
                         f"{r['accuracy'][i]:>9.4f}")
    if m.class_count is not None:
        lines += _breakdown_lines("class", m.class_count, m.class_mean)
    if m.group_count is not None:
        lines += _breakdown_lines("group", m.group_count, m.group_mean)
    return "\n".join(lines)


def _json_floats(a):
    return [_json_float(v) for v in a]


def _summary(m, **files):
    state = m.to_dict()
    counts, edges = m.histogram if m.histogram is not None else (None, None)
    summary = {"loss": m.loss, **files, "params": state["params"],
               "mean": _json_float(m.mean), "sum": state["sum"], "count": m.count,
               "weight_sum": state["weight_sum"], "min": _json_float(m.min),
               "max": _json_float(m.max), "nan_count": m.nan_count,
               "histogram": None if counts is None else {
                   "edges": edges.tolist(), "counts": counts.tolist(),
                   "underflow": m.underflow, "overflow": m.overflow}}
    r = m.reliability()
    if r is not None:
        summary["calibration"] = {
            "ece": _json_float(m.ece), "mce": _json_float(m.mce),
            "rms_ce": _json_float(m.rms_ce), "brier": _json_float(m.brier),
            "edges": r["edges"].tolist(), "count": r["count"].tolist(),
            **{key: _json_floats(r[key]) for key in ("weight", "confidence", "accuracy")}}
    for name in ("class", "group"):
        count = getattr(m, f"{name}_count")
        if count is not None:
            summary[f"by_{name}"] = {"count": count.tolist(), **{
                key: _json_floats(getattr(m, f"{name}_{key}"))
                for key in ("sum", "weight_sum", "mean")}}
    if "bootstrap" in state:
        summary["bootstrap"] = {"replicates": state["bootstrap"]["n"],
                                "seed": state["bootstrap"]["seed"],
                                "level": CI_LEVEL, "mean_ci": _json_floats(m.mean_ci(CI_LEVEL))}
    return summary


def _group_count(spec, batch_size):
    """n_groups for the ids in spec: the largest + 1 (1 for none), read batch by batch.
    Raises InputError for ids that are not integers or are negative."""
    ids = _Array(spec)
    try:
        if ids.dtype.kind not in "iu":
            raise InputError(f"{ids.name}: dtype {ids.dtype}: group ids must be integers")
        total, largest = ids.rows * ids.per_row, -1
        for start in range(0, total, batch_size):
            batch = ids.read(start, min(batch_size, total - start))
            if batch.min() < 0:
                raise InputError(f"{ids.name}: has the negative group id {batch.min()} at "
                                 f"element {start + int(np.argmin(batch)):,}")
            largest = max(largest, int(batch.max()))
    finally:
        ids.close()
    if largest >= MAX_GROUPS:
        raise InputError(f"{spec}: has the group id {largest:,}: at most {MAX_GROUPS - 1:,} "
                         "(n_groups is the largest id + 1)")
    return largest + 1 if largest >= 0 else 1


class _ParamFile(str):
    """The path of a parameter's .npy array."""

    def load(self):
        array = _Array(self)
        try:
            return array.read_rows(0, array.rows).copy()
        finally:
            array.close()


def _param(text):
    """NAME=VALUE: a JSON number or list, or the path of a .npy array."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if value.endswith(".npy"):
        return name, _ParamFile(value)  # read by _run, whose errors take one line
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
                        help="elements of each file per batch (default 1e7); a softmax "
                             "loss reads at least one whole row")
    parser.add_argument("--bins", default="log",
                        help="'log' (10 per decade, 1e-8 to 1e3; the default), a number of "
                             "bins with --range, or 'none'")
    parser.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"),
                        help="the histogram's range, for a number of bins")
    parser.add_argument("--hist", metavar="PNG", help="write the histogram plot (matplotlib)")
    parser.add_argument("--compare", nargs=2, metavar=("INPUT", "TARGET"),
                        help="a second data set (e.g. train against test): reported and "
                             "overlaid in --hist")
    parser.add_argument("--calibration", type=int, metavar="BINS",
                        help="calibration in BINS equal bins of the confidence: ECE, MCE, "
                             "RMS-CE, Brier score and the reliability table")
    parser.add_argument("--by-class", action="store_true",
                        help="per-class statistics (binary losses: per column of axis 1; "
                             "softmax losses: per target class)")
    parser.add_argument("--groups", metavar="FILE",
                        help="integer group ids (>= 0), the loss's shape or one per row: "
                             "per-group statistics")
    parser.add_argument("--n-groups", type=int, metavar="G",
                        help="the number of groups (default: the largest id in --groups + 1)")
    parser.add_argument("--bootstrap", type=int, metavar="B",
                        help="a 95%% bootstrap interval of the mean from B replicates")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="the bootstrap's seed (default 0)")
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
    params = {name: value.load() if isinstance(value, _ParamFile) else value
              for name, value in args.param}
    progress = sys.stderr if (args.progress or (args.progress is None and
                                                 sys.stderr.isatty())) else None

    if args.n_groups is not None and not args.groups:
        raise InputError("--n-groups needs --groups")
    n_groups = None
    if args.groups:
        n_groups = (args.n_groups if args.n_groups is not None
                    else _group_count(args.groups, int(args.batch_size)))

    def meter(groups):
        return StreamingLoss(args.loss, bins=bins,
                             range=tuple(args.range) if args.range else None,
                             calibration_bins=args.calibration, by_class=args.by_class,
                             n_groups=n_groups if groups else None, bootstrap=args.bootstrap,
                             seed=args.seed, **params)

    # the groups are aligned with --input's rows, not --compare's
    runs = [(args.input, args.target, args.weight, args.groups)]
    if args.compare:
        runs.append((*args.compare, None, None))
    meters = [evaluate(meter(g), x, y, w, int(args.batch_size), args.threads, progress, g)
              for x, y, w, g in runs]
    for m, (x, y, w, g) in zip(meters, runs):
        print(_report(m, f"{args.loss} of {x} against {y}" + (f", weighted by {w}" if w
                                                               else "")))
    if args.json:
        summary = _summary(meters[0], input=args.input, target=args.target,
                           weight=args.weight, **({"groups": args.groups} if args.groups
                                                  else {}))
        if args.compare:
            summary["compare"] = _summary(meters[1], input=args.compare[0],
                                          target=args.compare[1])
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, allow_nan=False)
    if args.hist:
        from .plot import plot_loss_histograms
        labels = [x for x, *_ in runs]
        if len(set(labels)) < len(labels):
            labels = ["input", "compare"]
        plot_loss_histograms(dict(zip(labels, meters)), path=args.hist)
    return 0
