"""fastloss over Dask arrays: the losses of arrays larger than one machine, chunk by chunk, on
any Dask scheduler (a dask.distributed cluster included), with the in-memory results.

Each aligned block of (input, target, weight) is one task that runs the in-memory kernels and
returns a small partial result: for ``evaluate``, a :class:`~fastloss.StreamingLoss` (float64
sums, counts, min, max, histogram); for a loss function's ``reduction="mean"``/``"sum"``, the
float64 (total, denominator) pair the in-memory function computes its result from. The partial
results are merged by a tree reduction (``split_every`` of them per task), so no task returns,
and the scheduler never holds, per-element losses: a worker needs memory for the few blocks it
works on.

Accuracy: per-element losses, counts, min, max and histograms are the in-memory ones exactly.
``evaluate``'s sums (float64 for any input dtype) are within about 1e-15 relative of the
in-memory StreamingLoss's: the same float64 terms, grouped differently. The loss functions'
"mean" and "sum" are the in-memory function's float64 total (and denominator), grouped by
block, rounded to the input's dtype: within about 1e-15 relative for float64 input. For float16
and float32 input, they may differ from the in-memory result by a few ulps of that dtype: the
two float64 totals round to neighbouring values at times, and the elementwise (binary) losses'
kernel adds the float32 losses in float32 lanes over runs of 512 elements before adding in
float64, so another chunking regroups those float32 sums (about 1e-8 to 1e-7 relative).

Chunks: target and weight are rechunked to the input's chunks (on the axes they share), so a
``reduction="none"`` result is chunked like the input (without the class axis). The class axis
of the softmax losses, and the input axes along which a ``pos_weight`` varies, are made one
chunk, so that each block holds whole rows; a pos_weight that varies along the first (batch)
axis of N-d input is refused (ValueError): it would make the whole input one task.

Kernel threads per task (``n_threads=None``): 1. Dask's parallelism is its tasks (a
dask.distributed worker runs ``nthreads`` tasks at once, the threaded scheduler one per core,
the processes scheduler one per process), so one kernel thread per task uses the cores the
scheduler was given without oversubscribing them. An explicit ``n_threads`` is used by every
task: with the synchronous scheduler, or with workers of fewer threads than their cores.

Needs the ``dask`` extra: ``pip install "fastloss[dask]"`` (dask[array] and distributed).
"""
from __future__ import annotations

import copy
import functools
import math
import numbers

import numpy as np

try:
    import dask.array as da
    from dask.array.core import Array as _LegacyArray, unify_chunks
    from dask.base import is_dask_collection, tokenize
    from dask.core import flatten
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
    from dask.layers import ArraySliceDep
except ImportError as e:
    raise ImportError("fastloss.dask needs dask: pip install 'fastloss[dask]'") from e

from fastloss import _validate
from fastloss import losses as _losses
from fastloss.streaming import LOSSES, StreamingLoss

# Partial results merged per task by default.
SPLIT_EVERY = 8

__all__ = ["evaluate", "binary_cross_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_focal_loss", "cross_entropy", "softmax_focal_loss"]


# ---- threads ----

def _task_threads(n_threads):
    """The kernel threads of one task: n_threads when given, else 1 (see the module's
    docstring)."""
    return 1 if n_threads is None else n_threads


# ---- per-block tasks ----

def _cell(value, ndim):
    """value in a 1 x ... x 1 object array: one block's entry in the array of partial results."""
    cell = np.empty((1,) * ndim, object)
    cell[(0,) * ndim] = value
    return cell


def _block_state(x, y, *more, template, ndim, n_threads, weighted, grouped,
                 positions_per_row):
    """One block's partial state: a copy of the empty StreamingLoss template, updated with
    the block's (input, target[, weight][, groups]). With bootstrap, more ends with the
    block's slice of the first axis (ArraySliceDep): the block, whole rows of the stream,
    is updated at its stream position, start row * positions_per_row, so that its positions
    get the replicate weights one meter over the whole array gives them; its position is
    then set back to the positions it saw, so that the merge adds up to the whole array's."""
    more = list(more)
    w = more.pop(0) if weighted else None
    groups = more.pop(0) if grouped else None
    state = copy.deepcopy(template)
    boot = state._bootstrap
    start = more.pop(0)[0].start * positions_per_row if boot is not None and more else 0
    if boot is not None:
        boot.position = start
    state.update(x, y, w, groups=groups, n_threads=_task_threads(n_threads))
    if boot is not None:
        boot.position -= start
    return _cell(state, ndim)


