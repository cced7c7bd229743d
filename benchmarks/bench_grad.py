"""What fastloss.grad costs, side by side in one process (the machine's noise hits all alike):

    python benchmarks/bench_grad.py --size 1e7 --threads 1

- sigmoid focal loss (alpha=0.25, gamma=2), gradient and Hessian, float32: fastloss.grad
  against the NumPy objective a user writes by hand (sigmoid, p_t, pow, the chain rule through
  p_t) and against torch autograd (forward + backward, gradient only);
- the loss and its gradient in one call against the loss alone (reduction "mean", the training
  case: a scalar and the gradient array, against the scalar);
- cross-entropy over 10 classes, gradient and Hessian, against torch autograd.

Prints the CPU model, the median ms of each and the ratios. Not a test: nothing is asserted.
The NumPy objective makes about ten temporaries of the input's size (4 bytes each).
"""
import argparse
import time

import numpy as np

import fastloss

from machine import cpu_model  # benchmarks/machine.py


def numpy_focal_objective(x, y, alpha=0.25, gamma=2.0):
    """The hand-written focal objective: gradient and Hessian with respect to the logit of
    l = -alpha_t * (1 - p_t)^gamma * log(p_t), through p_t (hard labels)."""
    p = 1 / (1 + np.exp(-x))
    p_t = p * y + (1 - p) * (1 - y)
    a_t = alpha * y + (1 - alpha) * (1 - y)
    u = 1 - p_t
    log_pt = np.log(p_t)
    dl = a_t * (gamma * u ** (gamma - 1) * log_pt - u ** gamma / p_t)
    d2l = a_t * (-gamma * (gamma - 1) * u ** (gamma - 2) * log_pt
                 + 2 * gamma * u ** (gamma - 1) / p_t + u ** gamma / p_t ** 2)
    s = (2 * y - 1) * p * (1 - p)  # d p_t / dx
    ds = s * (1 - 2 * p)
    return dl * s, d2l * s * s + dl * ds


def torch_focal_backward(torch, x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's formula, forward and backward of the mean."""
    xt = x.detach().requires_grad_(True)
    p = torch.sigmoid(xt)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(xt, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma * (alpha * y + (1 - alpha) * (1 - y))
    loss.mean().backward()
    return xt.grad


def torch_ce_backward(torch, z, t):
    zt = z.detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(zt, t).backward()
    return zt.grad


def median_ms(fn, repeat, clock=time.perf_counter):
    fn()  # warm up: page faults of the outputs, thread pools
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7, help="elements per input")
    parser.add_argument("--threads", type=int, default=1, help="for fastloss and torch")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    n, threads = int(args.size), args.threads
    # One thread: the calling thread's CPU time, which a loaded machine's other processes do
    # not inflate (they take the CPU away between our instructions, not during them); more
    # threads: wall time.
    clock = time.thread_time if threads == 1 else time.perf_counter
    global median_ms
    timed = median_ms
    median_ms = lambda fn, repeat: timed(fn, repeat, clock)  # noqa: E731
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, np.float32) * 3
    y = (rng.random(n, np.float32) < 0.5).astype(np.float32)
    g, h = np.empty_like(x), np.empty_like(x)
    print(f"CPU: {cpu_model()}; fastloss {fastloss.simd_path()}, {threads} thread(s), "
          f"{n:.3g} float32 elements, median of {args.repeat} "
          f"({'thread CPU' if threads == 1 else 'wall'} time)")

    # agreement first: the same objective
    k = min(n, 100000)
    ours = fastloss.grad("sigmoid_focal_loss", x[:k], y[:k], hessian=True)
    theirs = numpy_focal_objective(x[:k].astype(np.float64), y[:k].astype(np.float64))
    scale = np.abs(theirs[0]).max() + np.abs(theirs[1]).max()
    print(f"agreement with the float64 NumPy objective: grad {np.abs(ours[0] - theirs[0]).max() / scale:.1e}, "
          f"hess {np.abs(ours[1] - theirs[1]).max() / scale:.1e} (of the largest values)")

    rows = []

    def row(name, ms, base=None):
        """base: the row name this one is compared with"""
        rows.append((name, ms, base))

    fl = median_ms(lambda: fastloss.grad("sigmoid_focal_loss", x, y, hessian=True,
                                         n_threads=threads, out=(g, h)), args.repeat)
    FL = "fastloss.grad focal, grad + hess"
    row(FL, fl)
    with np.errstate(all="ignore"):
        row("NumPy focal objective, grad + hess",
            median_ms(lambda: numpy_focal_objective(x, y), args.repeat), FL)
    if not args.no_torch:
        import torch
        torch.set_num_threads(threads)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        row("torch autograd focal, forward + backward (grad)",
            median_ms(lambda: torch_focal_backward(torch, xt, yt), args.repeat), FL)

    alone = median_ms(lambda: fastloss.sigmoid_focal_loss(x, y, reduction="mean",
                                                          n_threads=threads), args.repeat)
    row("fastloss focal loss alone (mean)", alone)
    ALONE = "fastloss focal loss alone (mean)"
    row("fastloss focal loss + grad, one call (mean)",
        median_ms(lambda: fastloss.grad("sigmoid_focal_loss", x, y, return_loss=True,
                                        reduction="mean", n_threads=threads, out=g),
                  args.repeat), ALONE)
    bce_alone = median_ms(lambda: fastloss.binary_cross_entropy_with_logits(
        x, y, n_threads=threads), args.repeat)
    BCE = "fastloss BCE with logits alone (mean)"
    row(BCE, bce_alone)
    row("fastloss BCE with logits + grad, one call (mean)",
        median_ms(lambda: fastloss.grad("binary_cross_entropy_with_logits", x, y,
                                        return_loss=True, reduction="mean", n_threads=threads,
                                        out=g), args.repeat), BCE)

    z = x[: n // 10 * 10].reshape(-1, 10)
    t = rng.integers(0, 10, len(z))
    gz, hz = np.empty_like(z), np.empty_like(z)
    ce = median_ms(lambda: fastloss.grad("cross_entropy", z, t, hessian=True, reduction="mean",
                                         n_threads=threads, out=(gz, hz)), args.repeat)
    CE = "fastloss.grad cross_entropy (N x 10), grad + hess"
    row(CE, ce)
    ce_alone = median_ms(lambda: fastloss.cross_entropy(z, t, n_threads=threads), args.repeat)
    CE_ALONE = "fastloss cross_entropy alone (mean)"
    row(CE_ALONE, ce_alone)
    row("fastloss cross_entropy + grad, one call (mean)",
        median_ms(lambda: fastloss.grad("cross_entropy", z, t, return_loss=True,
                                        reduction="mean", n_threads=threads, out=gz),
                  args.repeat), CE_ALONE)
    if not args.no_torch:
        zt, tt = torch.from_numpy(z), torch.from_numpy(t)
        row("torch autograd cross_entropy, forward + backward (grad)",
            median_ms(lambda: torch_ce_backward(torch, zt, tt), args.repeat), CE)

    width = max(len(r[0]) for r in rows)
    times = {name: ms for name, ms, _ in rows}
    print(f"{'':{width}}  {'ms':>9}  {'ns/el':>6}  ratio")
    for name, ms, base in rows:
        ratio = "" if base is None else f"{ms / times[base]:6.2f}x  ({base})"
        print(f"{name:{width}}  {ms:9.2f}  {1e6 * ms / n:6.2f}  {ratio}")


if __name__ == "__main__":
    main()
