"""Benchmark of the NONA head on this machine: training steps and large-scale inference.

Prints two tables:

* training step (forward + backward through a projector and the head) for
  b in {32, 128, 512}, d = 25: NONA(l2), NONA(l2 + S2 pointwise), DenseHead;
* inference of b = 1024 queries against N in {1e4, 1e5, 1e6} neighbours, d = 25:
  time and peak working memory of NONA(l2), NONA(l2 + S2 pointwise), NONA(rbf),
  sklearn's brute-force KNeighborsRegressor and the floor ``torch.exp(z @ z_n.T)``.

Each inference measurement runs in a fresh subprocess, so its peak resident
memory (``ru_maxrss``) minus the memory held before the call is the working
memory of that call alone.

Usage: ``python benchmarks/head.py [--quick] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from nona import NONA, DenseHead, Projector, SoftStep

D = 25
IN_DIM = 256


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_nona(name: str, dim: int = D) -> NONA:
    """The benchmarked NONA configurations by name."""
    if name == "NONA(l2)":
        return NONA("l2")
    if name == "NONA(l2+S2 pw)":
        return NONA("l2", softstep=SoftStep("s2", "pointwise", dim=dim))
    if name == "NONA(rbf)":
        return NONA("rbf")
    raise ValueError(name)


def training_table(device: str, repeats: int) -> list[dict]:
    """Forward + backward time of one training step per head and batch size."""
    rows = []
    for b in (32, 128, 512):
        for name in ("NONA(l2)", "NONA(l2+S2 pw)", "DenseHead"):
            torch.manual_seed(0)
            projector = Projector(IN_DIM, D).to(device)
            head = (DenseHead(D) if name == "DenseHead" else make_nona(name)).to(device)
            x, y = torch.randn(b, IN_DIM, device=device), torch.rand(b, device=device)

            def step():
                z = projector(x)
                pred = head(z) if name == "DenseHead" else head(z, z, y, exclude_self=True)
                loss = torch.nn.functional.mse_loss(pred, y)
                loss.backward()

            rows.append({"b": b, "head": name, "ms": 1e3 * _median_time(step, device, repeats)})
    return rows


def _inference_call(method: str, n: int, device: str) -> tuple[float, int]:
    torch.manual_seed(0)
    z = torch.randn(1024, D, device=device)
    z_n = torch.randn(n, D, device=device)
    y_n = torch.rand(n, device=device)
    if method == "KNeighborsRegressor(brute)":
        from sklearn.neighbors import KNeighborsRegressor

        knn = KNeighborsRegressor(n_neighbors=5, algorithm="brute").fit(z_n.cpu().numpy(), y_n.cpu().numpy())
        queries = z.cpu().numpy()
        fn = lambda: knn.predict(queries)  # noqa: E731
    elif method == "floor exp(z z_n^T)":
        fn = lambda: torch.exp(z @ z_n.T)  # noqa: E731
    else:
        head = make_nona(method).to(device)

        def fn():
            with torch.no_grad():
                return head(z, z_n, y_n)

    repeats = 3 if n <= 100_000 else 1
    _sync(device)
    # The baseline is taken before the first call: memory a method keeps after
    # its first call (caches, pools) counts as its working memory.
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    elapsed = _median_time(fn, device, repeats)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return elapsed, max(peak, 0)


INFERENCE_METHODS = ("NONA(l2)", "NONA(l2+S2 pw)", "NONA(rbf)", "KNeighborsRegressor(brute)", "floor exp(z z_n^T)")


def inference_table(device: str, sizes: tuple[int, ...]) -> list[dict]:
    """Inference time and peak working memory, each measured in a fresh process."""
    rows = []
    for n in sizes:
        for method in INFERENCE_METHODS:
            if device == "cuda" and method.startswith("KNeighbors"):
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--one", method, str(n), "--device", device],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            seconds, peak = json.loads(out.strip().splitlines()[-1])
            rows.append({"N": n, "method": method, "s": seconds, "peak_MB": peak / 2**20})
    return rows


def print_tables(train: list[dict], infer: list[dict], device: str) -> None:
    """Print both tables and the ratios to the floor that the targets refer to."""
    threads = torch.get_num_threads()
    print(f"\n## Training step (forward + backward), d = {D}, device = {device}, torch threads = {threads}\n")
    print("| b | head | ms / step |\n| ---: | --- | ---: |")
    for r in train:
        print(f"| {r['b']} | {r['head']} | {r['ms']:.2f} |")
    print(f"\n## Inference, b = 1024 queries, d = {D}, device = {device}\n")
    print("| N | method | seconds | peak working memory (MB) | x floor |\n| ---: | --- | ---: | ---: | ---: |")
    floors = {r["N"]: r["s"] for r in infer if r["method"].startswith("floor")}
    for r in infer:
        print(f"| {r['N']:.0e} | {r['method']} | {r['s']:.4f} | {r['peak_MB']:.0f} | {r['s'] / floors[r['N']]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="only N up to 1e5 and fewer repeats")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA device is available")
    if args.one:
        print(json.dumps(_inference_call(args.one[0], int(args.one[1]), args.device)))
        return
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    train = training_table(args.device, repeats=5 if args.quick else 20)
    infer = inference_table(args.device, sizes)
    print_tables(train, infer, args.device)


if __name__ == "__main__":
    main()