def _block_totals(x, y, w=None, *, loss, params, ndim, n_threads):
    """One block's partial (total, denominator), in float64, as the in-memory loss function
    computes them (losses._binary_totals, losses._softmax_totals) with params (a
    StreamingLoss's: validated, the arrays float64 copies)."""
    threads = _task_threads(n_threads)
    if LOSSES[loss][0] == "binary":
        x, _, y, target_type, w, pw = _losses._binary_operands(x, y, w, params.get("pos_weight"))
        focal = {k: params[k] for k in ("alpha", "gamma") if k in params}
        totals = _losses._binary_totals(loss, (x, y, target_type, w, pw), None, threads, **focal)
    else:
        x, _, _, _, t, target_type, cw, ignore, eps = _losses._softmax_operands(
            x, y, params["weight"], params["ignore_index"], params.get("label_smoothing", 0.0),
            "gamma" in params)
        totals = _losses._softmax_totals((x, t, target_type, cw, ignore, eps), None, threads,
                                         params.get("gamma"))
    return _cell(totals, ndim)


def _block_losses(x, y, w=None, *, loss, params, n_threads):
    """One block of a reduction="none" result: the in-memory loss function on the block."""
    if w is not None:
        params = {**params, "weight": w}
    return getattr(_losses, loss)(x, y, reduction="none", n_threads=_task_threads(n_threads),
                                  **params)


def _item(partial):
    return partial.item() if isinstance(partial, np.ndarray) else partial


def _merge(*states):
    """A new StreamingLoss: the merge of states (StreamingLoss objects, or blocks' cells).
    The states are left unchanged: a retried task or a persisted intermediate may read them
    again."""
    states = [_item(s) for s in states]
    total = copy.deepcopy(states[0])
    for state in states[1:]:
        total.merge(state)
    return total


def _add(*partials):
    """The sum of (total, denominator) pairs (or blocks' cells of them), in float64."""
    total = denominator = 0.0
    for partial in partials:
        t, d = _item(partial)
        total += t
        denominator += d
    return total, denominator


def _finish(*partials, reduction, dtype):
    """The sum of (total, denominator) pairs as the in-memory function returns it: a NumPy
    scalar of the result's dtype (losses._result: "mean" is total / denominator by IEEE
    division)."""
    total, denominator = _add(*partials)
    return _losses._result(reduction, total, denominator, None, None, None, dtype)


def _tree(partials, combine, finish, split_every, name):
    """A graph that reduces partials (a Dask array of one partial result per block) to the
    key name: tasks of combine(up to split_every partials), level by level, until at most
    split_every are left, then finish(them) (one task at least). Built as one graph layer
    named name (no Delayed objects, no graph optimization at build time)."""
    keys = list(flatten(partials.__dask_keys__()))
    merge_name = f"fastloss-merge-{tokenize(name)}"
    layer = {}
    level = 0
    while len(keys) > split_every:
        parts = [keys[i:i + split_every] for i in range(0, len(keys), split_every)]
        keys = [(merge_name, level, i) for i in range(len(parts))]
        layer.update({key: (combine, *part) for key, part in zip(keys, parts)})
        level += 1
    layer[name] = (finish, *keys)
    return HighLevelGraph.from_collections(name, layer, dependencies=[partials])


class _ArrayDelayed(Delayed):
    """evaluate's result: a Delayed whose graph (Dask array layers, and the reduction's layer)
    is optimized as Dask arrays' graphs are when computed. So it is computed, and its keys
    given tasks, exactly as the arrays over the same inputs: dask.compute groups it with them
    (their shared input tasks run once), and a dask.distributed scheduler is never sent two
    different tasks under one key (dask/dask#9888), which fails computations."""

    __slots__ = ()
    __dask_optimize__ = _LegacyArray.__dict__["__dask_optimize__"]


