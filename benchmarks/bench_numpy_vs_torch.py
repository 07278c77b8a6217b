"""NumPy against PyTorch on the CPU, same weights: median seconds, peak memory, the ratios.

Two workloads. `forward`: the paper's network (572×572×1 → 388×388×2, 31 M parameters), one
forward pass. `train-step`: the default network (base 8, depth 3) on a batch of 16 circle images
of 64×64, one training step (forward, loss, backward, Adam), in NumPy, in PyTorch's default
NCHW layout and in channels_last (which 01_pytorch.py trains in).

Each measurement runs in a fresh process, so that peak memory (the rise of the resident
set above what the process held before its first step) belongs to one framework; they
alternate, so that a noisy machine slows all alike.

    python benchmarks/bench_numpy_vs_torch.py [--workload forward|train-step] [--rounds 3]
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


def paper_forward(framework):
    """A function running the paper network's forward pass once in `framework`."""
    scratch = importlib.import_module("00_scratch")
    params = scratch.init_params(1, 2, 64, 4, norm="none", seed=0)
    image = np.random.default_rng(0).standard_normal((1, 1, 572, 572)).astype(np.float32)
    if framework == "numpy":
        return lambda: scratch.unet_forward(image, params, padding="valid")
    import torch

    net = (
        importlib.import_module("01_pytorch")
        .UNet(out_channels=2, base_channels=64, depth=4, padding="valid", norm="none")
        .eval()
    )
    net.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
    tensor = torch.from_numpy(image)

    def forward():
        with torch.inference_mode():
            return net(tensor).numpy()

    return forward


def train_step(framework):
    """A function running one training step of the default network on 16 images in `framework`."""
    scratch = importlib.import_module("00_scratch")
    images, masks = importlib.import_module("common.data").synthetic_circles(16, 64, seed=0)
    params = scratch.init_params(seed=0)
    if framework == "numpy":
        moments, steps = scratch.adam_moments(params), iter(range(1, 1_000_000))
        return lambda: scratch.train_step(params, moments, images, masks, next(steps), 1000, 1e-2)
    import torch

    lesson = importlib.import_module("01_pytorch")
    net = lesson.UNet()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
    images, masks = torch.from_numpy(images), torch.from_numpy(masks)
    if framework == "torch-channels-last":
        net, images = net.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    config = lesson.TrainConfig()
    scheduler = lesson.make_scheduler(optimizer, config, 1000)
    autocast = lesson.autocast_for(config, torch.device("cpu"))
    weights = torch.ones_like(masks)
    return lambda: lesson.train_step(net, images, masks, weights, optimizer, scheduler, autocast)


WORKLOADS = {
    "forward": (paper_forward, ("numpy", "torch")),
    "train-step": (train_step, ("numpy", "torch", "torch-channels-last")),
}


def measure(workload, framework, repeats):
    """Runs in a child process: time `repeats` runs after one warm-up."""
    run = WORKLOADS[workload][0](framework)
    before = resident_kib("VmRSS")
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {"seconds": statistics.median(seconds[1:]), "peak_mib": (resident_kib("VmHWM") - before) / 1024}


def paper_gflops():
    scratch = importlib.import_module("00_scratch")
    trace = scratch.Trace(echo=False)
    image = np.zeros((1, 1, 572, 572), np.float32)
    scratch.unet_forward(image, scratch.init_params(1, 2, 64, 4, norm="none"), padding="valid", trace=trace)
    return sum(row["flops"] for row in trace.rows) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, default="forward")
    parser.add_argument("--rounds", type=int, default=3, help="alternating child processes per framework")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per child")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.workload, args.child, args.repeats)))
        return

    frameworks = WORKLOADS[args.workload][1]
    results = {framework: [] for framework in frameworks}
    for _ in range(args.rounds):
        for framework in frameworks:
            command = [sys.executable, __file__, "--workload", args.workload, "--child", framework]
            out = subprocess.run(
                [*command, "--repeats", str(args.repeats)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stdout
            results[framework].append(json.loads(out))
    if args.workload == "forward":
        gflops = paper_gflops()
        print(f"paper U-Net forward, 572×572×1 → 388×388×2, {gflops:.1f} GFLOP", end="")
    else:
        gflops = None
        print("one training step, base 8, depth 3, 16 images of 64×64", end="")
    print(f"; median of {args.rounds} processes × {args.repeats} runs")
    summary = {}
    for framework, runs in results.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = statistics.median(run["peak_mib"] for run in runs)
        summary[framework] = (seconds, peak)
        rate = f"{gflops / seconds:6.1f} GFLOP/s  " if gflops else ""
        each = ", ".join(format(run["seconds"], ".3f") for run in runs)
        print(f"{framework:>20}: {seconds:7.3f} s  {rate}peak +{peak:6.0f} MiB  (each process: {each} s)")
    np_s, np_mem = summary["numpy"]
    for framework in frameworks[1:]:
        pt_s, pt_mem = summary[framework]
        print(f"NumPy / {framework}: time {np_s / pt_s:.2f}×, peak memory {np_mem / max(pt_mem, 1):.2f}×")


if __name__ == "__main__":
    main()
