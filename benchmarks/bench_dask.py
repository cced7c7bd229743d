"""fastloss.dask on a LocalCluster of 1 and of 2 worker processes, against fastloss in one
process, on the same data: binary_cross_entropy_with_logits over float32 logits and bool
targets generated chunk by chunk with dask.array.random (never materialized whole; 5 bytes
an element).

    python benchmarks/bench_dask.py --elements 1e9 --chunk 1e7

Generating the data costs several times more than the loss, so each configuration is timed
three ways, and all three are printed:

- "gen+loss": evaluate() over the generated arrays (what a user pays end to end);
- "gen only": the same generation, each block reduced to one number (no loss);
- "loss": their difference, an estimate of the loss's share, printed as "n/a" when it is
  below the noise (not above the spread of the repeated runs, or not positive);
- "persisted" (when the data fits: --persist): evaluate() over the data already in the
  workers' memory, which times the loss and the scheduling alone: the loss timing to read.

Scaling efficiency is the 2-worker speedup over 1 worker divided by 2. "one process" runs
fastloss without dask on the same chunks (generated one at a time, untimed; only the
StreamingLoss updates are timed) with 1 and 2 kernel threads, and evaluate() on dask's
threaded scheduler in one process. With --repeat, each dask timing is the shortest of that
many runs (the machine may be shared). "peak MB" is each worker's peak resident memory growth
during the gen+loss run. Every configuration's mean must agree (float64 sums of the same
losses, in other groupings: 1e-12 relative), or the script exits with status 1.
"""
import argparse
import os
import resource
import sys
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import fastloss
import fastloss.dask as fd

LOSS = "binary_cross_entropy_with_logits"


def _data(n, chunk, seed, inputs="one"):
    """float32 logits ~ U(-4, 4) and bool targets ~ Bernoulli(0.3), in chunks.

    inputs="one": the two rows of one uniform array, so that one task makes both blocks of a
    chunk. "two": two arrays, as logits and labels stored in two Zarr arrays would be; then
    dask.distributed may make a chunk's logits on one worker and its targets on another, and
    move one of them to the other for the loss's task."""
    rng = da.random.default_rng(seed)
    if inputs == "two":
        x = rng.random(n, chunks=chunk, dtype=np.float32)
        y = rng.random(n, chunks=chunk, dtype=np.float32)
    else:
        x, y = rng.random((2, n), chunks=(2, chunk), dtype=np.float32)
    return x * np.float32(8) - np.float32(4), y < np.float32(0.3)


def _first(x, y):
    return x[:1] + y[:1]


def _generation_only(x, y):
    """A graph that generates every block of x and y, and reduces each to one number."""
    return da.map_blocks(_first, x, y, chunks=((1,) * x.numblocks[0],), dtype=np.float32).sum()


def _peak_rss(scale=1 if sys.platform == "darwin" else 1024):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


REPEAT = 1  # set from --repeat


def _timed(f, settle=None):
    """(the shortest of REPEAT runs of f, in seconds, and f's result); settle() is called
    after each run. The spread of the runs (longest - shortest) goes to _LAST_SPREAD[0]."""
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
        if settle is not None:
            settle()
    _LAST_SPREAD[0] = max(times) - min(times)
    return min(times), result


_LAST_SPREAD = [0.0]  # the spread of the last _timed runs


def _difference(total, total_spread, part, part_spread):
    """total - part, or None when it is not above the noise: not positive, or not above the
    spread of either timing's repeated runs."""
    difference = total - part
    return difference if difference > max(total_spread, part_spread, 0.0) else None


def _scheduler_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


SETTLE_TIMEOUT = 60.0  # seconds


def _settler(client, timeout=SETTLE_TIMEOUT):
    """A function that waits until the scheduler has forgotten the tasks of the last run (it
    would otherwise hand its results to the next, identical run at once); TimeoutError after
    timeout seconds."""
    baseline = client.run_on_scheduler(_scheduler_tasks)

    def settle():
        deadline = time.monotonic() + timeout
        while (tasks := client.run_on_scheduler(_scheduler_tasks)) > baseline:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler still holds {tasks} tasks ({baseline} "
                                   f"before the run) after {timeout:.0f} s")
            time.sleep(0.02)
    return settle


def _on_cluster(workers, x, y, persist):
    """Times on a LocalCluster of `workers` processes of one thread each."""
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        get = client.get
        warm = _data(10**5, 10**4, 1)
        fd.evaluate(LOSS, *warm).compute(scheduler=get)  # imports, first allocations
        _generation_only(*warm).compute(scheduler=get)
        settle = _settler(client)
        before = client.run(_peak_rss)
        total, state = _timed(lambda: fd.evaluate(LOSS, x, y).compute(scheduler=get), settle)
        total_spread = _LAST_SPREAD[0]
        after = client.run(_peak_rss)
        gen, _ = _timed(lambda: _generation_only(x, y).compute(scheduler=get), settle)
        row = {"gen+loss": total, "gen only": gen,
               "loss": _difference(total, total_spread, gen, _LAST_SPREAD[0]),
               "mean": state.mean,
               "peak MB": max(after[w] - before[w] for w in after) / 1e6}
        if persist:
            xp, yp = client.persist([x, y])
            client.compute([xp.sum(), yp.sum()], sync=True)  # wait until they are in memory
            settle = _settler(client)
            row["persisted"], p = _timed(lambda: fd.evaluate(LOSS, xp, yp).compute(
                scheduler=get), settle)
            row["persisted mean"] = p.mean
    return row