# ---- arguments ----

def _as_dask(obj, name):
    """obj as a Dask array (array_like is wrapped by dask.array.asarray), with known chunk
    sizes."""
    a = obj if isinstance(obj, da.Array) else da.asarray(obj)
    if any(math.isnan(s) for s in a.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {a.shape}); call "
                         f"{name}.compute_chunk_sizes() first")
    return a


def _check_parameters(params, names):
    """Loss parameter arrays (pos_weight, class weights) are small and every task holds them:
    they must be in memory, not Dask collections (which StreamingLoss would compute
    silently)."""
    for key, name in names.items():
        if is_dask_collection(params.get(key)):
            raise TypeError(f"{name} is a loss parameter, which every task holds: pass a NumPy "
                            f"array ({name}.compute()), not a Dask collection")


def _fits(shape, into):
    """Whether an array of shape broadcasts to the shape into without enlarging it."""
    try:
        return np.broadcast_shapes(shape, into) == into
    except ValueError:
        return False


def _weight_operand(obj, name, shape, what):
    w = _as_dask(obj, name)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array; got dtype {w.dtype}")
    if not _fits(w.shape, shape):
        raise ValueError(f"{name} of shape {w.shape} cannot be broadcast to {what}")
    return w


class _Plan:
    """The validated operands of one loss as (Dask array, blockwise index) pairs (an index
    names the input's axes by number, right-aligned for broadcast weights), all chunked like
    the input on the axes they share, with the axes that must be one chunk made so; out_ind
    indexes the per-position losses.

    pos_weight and class_weight are the NumPy arrays of a StreamingLoss's params;
    class_weight_name is what the caller calls the class weights ("weight" in the loss
    functions, "class_weight" in evaluate), for the messages.
    """

    def __init__(self, loss, input, target, weight, pos_weight, class_weight, ignore_index,
                 class_weight_name, groups=None, by_class=False, whole_rows=False):
        x = _as_dask(input, "input")
        if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):
            raise TypeError(f"input must be a float16, float32 or float64 array; got dtype "
                            f"{x.dtype}")
        self.result_dtype = x.dtype.newbyteorder("=")
        y = _as_dask(target, "target")
        ind = tuple(range(x.ndim))
        if LOSSES[loss][0] == "binary":
            self.out_ind = ind
            if y.shape != x.shape:
                raise ValueError(f"target shape {y.shape} does not match input shape "
                                 f"{x.shape}")
            if y.dtype.kind not in "biuf":
                raise TypeError(f"target must be a real numeric or bool array; got dtype "
                                f"{y.dtype}")
            operands = [(x, ind), (y, ind)]
            if weight is not None:
                w = _weight_operand(weight, "weight", x.shape, f"the input's shape {x.shape}")
                operands.append((w, ind[x.ndim - w.ndim:]))
            # each block must hold the elements of every pos_weight value it uses: the input
            # axes along which pos_weight varies (the class axis, usually) become one chunk
            whole = {1} if by_class and x.ndim > 1 else set()  # a block holds every class
            loss_shape = x.shape
            if pos_weight is not None:
                if not _fits(pos_weight.shape, x.shape):
                    raise ValueError(f"pos_weight of shape {pos_weight.shape} cannot be "
                                     f"broadcast to the input's shape {x.shape}")
                whole = {x.ndim - pos_weight.ndim + i
                         for i, d in enumerate(pos_weight.shape) if d != 1}
                if 0 in whole and x.ndim > 1:
                    raise ValueError(
                        f"pos_weight of shape {pos_weight.shape} varies along the first "
                        f"(batch) axis of the input of shape {x.shape}: each task would need "
                        "that whole axis, i.e. the whole input. fastloss.dask takes a "
                        "pos_weight that varies along the other axes only (e.g. (C,) or "
                        "(C, 1, 1)); evaluate such data in memory, or in pieces along the "
                        "first axis")
        else:
            if x.ndim == 0:
                raise ValueError("input must have a class dimension: shape (C,), (N, C) or "
                                 "(N, C, d1, ..., dk); got a 0-d array")
            class_axis = 1 if x.ndim > 1 else 0
            if x.shape[class_axis] == 0:
                raise ValueError(f"input of shape {x.shape} has no classes")
            loss_shape = x.shape[:class_axis] + x.shape[class_axis + 1:]
            self.out_ind = ind[:class_axis] + ind[class_axis + 1:]
            if y.dtype.kind in "iu":
                if y.shape != loss_shape:
                    raise ValueError(f"target of shape {y.shape} does not match input of shape "
                                     f"{x.shape}: class indices must have shape {loss_shape}")
                operands = [(x, ind), (y, self.out_ind)]
            elif y.dtype.kind == "f":
                if y.shape != x.shape:
                    raise ValueError(f"target of shape {y.shape} does not match input of shape "
                                     f"{x.shape}: class probabilities must have the input's "
                                     "shape")
                if loss == "softmax_focal_loss":
                    raise ValueError("softmax_focal_loss takes class-index targets (an integer "
                                     "dtype); got class probabilities")
                if ignore_index >= 0:
                    raise ValueError("ignore_index is only for class-index targets; got "
                                     f"ignore_index={ignore_index} with probability targets")
                operands = [(x, ind), (y, ind)]
            else:
                raise TypeError("target must hold class indices (an integer dtype) or class "
                                f"probabilities (a float dtype); got dtype {y.dtype}")
            n_classes = x.shape[class_axis]
            if class_weight is not None and class_weight.shape != (n_classes,):
                raise ValueError(f"{class_weight_name} must have shape ({n_classes},), one "
                                 f"value per class; got shape {class_weight.shape}")
            if weight is not None:
                w = _weight_operand(weight, "weight", loss_shape,
                                    f"the loss's shape {loss_shape} (one weight per position; "
                                    "class weights go in class_weight=)")
                operands.append((w, self.out_ind[len(loss_shape) - w.ndim:]))
            whole = {class_axis}
        if groups is not None:
            g = _as_dask(groups, "groups")
            if g.dtype.kind not in "iu":
                raise TypeError(f"groups must be an integer array; got dtype {g.dtype}")
            if not _fits(g.shape, loss_shape):
                raise ValueError(f"groups of shape {g.shape} cannot be broadcast to the loss's "
                                 f"shape {loss_shape} (one group per position)")
            operands.append((g, self.out_ind[len(loss_shape) - g.ndim:]))
        if whole_rows:  # each block: whole rows of the loss, a contiguous run of its positions
            whole |= set(range(1, x.ndim))
        self.positions_per_row = math.prod(loss_shape[1:])
        # the input's chunks, with the axes in whole made one chunk; every operand takes them
        # on the axes it shares with the input (not those it broadcasts along)
        chunks = [(n,) if i in whole and n > 1 else c
                  for i, (n, c) in enumerate(zip(x.shape, x.chunks))]
        self.operands = []
        for a, a_ind in operands:
            a_chunks = tuple(chunks[axis] if a.shape[i] == x.shape[axis] else a.chunks[i]
                             for i, axis in enumerate(a_ind))
            self.operands.append((a if a_chunks == a.chunks else a.rechunk(a_chunks), a_ind))

    def blockwise(self, block_function, row_slices=False, **kwargs):
        """block_function over the aligned blocks of the operands; with row_slices, each call
        also gets (last) its block's slice of the first axis, as a 1-tuple."""
        args = [v for a, a_ind in self.operands for v in (a, a_ind)]
        if not (row_slices and self.out_ind):
            return da.blockwise(block_function, self.out_ind, *args, align_arrays=True,
                                concatenate=True, **kwargs)
        # blockwise aligns arrays only: align them first, then add the slices of the rows
        chunks, arrays = unify_chunks(*args)
        args = [v for a, (_, a_ind) in zip(arrays, self.operands) for v in (a, a_ind)]
        first = self.out_ind[0]
        args += [ArraySliceDep((chunks[first],)), (first,)]
        return da.blockwise(block_function, self.out_ind, *args, align_arrays=False,
                            concatenate=True, **kwargs)

    def partials(self, block_function, token, row_slices=False, **kwargs):
        """The array of partial results: block_function's result (in a cell) per block."""
        ndim = len(self.out_ind)
        return self.blockwise(block_function, row_slices, dtype=object,
                              adjust_chunks=dict.fromkeys(self.out_ind, 1),
                              meta=np.empty((0,) * ndim, object), token=token, ndim=ndim,
                              **kwargs)


