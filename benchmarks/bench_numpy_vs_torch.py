"""The paper's network (572×572×1 → 388×388×2, 31 M parameters) forward in NumPy and in
PyTorch on the CPU, same weights: median seconds, GFLOP/s, peak memory, and the ratios.

Each measurement runs in a fresh process, so that peak memory (the rise of the resident
set above what the process held before its first forward pass) belongs to one framework;
the two alternate, so that a noisy machine slows both alike.

    python benchmarks/bench_numpy_vs_torch.py [--rounds 3]
"""

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def resident_kib(field):
    """VmRSS (now) or VmHWM (peak so far) of this process, in KiB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(framework, repeats):
    """Runs in a child process: time `repeats` forward passes after one warm-up."""
    scratch = importlib.import_module("00_scratch")
    params = scratch.init_params(1, 2, 64, 4, batchnorm=False, seed=0)
    image = np.random.default_rng(0).standard_normal((1, 1, 572, 572)).astype(np.float32)
    if framework == "torch":
        import torch

        net = (
            importlib.import_module("01_pytorch")
            .UNet(out_channels=2, base_channels=64, depth=4, padding="valid", batchnorm=False)
            .eval()
        )
        net.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
        tensor = torch.from_numpy(image)

        def forward():
            with torch.inference_mode():
                return net(tensor).numpy()
    else:

        def forward():
            return scratch.unet_forward(image, params, padding="valid")

    before = resident_kib("VmRSS")
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        logits = forward()
        seconds.append(time.perf_counter() - start)
    assert logits.shape == (1, 2, 388, 388)
    return {"seconds": statistics.median(seconds[1:]), "peak_mib": (resident_kib("VmHWM") - before) / 1024}


def paper_gflops():
    scratch = importlib.import_module("00_scratch")
    trace = scratch.Trace(echo=False)
    image = np.zeros((1, 1, 572, 572), np.float32)
    scratch.unet_forward(
        image, scratch.init_params(1, 2, 64, 4, batchnorm=False), padding="valid", trace=trace
    )
    return sum(row["flops"] for row in trace.rows) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating child processes per framework")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per child")
    parser.add_argument("--child", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return

    results = {"numpy": [], "torch": []}
    for _ in range(args.rounds):
        for framework in results:
            out = subprocess.run(
                [sys.executable, __file__, "--child", framework, "--repeats", str(args.repeats)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stdout
            results[framework].append(json.loads(out))
    gflops = paper_gflops()
    print(
        f"paper U-Net forward, 572×572×1 → 388×388×2, {gflops:.1f} GFLOP; "
        f"median of {args.rounds} processes × {args.repeats} passes"
    )
    summary = {}
    for framework, runs in results.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = statistics.median(run["peak_mib"] for run in runs)
        summary[framework] = (seconds, peak)
        print(
            f"{framework:>6}: {seconds:6.2f} s  {gflops / seconds:6.1f} GFLOP/s  peak +{peak:6.0f} MiB  "
            f"(each process: {', '.join(format(run['seconds'], '.2f') for run in runs)} s)"
        )
    (np_s, np_mem), (pt_s, pt_mem) = summary["numpy"], summary["torch"]
    print(f"NumPy / PyTorch: time {np_s / pt_s:.2f}×, peak memory {np_mem / pt_mem:.2f}×")


if __name__ == "__main__":
    main()
