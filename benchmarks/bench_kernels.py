"""Time the kernels and helpers whose speed the tests used to assert; prints figures.

Each figure is the best of ``--repeat`` runs (the machine may be shared: take the best):

- Ramp normalization of 300 boxes of 256^2 (float32, in place), goal < 0.6 s;
- contrast inversion of the same boxes into float32 (in place);
- ``extract_micrograph`` of a 4096^2 micrograph with 300 boxes of 256^2 (dust removal,
  inversion, Ramp with R = 128, boxes streamed to a sink), as one task of workload B24 does;
- dust removal of a 4096^2 Gaussian micrograph (k = 3.5), goal < 1 s;
- reading the headers of 200 MRC files (``micrograph_info``), goal < 10 ms per file;
- the default synthetic dataset (2 pairs of 1024^2, 30 particles each), goal < 10 s.

    python benchmarks/bench_kernels.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pairextract.core.params import ExtractionParams
from pairextract.io.mrc import micrograph_info, write_mrc
from pairextract.ops.contrast import invert_contrast
from pairextract.ops.dust import remove_dust
from pairextract.ops.normalize import normalize_stack
from pairextract.ops.protocol import stream_micrograph
from pairextract.testing.synth import make_dataset


def best_of(repeat: int, setup: Callable[[], object], run: Callable[[object], object]) -> float:
    """Best wall-clock time of ``run(setup())`` over ``repeat`` runs (setup not timed)."""
    times = []
    for _ in range(repeat):
        arg = setup()
        t0 = time.perf_counter()
        run(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(4)

    stack = rng.standard_normal(size=(300, 256, 256), dtype=np.float32)
    t = best_of(args.repeat, stack.copy,
                lambda s: normalize_stack(s, "Ramp", 128, out=s))
    print(f"Ramp normalization, 300 x 256^2:        {t:.3f} s (goal < 0.6 s)")

    t = best_of(args.repeat, stack.copy,
                lambda s: invert_contrast(s, -6.0, 6.0, out=s))
    print(f"contrast inversion, 300 x 256^2:        {t:.3f} s")

    img = rng.standard_normal(size=(4096, 4096), dtype=np.float32)
    t = best_of(args.repeat, lambda: img, lambda a: remove_dust(a, 3.5))
    print(f"dust removal, 4096^2:                   {t:.3f} s (goal < 1 s)")

    coords = rng.uniform(200, 3900, size=(300, 2))
    params = ExtractionParams(box_size=256, dust_removal=True, invert=True, normalize="Ramp",
                              bg_radius=128)
    t = best_of(args.repeat, img.copy,
                lambda a: stream_micrograph(a, coords, params, consume_image=True,
                                             sink=lambda block: None))
    print(f"extract_micrograph, 4096^2, 300 x 256^2: {t:.3f} s (dust, invert, Ramp)")

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(200):
            p = Path(tmp) / f"m{i:03d}.mrc"
            write_mrc(p, np.zeros((16, 16), np.float32), 1.0)
            paths.append(p)
        t = best_of(args.repeat, lambda: paths,
                    lambda ps: [micrograph_info(p) for p in ps])
        print(f"MRC header read (micrograph_info):      {1000 * t / len(paths):.3f} ms per file "
              "(goal < 10 ms)")

        counter = iter(range(10 ** 6))
        t = best_of(args.repeat, lambda: Path(tmp) / f"synth{next(counter)}",
                    lambda root: make_dataset(root))
        print(f"default synthetic dataset:              {t:.3f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