def _check_threads(n_threads):
    if n_threads is not None:
        _validate.thread_count(n_threads, 0)


def _check_split_every(split_every):
    if split_every is None:
        return SPLIT_EVERY
    if isinstance(split_every, bool) or not isinstance(split_every, numbers.Integral) \
            or split_every < 2:
        raise ValueError(f"split_every must be an int >= 2; got {split_every!r}")
    return int(split_every)


# ---- public API ----

def evaluate(loss, input, target, weight=None, *, class_weight=None, bins=None, range=None,
             calibration_bins=None, by_class=False, groups=None, n_groups=None,
             bootstrap=None, seed=0, split_every=None, n_threads=None, **params):
    """The StreamingLoss of a loss over Dask arrays, as a dask Delayed.

    ``evaluate(loss, input, target, weight, groups=groups, ...).compute()`` equals (sums
    within about 1e-15 relative for any input dtype, counts, min, max and histograms exactly)
    ``StreamingLoss(loss, bins=bins, range=range, calibration_bins=calibration_bins,
    by_class=by_class, n_groups=n_groups, bootstrap=bootstrap, seed=seed,
    **params).update(input, target, weight, groups=groups)`` on the whole data in memory:
    ``mean`` = sum(s*l) / sum(s*d), ``sum``, ``weight_sum``, ``count``, ``nan_count``, ``min``,
    ``max`` and the ``histogram`` of the loss values l with sample weights s, and the extras
    (calibration bins and Brier sum, per-class and per-group sums, bootstrap replicates: see
    :class:`fastloss.StreamingLoss`). Without sample weights, ``mean`` is the in-memory loss
    function's ``reduction="mean"``.

    One task per aligned block builds the block's StreamingLoss with the in-memory kernels;
    a tree reduction merges them, ``split_every`` at a time, into the result.

    Parameters
    ----------
    loss : str
        One of ``fastloss.streaming.LOSSES``.
    input, target : Dask arrays (array_like is wrapped with ``dask.array.asarray``)
        As the in-memory loss function takes them. Chunks need not match: target and weight
        are rechunked to the input's; the class axis of the softmax losses (axis 1, or 0 for
        1-D input) is made one chunk.
    weight : Dask array or array_like, optional
        Sample weights (finite, non-negative) that broadcast to the input's shape (binary
        losses) or to the per-position loss's shape (N, d1, ..., dk) (softmax losses), as in
        ``StreamingLoss.update``.
    class_weight : array_like of shape (C,), optional
        The class weights of ``cross_entropy`` and ``softmax_focal_loss`` (the ``weight``
        parameter of the loss function and of StreamingLoss; here ``weight`` is the sample
        weight).
    bins, range
        The histogram, as in :class:`fastloss.StreamingLoss`.
    calibration_bins, by_class, n_groups, bootstrap, seed
        The extras, as in :class:`fastloss.StreamingLoss`. by_class with a binary loss makes
        the input's axis 1 (the classes) one chunk. bootstrap makes every axis but the first
        one chunk, so that each block is a run of whole rows of the stream: each block's meter
        starts at its rows' stream position, so its positions get the replicate weights that
        one meter over the whole array gives them, and the result's replicates (and
        ``mean_ci``) equal that meter's (sums within about 1e-15 relative).
    groups : Dask array or array_like of integers, optional
        With n_groups (required by, and only by, it): each position's group in [0, n_groups),
        broadcasting to the loss's shape like weight; rechunked to the input's chunks.
    split_every : int >= 2, optional
        How many partial states one task of the tree reduction merges (default
        ``SPLIT_EVERY``, 8): the tree has ceil(log(blocks, split_every)) levels.
    n_threads : int, optional
        Kernel threads per task (default 1: Dask runs tasks side by side; see this module's
        docstring).
    **params
        The loss's other parameters: ``pos_weight`` (array_like that broadcasts to the input's
        shape; the input axes along which it varies are made one chunk, and for N-d input it
        must not vary along the first axis), ``alpha``, ``gamma``, ``ignore_index``,
        ``label_smoothing``.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a new :class:`fastloss.StreamingLoss` (it can be merged with others,
        serialized with ``to_dict``...). Its graph is optimized as Dask arrays' are, so
        ``dask.compute`` of it with arrays over the same inputs reads them once.

    Raises
    ------
    ValueError, TypeError
        At once: what ``StreamingLoss(loss, ...)`` raises (an unknown loss lists the valid
        ones; an unknown parameter lists the loss's), an input that is not float16/32/64 or
        has no classes, a target, weight or groups of a wrong dtype, shapes that do not match
        (the message names them), groups without n_groups or n_groups without groups, a
        pos_weight that varies along the first axis of N-d input, unknown chunk sizes, a Dask
        collection as pos_weight or class_weight, a bad n_threads.
    ValueError, IndexError
        When computed: what ``StreamingLoss.update`` raises for values (targets or
        probabilities outside [0, 1], class indices out of range, negative weights, group ids
        outside [0, n_groups)).
    """
    if loss in LOSSES:  # else StreamingLoss lists the valid losses
        kind, defaults = LOSSES[loss]
        if class_weight is not None and kind == "binary":
            raise TypeError(f"{loss} has no class weights (the sample weight is weight=)")
        valid = [k for k in defaults if k != "weight"]  # the class weight is class_weight=
        unknown = sorted(set(params) - set(valid))
        if unknown:
            names = ", ".join(valid + ["class_weight"] * (kind == "softmax")) or "none"
            raise TypeError(f"{loss} takes no parameter {', '.join(unknown)} (its parameters: "
                            f"{names}; the sample weight is weight=)")
        if class_weight is not None:
            params["weight"] = class_weight
    _check_parameters(params, {"pos_weight": "pos_weight", "weight": "class_weight"})
    template = StreamingLoss(loss, bins=bins, range=range, calibration_bins=calibration_bins,
                             by_class=by_class, n_groups=n_groups, bootstrap=bootstrap,
                             seed=seed, **params)
    if (groups is None) != (n_groups is None):
        raise ValueError("groups are required by, and only by, n_groups; got "
                         f"n_groups={n_groups!r} and {'no ' * (groups is None)}groups")
    _check_threads(n_threads)
    split_every = _check_split_every(split_every)
    p = template.params
    plan = _Plan(loss, input, target, weight, p.get("pos_weight"), p.get("weight"),
                 p.get("ignore_index", -100), "class_weight", groups=groups,
                 by_class=by_class, whole_rows=bootstrap is not None)
    partials = plan.partials(_block_state, "fastloss-partials", row_slices=bootstrap is not None,
                             template=template, n_threads=n_threads, weighted=weight is not None,
                             grouped=groups is not None,
                             positions_per_row=plan.positions_per_row)
    name = f"fastloss-streamingloss-{tokenize(partials.name, split_every)}"
    graph = _tree(partials, _merge, _merge, split_every, name)
    return _ArrayDelayed(name, graph, layer=name)


