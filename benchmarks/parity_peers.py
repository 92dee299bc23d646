"""Bit-for-bit evidence: pairextract against the real Xmipp programs, pixel by pixel.

Generates synthetic tilt pairs (``pairextract.testing.synth``), runs Xmipp's programs in the
protocol's order on each micrograph (``peers.py``: dust, flip, scissor, normalize; Fourier
downsampling first where asked) and ``pairextract extract`` with the same options, then prints,
per configuration, the particles compared, how many pixels differ and the largest difference in
float32 ulps (units in the last place of Xmipp's value). Usage::

    python3 benchmarks/parity_peers.py --xmipp-bin /tmp/peers/xmipp/build
    python3 benchmarks/parity_peers.py --xmipp-bin /tmp/peers/xmipp/build --size 4096 --only flip

Exit status 1 when any configuration differs (or a program failed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/ is not a package)

# name: (downsampling factor, normalization, phase flip)
CONFIGS: dict[str, tuple[int, str, bool]] = {
    "ramp": (1, "Ramp", False),
    "flip": (1, "Ramp", True),
    "newxmipp": (1, "NewXmipp", False),
    "oldxmipp": (1, "OldXmipp", False),
    "down2": (2, "Ramp", False),
    "down2-flip": (2, "Ramp", True),
}


def _xmipp(bindir: str, ds: object, work: Path, box: int, radius: int, down: int, norm: str,
           flip: bool) -> dict[str, Path]:
    """Run the protocol's chain on every micrograph; return the stack of each (relative name)."""
    from pairextract.io.xmipp import write_ctfparam, write_pos

    table = __import__("pandas").read_csv(ds.pair_table)  # type: ignore[attr-defined]
    b = Path(bindir)
    q = shlex.quote
    stacks, chains = {}, []
    for view in ("u", "t"):
        for mic, rows in table.groupby(f"micrograph_{view}", sort=False):
            base = Path(mic).stem
            # reference 2: the .pos holds int(x * boxScale), boxScale = 1 / downsampling
            x = (rows[f"x_{view}"].to_numpy(np.float64) * (1.0 / down)).astype(np.int64)
            y = (rows[f"y_{view}"].to_numpy(np.float64) * (1.0 / down)).astype(np.int64)
            pos = work / f"{base}.pos"
            write_pos(pos, x, y)
            src = ds.root / mic  # type: ignore[attr-defined]
            steps = []
            if down != 1:
                small = work / f"{base}_downsampled.xmp"
                steps.append(f"{q(str(b / 'xmipp_transform_downsample'))} -i {q(str(src))}"
                             f" -o {q(str(small))} --step {float(down):f} --method fourier")
                src = small
            ctf = None
            if flip:
                ctf = work / f"{base}.ctfParam"
                write_ctfparam(ctf, ds.ctfs[mic])  # type: ignore[attr-defined]
            chain = peers.xmipp_chain(bindir, src, pos, work, box, radius, ctf,
                                      sampling=ds.pixel_size * down,  # type: ignore[attr-defined]
                                      norm=norm)
            chains.append(" && ".join(steps + [chain]))
            stacks[str(mic)] = work / f"{base}.stk"
    for chain in chains:
        subprocess.run(["bash", "-c", chain], check=True, capture_output=True)
    return stacks


def _pairextract(ds: object, out: Path, box: int, radius: int, down: int, norm: str,
                 flip: bool) -> None:
    cmd = [sys.executable, "-m", "pairextract", "extract", str(ds.pair_table),  # type: ignore
           "--out", str(out), "--box", str(box), "--invert", "--norm", norm,
           "--bg-radius", str(radius), "--downsample", str(down), "--workers", "2",
           "--no-progress"]
    if flip:
        cmd += ["--phase-flip", "--ctf-untilted", str(ds.ctf_star),  # type: ignore
                "--ctf-tilted", str(ds.ctf_star)]  # type: ignore
    subprocess.run(cmd, check=True, capture_output=True, cwd=ds.root)  # type: ignore


def _ulps(mine: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|mine - ref| in float32 ulps of ref."""
    spacing = np.spacing(np.abs(ref).astype(np.float32))
    return np.abs(mine.astype(np.float64) - ref.astype(np.float64)) / spacing.astype(np.float64)


def compare(ds: object, out: Path, stacks: dict[str, Path]) -> tuple[int, int, int, float]:
    """Particles compared, pixels compared, pixels that differ, largest difference (ulps)."""
    import pandas as pd
    import zarr

    table = pd.read_csv(ds.pair_table)  # type: ignore[attr-defined]
    n_part = n_pix = n_diff = 0
    worst = 0.0
    for view, name in (("u", "untilted"), ("t", "tilted")):
        parts = pd.read_parquet(out / f"{name}.parquet").set_index("pair_id")
        images = zarr.open_array(str(out / "pairs.zarr" / name / "images"), mode="r")
        for mic, rows in table.groupby(f"micrograph_{view}", sort=False):
            ref = peers.read_spider_stack(stacks[str(mic)])
            for k, pid in enumerate(rows["pair_id"]):
                if pid not in parts.index or parts.loc[pid, "status"] != "ok":
                    continue  # a box off the micrograph: Xmipp writes a blank, disabled
                mine = np.asarray(images[int(parts.loc[pid, "slot"])])
                u = _ulps(mine, ref[k])
                n_part += 1
                n_pix += u.size
                n_diff += int(np.count_nonzero(mine != ref[k]))
                worst = max(worst, float(u.max()))
    return n_part, n_pix, n_diff, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xmipp-bin", required=True, help="folder of Xmipp's programs")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--size", type=int, default=2048, help="micrograph side (pixels)")
    ap.add_argument("--pairs", type=int, default=2, help="micrograph pairs")
    ap.add_argument("--particles", type=int, default=60, help="particles per micrograph pair")
    ap.add_argument("--box", type=int, default=128, help="box before downsampling")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    from pairextract.testing.synth import make_dataset

    bad = False
    with tempfile.TemporaryDirectory(prefix="parity-peers-") as tmp:
        ds = make_dataset(Path(tmp) / "data", n_mic_pairs=args.pairs,
                          shape=(args.size, args.size), particles_per_pair=args.particles,
                          box=args.box, pixel_size=1.5, seed=args.seed)
        print(f"{args.pairs} micrograph pairs of {args.size}^2, {args.particles} particles per"
              f" pair, box {args.box}, seed {args.seed}", flush=True)
        for name in args.only:
            down, norm, flip = CONFIGS[name]
            box = args.box // down
            radius = box // 2
            work = Path(tmp) / name
            work.mkdir()
            try:
                stacks = _xmipp(args.xmipp_bin, ds, work, box, radius, down, norm, flip)
                _pairextract(ds, work / "out", box, radius, down, norm, flip)
            except subprocess.CalledProcessError as e:
                print(f"  {name}: FAILED: {e.cmd!r}\n{e.stderr.decode()[-2000:]}", flush=True)
                bad = True
                continue
            n_part, n_pix, n_diff, worst = compare(ds, work / "out", stacks)
            bad |= n_diff > 0 or n_part == 0
            print(f"  {name:11s} (box {box}, {norm}{', flip' if flip else ''}"
                  f"{f', downsample {down}' if down > 1 else ''}): {n_part} particles,"
                  f" {n_diff} of {n_pix} pixels differ, max {worst:.0f} ulp", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