def _one_process(x, y):
    """fastloss without dask on the same chunks: only the updates are timed."""
    meters = {1: fastloss.StreamingLoss(LOSS), 2: fastloss.StreamingLoss(LOSS)}
    times = dict.fromkeys(meters, 0.0)
    for i, (xb, yb) in enumerate(zip(x.blocks, y.blocks)):
        xc, yc = (b.compute(scheduler="sync") for b in (xb, yb))
        for threads in (1, 2) if i % 2 else (2, 1):  # neither always runs on warmer caches
            t = time.perf_counter()
            meters[threads].update(xc, yc, n_threads=threads)
            times[threads] += time.perf_counter() - t
    return {threads: {"loss": times[threads], "mean": meters[threads].mean}
            for threads in meters}


def _threaded(x, y, workers):
    total, state = _timed(lambda: fd.evaluate(LOSS, x, y).compute(scheduler="threads",
                                                                  num_workers=workers))
    total_spread = _LAST_SPREAD[0]
    gen, _ = _timed(lambda: _generation_only(x, y).compute(scheduler="threads",
                                                           num_workers=workers))
    return {"gen+loss": total, "gen only": gen,
            "loss": _difference(total, total_spread, gen, _LAST_SPREAD[0]), "mean": state.mean}


def _rate(n, seconds):
    return f"{n / seconds:10.3g}" if seconds > 0 else f"{'-':>10}"


def _cell(row, column, n=None):
    """A table cell: seconds, or elements a second when n is given; "-" when not measured,
    "n/a" when below the noise (the loss column)."""
    if column not in row:
        return "-"
    if row[column] is None:
        return "n/a"
    return _rate(n, row[column]).strip() if n else f"{row[column]:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=float, default=1e9, help="logits (default 1e9)")
    parser.add_argument("--chunk", type=float, default=1e7, help="elements per chunk (1e7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inputs", choices=("one", "two"), default="one",
                        help="generate logits and targets in one array (default) or two")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each dask timing; the shortest is printed (default 1)")
    parser.add_argument("--persist", choices=("auto", "yes", "no"), default="auto",
                        help="also time evaluate() over data persisted in the workers' "
                             "memory; auto: when it takes at most 1/8 of this machine's RAM")
    args = parser.parse_args(argv)
    global REPEAT
    REPEAT = args.repeat
    n, chunk = int(args.elements), int(args.chunk)
    x, y = _data(n, chunk, args.seed, args.inputs)
    data_bytes = n * (x.dtype.itemsize + y.dtype.itemsize)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    persist = args.persist == "yes" or args.persist == "auto" and data_bytes <= ram / 8
    print(f"{LOSS}: {n:.3g} float32 logits, bool targets ({data_bytes / 1e9:.2f} GB), "
          f"{x.numblocks[0]} chunks of {chunk:.3g} from {args.inputs} random array"
          f"{'s' * (args.inputs == 'two')}; fastloss {fastloss.__version__}, "
          f"{fastloss.simd_path()}, {len(os.sched_getaffinity(0))} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    rows = {}
    for workers in (1, 2):
        rows[f"cluster, {workers} worker{'s' * (workers > 1)}"] = _on_cluster(workers, x, y,
                                                                               persist)
    for workers in (1, 2):
        rows[f"1 process, dask threads={workers}"] = _threaded(x, y, workers)
    for threads, row in _one_process(x, y).items():
        rows[f"1 process, no dask, n_threads={threads}"] = row

    columns = ("gen+loss", "gen only", "loss", "persisted")
    print(f"\n{'configuration':38}" + "".join(f"{c + ' s':>12}" for c in columns)
          + "".join(f"{c + ' el/s':>16}" for c in columns) + f"{'peak MB':>9}")
    for name, row in rows.items():
        print(f"{name:38}" + "".join(f"{_cell(row, c):>12}" for c in columns)
              + "".join(f"{_cell(row, c, n):>16}" for c in columns)
              + (f"{row['peak MB']:9.0f}" if "peak MB" in row else f"{'-':>9}"))
    if any(row.get("loss", 0) is None for row in rows.values()):
        print("loss n/a: gen+loss - gen only is below the noise (not above the spread of the "
              "repeated runs); the persisted figures time the loss")

    one, two = rows["cluster, 1 worker"], rows["cluster, 2 workers"]
    print("\n2-worker scaling efficiency (speedup / 2):")
    for c in columns:
        if one.get(c) and two.get(c):  # measured, above the noise, positive
            note = "  (gen+loss - gen only: noisy when small)" if c == "loss" else ""
            print(f"  {c:10} {one[c] / two[c] / 2:6.2f}  (speedup {one[c] / two[c]:.2f}){note}")

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes share the "
          "CPUs when it is above the benchmark's own)")
    means = [row[k] for row in rows.values() for k in ("mean", "persisted mean") if k in row]
    spread = (max(means) - min(means)) / abs(min(means))
    print(f"\nmeans: {min(means)!r} to {max(means)!r}, relative spread {spread:.1e}")
    if not spread <= 1e-12:
        print("the means disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