def _loss(loss, input, target, weight, reduction, n_threads, split_every, /, **params):
    """A loss function's lazy result: the blockwise losses for "none", else the reduced
    total."""
    _validate.check_reduction(reduction)
    _check_threads(n_threads)
    split_every = _check_split_every(split_every)
    # None is "not given" only for the parameter arrays; elsewhere (alpha=None...) it is an
    # error, as in memory
    params = {k: v for k, v in params.items()
              if v is not None or k not in ("pos_weight", "weight")}
    _check_parameters(params, {"pos_weight": "pos_weight", "weight": "weight"})
    template = StreamingLoss(loss, **params)  # checks the parameters
    # the template's params: validated, the arrays private read-only float64 copies (later
    # changes to the caller's arrays change neither the result nor its keys)
    p = template.params
    binary = LOSSES[loss][0] == "binary"
    plan = _Plan(loss, input, target, weight if binary else None, p.get("pos_weight"),
                 p.get("weight"), p.get("ignore_index", -100), "weight")
    dtype = plan.result_dtype
    if reduction == "none":
        return plan.blockwise(_block_losses, dtype=dtype,
                              meta=np.empty((0,) * len(plan.out_ind), dtype),
                              token=f"fastloss-{loss}", loss=loss, params=p,
                              n_threads=n_threads)
    if da.Array is not _LegacyArray:
        raise NotImplementedError(
            f'fastloss.dask\'s reduction="{reduction}" needs dask.array.from_delayed, which '
            "dask.array with query planning (array.query-planning=True, experimental) does "
            "not have yet; evaluate() works there")
    # Each block's float64 (total, denominator), as the in-memory function computes them (the
    # binary losses' weight rescales each element, and "mean" divides by the number of
    # elements; the softmax losses' "mean" by the sum of the targets' class weights over the
    # positions not ignored, or the number of positions), added by a tree reduction.
    partials = plan.partials(_block_totals, "fastloss-partials", loss=loss, params=p,
                             n_threads=n_threads)
    name = f"fastloss-total-{tokenize(partials.name, split_every, reduction)}"
    graph = _tree(partials, _add, functools.partial(_finish, reduction=reduction, dtype=dtype),
                  split_every, name)
    return da.from_delayed(Delayed(name, graph, layer=name), (), dtype=dtype,
                           meta=np.empty((), dtype))


