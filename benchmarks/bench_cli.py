"""Cold command-line benchmark: workloads B1, B24, B8k, Bmany as users run them.

Each run is one ``pairextract extract`` process started from nothing (no cluster running,
micrographs in the page cache, a fresh output folder). Printed per workload and worker count:
wall time, CPU seconds of every process of the run (children included) and the peak resident
memory (VmHWM) of the largest single process, best of ``--repeat`` runs (and the median).

The workload generator (cached in ``--data``, outside the repository) also writes the inputs that
RELION (a 3.1+ micrographs STAR, a coordinate list, one coordinate STAR per micrograph) and Xmipp
(one ``.pos`` and ``.ctfParam`` per micrograph) read (see ``peers.py``); with
``--relion-bin``/``--xmipp-bin`` the same workloads, with ``--phase-flip`` too, are timed with
``relion_preprocess`` (1 process and ``mpirun -np 2``, ``--relion-ranks``) and with Xmipp's
programs run as the protocol runs them. Every run's particle count is checked (the benchmark
stops when a program extracted fewer than asked); the order of the programs rotates from one
repeat to the next, and each peer's time over pairextract's is printed (> 1: pairextract is
faster). Usage::

    python3 benchmarks/bench_cli.py --workload B1 B24 B8k Bmany --workers 1 2 --repeat 3
    python3 benchmarks/bench_cli.py --workload B1 --tree /work/main --tree .   # before/after
    python3 benchmarks/bench_cli.py --workload B1 B24 --workers 2 --phase-flip   # cost of the flip
    python3 benchmarks/bench_cli.py --workload B1 B24 --workers 2 --phase-flip \
        --relion-bin /tmp/peers/relion/build/bin/relion_preprocess \
        --xmipp-bin /tmp/peers/xmipp/build                                     # against the peers

``--tree DIR`` runs the CLI of the checkout DIR (``PYTHONPATH=DIR``); several trees are run
interleaved, which is the fair way to compare on a busy machine. ``--help-time`` also times
``pairextract --help`` and ``--version``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/ is not a package)

# name: (micrograph pairs, size, particles per micrograph, box, background radius)
WORKLOADS = {
    "B1": (4, 4096, 300, 256, 128),
    "B24": (24, 4096, 300, 256, 128),
    "B8k": (2, 8192, 600, 512, 256),
    "Bmany": (2000, 512, 10, 64, 32),
}


def make_workload(name: str, data: Path) -> Path:
    """Write (once) the micrographs, the pair table and the RELION and Xmipp inputs."""
    n_pairs, size, per_mic, box, _ = WORKLOADS[name]
    folder = data / name
    done = folder / "pairs.csv"
    if done.exists():
        return folder
    import pandas as pd

    from pairextract.io.mrc import write_mrc
    from pairextract.io.xmipp import write_pos

    for sub in ("mics", "coords_relion", "coords_xmipp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows, mic_rows = [], []
    for k in range(1, n_pairs + 1):
        xy = rng.integers(box // 2 + 1, size - box // 2 - 1, size=(per_mic, 2))
        # the tilted view: a foreshortened copy, so both boxes are inside
        xy_t = np.column_stack([xy[:, 0], (size / 2 + (xy[:, 1] - size / 2) * 0.8)]).astype(int)
        for view, pts in (("u", xy), ("t", xy_t)):
            mic = folder / "mics" / f"{view}{k:05d}.mrc"
            # Gaussian noise with a few dust pixels: what dust removal and Ramp see in practice
            img = rng.standard_normal((size, size), dtype=np.float32)
            hot = rng.integers(0, size, size=(max(5, size // 256), 2))
            img[hot[:, 1], hot[:, 0]] = 40.0
            write_mrc(mic, img, peers.PIXEL_SIZE)
            mic_rows.append(str(mic))
            coords = pd.DataFrame({"rlnCoordinateX": pts[:, 0].astype(float),
                                   "rlnCoordinateY": pts[:, 1].astype(float)})
            _write_star(folder / "coords_relion" / f"{mic.stem}_pick.star", "", coords)
            write_pos(folder / "coords_xmipp" / f"{mic.stem}.pos", pts[:, 0], pts[:, 1])
        for i in range(per_mic):
            rows.append(((k - 1) * per_mic + i + 1, str(folder / "mics" / f"u{k:05d}.mrc"),
                         xy[i, 0], xy[i, 1], str(folder / "mics" / f"t{k:05d}.mrc"),
                         xy_t[i, 0], xy_t[i, 1]))
    _write_star(folder / "micrographs.star", "micrographs",
                pd.DataFrame({"rlnMicrographName": mic_rows}))
    pd.DataFrame(rows, columns=["pair_id", "micrograph_u", "x_u", "y_u", "micrograph_t",
                                "x_t", "y_t"]).to_csv(folder / "pairs.tmp", index=False)
    os.replace(folder / "pairs.tmp", done)
    return folder


def make_ctf(folder: Path) -> Path:
    """Write (once) a RELION micrographs STAR with one CTF per micrograph (for --phase-flip)."""
    path = folder / "ctf.star"
    if not path.exists():
        from pairextract.io.relion import write_relion_ctf

        mics = [str(p) for p in peers.micrographs(folder)]
        tmp = folder / "ctf.star.tmp"
        write_relion_ctf(tmp, mics, [peers.workload_ctf(k) for k in range(len(mics))],
                         pixel_size=peers.PIXEL_SIZE)
        os.replace(tmp, path)
    return path


def _write_star(path: Path, block: str, df: object) -> None:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    lines = [f"data_{block}", "", "loop_"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(df.columns)]
    lines += [" ".join(str(v) for v in row) for row in df.itertuples(index=False)]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Measure:
    wall: float
    cpu: float
    peak_mib: float
    rc: int


def _own_cmdline() -> bytes:
    with open("/proc/self/cmdline", "rb") as f:
        return f.read()


_SELF = _own_cmdline()


def _proc_stats(pid: int) -> tuple[float, int] | None:
    """CPU seconds and VmHWM (KiB) of one live process, or None once it is gone.

    None too for a child caught between its fork and its exec: it is still a copy of this
    process, whose memory is not the command's.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read() == _SELF:
                return None
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return cpu, hwm
    except (OSError, IndexError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def run_measured(cmd: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> Measure:
    """Run ``cmd``; wall, CPU of it and all its descendants, largest VmHWM of any of them.

    Descendants are sampled every 20 ms (their last CPU reading is kept); the process's own
    rusage from wait4 covers every child it reaped, so the larger of the two sums is reported.
    The peak is the sampled VmHWM only: wait4's ``ru_maxrss`` also counts the memory of this
    (benchmark) process at the fork that started the command (Linux records the high-water
    mark of the address space an exec replaces), and so does a sample taken between that
    fork and the exec; both inflated earlier figures.
    """
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        # Started outside any checkout: ``python -c`` puts the working folder first on
        # sys.path, so a run from a repository would import that repository's pairextract
        # instead of the --tree given.
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                cwd=cwd or log.parent)
        seen: dict[int, tuple[float, int]] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for pid in _descendants(proc.pid):
                    s = _proc_stats(pid)
                    if s is not None:
                        seen[pid] = (s[0], max(s[1], seen.get(pid, (0.0, 0))[1]))
                stop.wait(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = max(ru.ru_utime + ru.ru_stime, sum(c for c, _ in seen.values()))
    peak = max([0] + [h for _, h in seen.values()]) / 1024
    return Measure(wall, cpu, peak, proc.returncode)


def _cli(tree: Path | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree.resolve())
        # What the console script runs, from the tree (an installed script may name an
        # older entry point)
        # (main() for checkouts older than entry())
        return [sys.executable, "-c", "import sys; from pairextract import cli; "
                "cli.entry() if hasattr(cli, 'entry') else sys.exit(cli.main())"], env
    # The console script next to this interpreter: what a user's `pairextract` runs (a
    # pyenv/conda shim in front of it would add its own start-up time to every figure).
    beside = Path(sys.executable).parent / "pairextract"
    exe = str(beside) if beside.exists() else shutil.which("pairextract")
    return ([exe] if exe else [sys.executable, "-m", "pairextract"]), env


def _warm_page_cache(folder: Path) -> None:
    for p in (folder / "mics").iterdir():
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def _report(label: str, ms: list[Measure]) -> None:
    ok = [m for m in ms if m.rc == 0]
    if not ok:
        print(f"  {label}: FAILED (exit {[m.rc for m in ms]})", flush=True)
        return
    best = min(ok, key=lambda m: m.wall)
    median = statistics.median(m.wall for m in ok)
    print(f"  {label}: wall {best.wall:6.2f} s (median {median:.2f}),"
          f" cpu {min(m.cpu for m in ok):6.1f} s, peak {max(m.peak_mib for m in ok):5.0f} MiB"
          f"  [walls {', '.join(f'{m.wall:.2f}' for m in ms)}]", flush=True)


def _report_store(out: Path, n_mics: int) -> None:
    """Files in the store per micrograph pair, and the cost of reading one particle."""
    import zarr

    files = sum(1 for p in (out / "pairs.zarr").rglob("*") if p.is_file())
    # shard files: "c.<i>.0.0" (store layout 3) or "c/<i>/0/0" (layout 2, older trees)
    shards = sum(1 for v in ("untilted", "tilted")
                 for p in (out / "pairs.zarr" / v / "images").rglob("*") if p.is_file()
                 and (p.name.startswith("c.") or p.match("c/*/*/*")))
    work = sum(1 for p in (out / "_work").rglob("*") if p.is_file())
    arr = zarr.open_array(str(out / "pairs.zarr" / "untilted" / "images"), mode="r")
    rng = np.random.default_rng(0)
    slots = rng.integers(0, arr.shape[0], size=20)
    t = time.perf_counter()
    for s in slots:
        arr[int(s)]
    one = (time.perf_counter() - t) / len(slots)
    pairs = n_mics // 2
    print(f"  store: {files} files in pairs.zarr ({shards} particle files: "
          f"{shards / pairs:.2f} per micrograph pair) + {work} in _work for {pairs} micrograph"
          f" pairs ({(files + work) / pairs:.2f} files per pair in all); one particle read in "
          f"{one * 1e3:.2f} ms (zarr, random slot)", flush=True)


def _extract_cmd(base: list[str], folder: Path, out: Path, name: str, workers: int,
                 extra: list[str]) -> list[str]:
    _, _, _, box, radius = WORKLOADS[name]
    return base + ["extract", str(folder / "pairs.csv"), "--out", str(out), "--box", str(box),
                   "--invert", "--norm", "Ramp", "--bg-radius", str(radius),
                   "--workers", str(workers), "--no-progress"] + extra


@dataclass
class Runner:
    """One kind of run of a workload: its label, command, environment, working folder, and
    how to count the particles it wrote into the scratch folder."""

    label: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path | None
    count: Callable[[Path], int]
    out: Path
    peer: bool = False


def _runners(args: argparse.Namespace, name: str, folder: Path, scratch: Path,
             trees: list[Path | None]) -> list[Runner]:
    _, _, _, box, radius = WORKLOADS[name]
    extra = ["--float16"] if args.float16 else []
    if args.phase_flip:
        ctf = str(make_ctf(folder))
        extra += ["--phase-flip", "--ctf-untilted", ctf, "--ctf-tilted", ctf]
    out = scratch / "out"
    runs = []
    variants = args.env or [""]
    for workers, mode, tree, var in itertools.product(args.workers, args.local, trees,
                                                      variants):
        base, env = _cli(tree)
        if var:
            key, _, value = var.partition("=")
            env[key] = value
        local = [] if mode == "default" else [f"--{mode}"]
        label = (f"pairextract {workers} worker(s)" + (f" --{mode}" if local else "")
                 + (f" [{tree}]" if tree else "") + (f" {var}" if var else ""))
        runs.append(Runner(label, _extract_cmd(base, folder, out, name, workers, extra + local),
                           env, None, peers.count_pairextract, out))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if args.relion_bin:
        for ranks in args.relion_ranks:
            label = "RELION 1 process" if ranks == 1 else f"RELION MPI {ranks} ranks"
            runs.append(Runner(label, peers.relion_cmd(args.relion_bin, folder, scratch, box,
                                                       radius, ranks, args.phase_flip),
                               env, folder, peers.count_relion, scratch, peer=True))
    if args.xmipp_bin:
        runs.append(Runner("Xmipp programs", peers.xmipp_cmd(
            args.xmipp_bin, folder, scratch, box, radius, args.phase_flip, args.xmipp_jobs),
            env, None, peers.count_xmipp, scratch, peer=True))
    return runs


def _ratios(results: dict[str, list[Measure]], runs: list[Runner]) -> None:
    """Each peer's time over each pairextract run's (best and median wall, least CPU): > 1
    means pairextract is faster."""
    ok = {k: [m.wall for m in ms if m.rc == 0] for k, ms in results.items()}
    for mine in (r for r in runs if not r.peer):
        for peer in (r for r in runs if r.peer):
            a, b = ok.get(mine.label), ok.get(peer.label)
            if a and b:
                pk = max(m.peak_mib for m in results[mine.label])
                pp = max(m.peak_mib for m in results[peer.label])
                # CPU seconds too: on a loaded machine they move less than wall times
                ca = min(m.cpu for m in results[mine.label] if m.rc == 0)
                cb = min(m.cpu for m in results[peer.label] if m.rc == 0)
                print(f"  ratio {peer.label} / {mine.label}: {min(b) / min(a):.2f}x best,"
                      f" {statistics.median(b) / statistics.median(a):.2f}x median,"
                      f" {cb / ca:.2f}x cpu; peak {pk:.0f} vs {pp:.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", nargs="+", default=["B1"], choices=list(WORKLOADS))
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path("/tmp/pairextract-bench"),
                    help="where the generated inputs are cached (outside the repository)")
    ap.add_argument("--tree", type=Path, action="append",
                    help="checkout whose CLI to run (PYTHONPATH); repeat to interleave trees")
    ap.add_argument("--local", nargs="+", default=["default"],
                    choices=["default", "threads", "processes"],
                    help="local workers as the CLI's default, --threads or --processes; "
                    "several are run interleaved")
    ap.add_argument("--env", action="append", metavar="NAME=VALUE",
                    help="run pairextract with this variable set; repeat to interleave "
                    "variants (e.g. --env PAIREXTRACT_DIRECT_IO=1 --env PAIREXTRACT_DIRECT_IO=0)")
    ap.add_argument("--float16", action="store_true")
    ap.add_argument("--phase-flip", action="store_true",
                    help="phase flip too, the peers as well (the CTFs are generated once)")
    ap.add_argument("--relion-bin", help="relion_preprocess to time on the same inputs "
                    "(relion_preprocess_mpi is looked for beside it)")
    ap.add_argument("--relion-ranks", nargs="+", type=int, default=[1, 2],
                    help="RELION runs: 1 = one process, N > 1 = mpirun -np N")
    ap.add_argument("--xmipp-bin", help="folder of Xmipp's programs to time on the same inputs")
    ap.add_argument("--xmipp-jobs", type=int, default=0,
                    help="micrographs Xmipp processes at a time (0: all at once, as the "
                    "protocol's parallel steps run them)")
    ap.add_argument("--help-time", action="store_true", help="time --help and --version too")
    ap.add_argument("--keep-out", action="store_true", help="keep the last output folders")
    args = ap.parse_args()
    trees: list[Path | None] = list(args.tree or [None])
    args.data.mkdir(parents=True, exist_ok=True)
    scratch = args.data / "runs"

    if args.help_time:
        for tree in trees:
            base, env = _cli(tree)
            for flag in ("--help", "--version"):
                walls = []
                for _ in range(max(args.repeat, 3)):
                    t = time.perf_counter()
                    subprocess.run(base + [flag], env=env, capture_output=True, check=True,
                                   cwd=args.data)
                    walls.append(time.perf_counter() - t)
                print(f"pairextract {flag} [{tree or 'installed'}]: best {min(walls):.3f} s")

    failed = False
    for name in args.workload:
        t = time.perf_counter()
        folder = make_workload(name, args.data)
        n_pairs, size, per_mic, box, _ = WORKLOADS[name]
        expected = 2 * n_pairs * per_mic
        print(f"{name}{' + flip' if args.phase_flip else ''}: {2 * n_pairs} x {size}^2,"
              f" {expected} particles, box {box} (inputs ready in"
              f" {time.perf_counter() - t:.1f} s: {folder})", flush=True)
        _warm_page_cache(folder)
        runs = _runners(args, name, folder, scratch, trees)
        results: dict[str, list[Measure]] = {}
        for rep in range(args.repeat):
            # the order rotates from one repeat to the next: on a loaded machine no program
            # always runs first, or always after the same one
            for run in runs[rep % len(runs):] + runs[:rep % len(runs)]:
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                os.sync()  # dirty pages of the previous run would throttle this one
                log = args.data / f"{run.label.split()[0].lower()}.log"
                m = run_measured(run.cmd, run.env, log, run.cwd)
                results.setdefault(run.label, []).append(m)
                if m.rc == 0:
                    try:
                        peers.check_count(run.label, run.count(run.out), expected)
                    except (peers.PeerCountError, OSError, ValueError, KeyError) as e:
                        sys.exit(f"{name}: {e} ({log})")
                else:
                    failed = True
                    print(f"  {run.label} failed with exit {m.rc}: see {log}", flush=True)
        for label, ms in results.items():
            _report(label, ms)
        _ratios(results, runs)
        if (scratch / "out" / "pairs.zarr").exists():
            _report_store(scratch / "out", 2 * n_pairs)
        if not args.keep_out:
            shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        sys.exit("a run failed (see above)")


if __name__ == "__main__":
    main()
