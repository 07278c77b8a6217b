"""Images per second from `synthetic_circles` at 64×64: data must stay a few percent of training."""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data import synthetic_circles  # noqa: E402


def main():
    n, repeats = 5000, 5
    seconds = []
    for seed in range(repeats):
        start = time.perf_counter()
        synthetic_circles(n, size=64, seed=seed)
        seconds.append(time.perf_counter() - start)
    rates = sorted(n / s for s in seconds)
    print(
        f"synthetic_circles, 64×64, {n} images × {repeats} runs: "
        f"median {statistics.median(rates):,.0f} images/s (min {rates[0]:,.0f}, max {rates[-1]:,.0f})"
    )


if __name__ == "__main__":
    main()