# The loss functions: the in-memory ones' arguments (without out=), lazy results.

def binary_cross_entropy(input, target, weight=None, reduction="mean", *, n_threads=None,
                         split_every=None):
    """:func:`fastloss.binary_cross_entropy` over Dask arrays, lazily.

    Per element, loss = -w * (y * max(log(p), -100) + (1 - y) * max(log1p(-p), -100)); "mean"
    divides the sum by the number of elements (w is not in the denominator), as in memory.

    Parameters
    ----------
    input, target : Dask arrays (array_like is wrapped with ``dask.array.asarray``)
        Probabilities and targets in [0, 1] of one shape; their chunks need not match (the
        target is rechunked to the input's chunks).
    weight : Dask array or array_like, optional
        Multiplies each element's loss (any real values: negative, nan and inf too, as in
        memory); broadcasts to the input's shape; rechunked to the input's chunks.
    reduction : {"mean", "none", "sum"}
        "none": a Dask array of the per-element losses, chunked like the input, computed block
        by block by the in-memory function. "mean", "sum": a 0-d Dask array of the input's
        dtype that computes to the NumPy scalar the in-memory function returns: each block's
        float64 total and element count, as the in-memory function computes them, added by a
        tree reduction (no task returns per-element losses), then the total (or the total over
        the count) in the input's dtype. Within about 1e-15 relative of the in-memory result
        for float64 input, a few ulps for float16/float32 (see :mod:`fastloss.dask`).
    n_threads : int, optional
        Kernel threads per task; default 1 (see :mod:`fastloss.dask`).
    split_every : int >= 2, optional
        Partial results added per task, as in :func:`evaluate`.

    Raises
    ------
    TypeError, ValueError
        At once, as the in-memory function: dtypes, shapes that do not match or broadcast
        (named in the message), an unknown reduction, a bad n_threads. When computed: targets
        or probabilities outside [0, 1] (ValueError).
    """
    return _loss("binary_cross_entropy", input, target, weight, reduction, n_threads,
                 split_every)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None, *, n_threads=None, split_every=None):
    """:func:`fastloss.binary_cross_entropy_with_logits` over Dask arrays, lazily.

    Per element, loss = w * (pw * y * softplus(-x) + (1 - y) * softplus(x)); "mean" divides the
    sum by the number of elements, as in memory.

    Parameters
    ----------
    input, target, weight, reduction, n_threads, split_every
        As in :func:`binary_cross_entropy` (input: logits).
    pos_weight : array_like, optional
        In memory (a NumPy array; every task holds a private copy), broadcasting to the
        input's shape; the input axes along which it varies (the class axis of a (C,)
        pos_weight) are made one chunk, so the result of "none" is chunked like the input
        except along them. For N-d input it must not vary along the first (batch) axis
        (ValueError: each task would need the whole input); for 1-D input, one that varies
        makes the input one chunk (one row of classes).

    Raises
    ------
    TypeError, ValueError
        As :func:`binary_cross_entropy`, TypeError for a Dask collection as pos_weight, and
        ValueError for a pos_weight that varies along the first axis of N-d input.
    """
    return _loss("binary_cross_entropy_with_logits", input, target, weight, reduction,
                 n_threads, split_every, pos_weight=pos_weight)


def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *, weight=None,
                       n_threads=None, split_every=None):
    """:func:`fastloss.sigmoid_focal_loss` over Dask arrays, lazily.

    Per element, loss = w * alpha_t * bce_with_logits(x, y) * (1 - p_t)**gamma (torchvision's
    formula; default reduction "none", as in memory).

    Parameters
    ----------
    input, target, weight, reduction, n_threads, split_every
        As in :func:`binary_cross_entropy_with_logits`.
    alpha, gamma
        As in the in-memory function (at once: ValueError for gamma < 0 or alpha > 1,
        TypeError for None).
    """
    return _loss("sigmoid_focal_loss", input, target, weight, reduction, n_threads,
                 split_every, alpha=alpha, gamma=gamma)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, *, n_threads=None, split_every=None):
    """:func:`fastloss.cross_entropy` over Dask arrays, lazily.

    Per position, loss = (1 - eps) * w_t * (-log p_t) + eps / C * sum_c w_c * (-log p_c) for
    class-index targets (0 where the target is ignore_index), sum_c w_c * q_c * (-log p_c) for
    class-probability targets; "mean" divides the sum by the sum of w_t over the positions not
    ignored (index targets) or by the number of positions (probabilities), as in memory.

    Parameters
    ----------
    input : Dask array (array_like is wrapped with ``dask.array.asarray``)
        Logits (C,), (N, C) or (N, C, d1, ..., dk); the class axis is made one chunk.
    target : Dask array or array_like
        Class indices of shape (N, d1, ..., dk), or class probabilities of the input's shape;
        chunks need not match the input's (the target is rechunked to them).
    weight : array_like of shape (C,), optional
        Class weights, in memory (a NumPy array; every task holds a private copy).
    ignore_index, label_smoothing
        As in the in-memory function.
    reduction : {"mean", "none", "sum"}
        "none": a Dask array of the per-position losses, shape (N, d1, ..., dk), chunked like
        the input without its class axis. "mean", "sum": a 0-d Dask array, as in
        :func:`binary_cross_entropy`.
    n_threads, split_every
        As in :func:`binary_cross_entropy`.

    Raises
    ------
    TypeError, ValueError
        At once, as the in-memory function: dtypes, shapes (named in the message),
        label_smoothing, ignore_index with probability targets, an input without classes, a
        Dask collection as weight, an unknown reduction, a bad n_threads.
    IndexError
        When computed: "Target 7 is out of bounds." for a class index outside [0, C) that is
        not ignore_index.
    """
    return _loss("cross_entropy", input, target, None, reduction, n_threads, split_every,
                 weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)


def softmax_focal_loss(input, target, gamma=2.0, weight=None, ignore_index=-100,
                       reduction="mean", *, n_threads=None, split_every=None):
    """:func:`fastloss.softmax_focal_loss` over Dask arrays, lazily.

    Per position, loss = -w_t * (1 - p_t)**gamma * log(p_t) (0 where the target is
    ignore_index); "mean" divides the sum by the sum of w_t over the positions not ignored, as
    in memory.

    Parameters
    ----------
    input, weight, ignore_index, reduction, n_threads, split_every
        As in :func:`cross_entropy`.
    target : Dask array or array_like of integers
        Class indices, shape (N, d1, ..., dk).
    gamma : float >= 0
        Focusing exponent.

    Raises
    ------
    IndexError, TypeError, ValueError
        As :func:`cross_entropy`; ValueError at once for probability targets and gamma < 0.
    """
    return _loss("softmax_focal_loss", input, target, None, reduction, n_threads, split_every,
                 gamma=gamma, weight=weight, ignore_index=ignore_index)
