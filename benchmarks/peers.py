"""The peers pairextract is measured against: RELION's ``relion_preprocess`` and Xmipp's programs.

Neither is part of pairextract; ``shared/peers/build-peers.sh`` builds both from their public
sources. This module writes the inputs each peer reads for a benchmark workload, builds the
command lines as the peers are run in practice, and counts what each wrote, so that a benchmark
fails loudly when a peer extracted fewer particles than asked (RELION exits 0 when it finds no
coordinate file).

RELION 5: a RELION 3.1+ micrographs STAR (optics table with voltage, Cs, amplitude contrast and
``rlnMicrographPixelSize``; the CTF columns that ``--phase_flip`` reads) and a coordinate list
(``data_coordinate_files``: ``rlnMicrographName`` -> ``rlnMicrographCoordinates``), names relative
to the workload folder, which is RELION's working folder. Dust at 3.5 sigma both ways, contrast
inversion, ``--norm`` with ``--bg_radius``; ``--phase_flip`` flips each particle's box.

Xmipp: the protocol's chain per micrograph (reference 1.5): ``xmipp_transform_filter
--bad_pixels outliers`` -> ``xmipp_ctf_phase_flip`` with a ``.ctfParam`` per micrograph ->
``xmipp_micrograph_scissor --invert`` -> ``xmipp_transform_normalize --method Ramp --background
circle R``; intermediate files are Spider, every micrograph's chain started at once, as the
protocol's parallel steps run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

PIXEL_SIZE = 1.5
DUST_SIGMA = 3.5


class PeerCountError(RuntimeError):
    """A peer wrote fewer (or more) particles than the workload asks for."""


def workload_ctf(k: int) -> object:
    """The CTF of the ``k``-th micrograph (sorted by name) of a workload."""
    from pairextract.core.ctf import CTF

    return CTF(defocus_u=15000.0 + 37.0 * k, defocus_v=14200.0 + 23.0 * k, defocus_angle=30.0,
               voltage=300.0, cs=2.7, amplitude_contrast=0.1)


def micrographs(folder: Path) -> list[Path]:
    """The workload's micrographs, sorted by name (the order of their CTFs)."""
    return sorted((folder / "mics").glob("*.mrc"))


def write_relion_inputs(folder: Path) -> tuple[Path, Path]:
    """Write (once) RELION's micrographs STAR and coordinate list; return both paths."""
    import pandas as pd

    from pairextract.io.relion import write_relion_ctf
    from pairextract.io.star import write_star

    mics_star, coord_list = folder / "relion_micrographs.star", folder / "relion_coords.star"
    if not coord_list.exists():
        mics = micrographs(folder)
        names = [str(m.relative_to(folder)) for m in mics]
        write_relion_ctf(mics_star, names, [workload_ctf(k) for k in range(len(mics))],
                         pixel_size=PIXEL_SIZE)
        coords = [f"coords_relion/{m.stem}_pick.star" for m in mics]
        tmp = coord_list.with_suffix(".tmp")
        write_star(tmp, {"coordinate_files": pd.DataFrame(
            {"rlnMicrographName": names, "rlnMicrographCoordinates": coords})})
        tmp.replace(coord_list)
    return mics_star, coord_list


def relion_cmd(binary: str, folder: Path, out: Path, box: int, radius: int, ranks: int,
               flip: bool) -> list[str]:
    """``relion_preprocess`` (``ranks`` > 1: ``mpirun -np ranks relion_preprocess_mpi``), to run
    with the workload folder as working folder."""
    mics_star, coord_list = write_relion_inputs(folder)
    cmd = [binary, "--i", mics_star.name, "--coord_list", coord_list.name,
           "--part_star", str(out / "particles.star"), "--part_dir", str(out) + "/",
           "--extract", "--extract_size", str(box), "--norm", "--bg_radius", str(radius),
           "--white_dust", str(DUST_SIGMA), "--black_dust", str(DUST_SIGMA), "--invert_contrast"]
    if flip:
        cmd.append("--phase_flip")
    if ranks > 1:
        mpi = binary if binary.endswith("_mpi") else binary + "_mpi"
        cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", mpi] + cmd[1:]
    return cmd


def write_ctfparams(folder: Path) -> Path:
    """Write (once) one Xmipp ``.ctfParam`` per micrograph, as Scipion does; return the folder."""
    from pairextract.io.xmipp import write_ctfparam

    where = folder / "ctf_xmipp"
    mics = micrographs(folder)
    if not (where / f"{mics[-1].stem}.ctfParam").exists():
        where.mkdir(exist_ok=True)
        for k, mic in enumerate(mics):
            write_ctfparam(where / f"{mic.stem}.ctfParam", workload_ctf(k))  # type: ignore[arg-type]
    return where


def xmipp_chain(bindir: str, mic: Path, pos: Path, work: Path, box: int, radius: int,
                ctfparam: Path | None, sampling: float = PIXEL_SIZE, norm: str = "Ramp") -> str:
    """The protocol's commands for one micrograph (a shell ``&&`` chain); writes
    ``work/<base>.stk`` and ``work/<base>.xmd``. ``sampling``: the pixel size after
    downsampling (the flip's); ``norm``: OldXmipp, NewXmipp or Ramp."""
    b = Path(bindir)
    base = pos.stem  # the micrograph's name: mic may be a downsampled copy
    last = work / f"{base}_noDust.xmp"
    q = shlex.quote
    steps = [f"{q(str(b / 'xmipp_transform_filter'))} -i {q(str(mic))} -o {q(str(last))}"
             f" --bad_pixels outliers {DUST_SIGMA:f}"]
    ctf = ""
    if ctfparam is not None:
        flipped = work / f"{base}_flipped.xmp"
        steps.append(f"{q(str(b / 'xmipp_ctf_phase_flip'))} -i {q(str(last))} -o {q(str(flipped))}"
                     f" --ctf {q(str(ctfparam))} --sampling {sampling:f}")
        last = flipped
        ctf = f" --ctfparam {q(str(ctfparam))}"
    stk = work / base
    steps.append(f"{q(str(b / 'xmipp_micrograph_scissor'))} -i {q(str(last))}"
                 f" --pos particles@{q(str(pos))} -o {q(str(stk))} --Xdim {box} --invert{ctf}")
    # reference 1.5: the background only for NewXmipp and Ramp
    background = "" if norm == "OldXmipp" else f" --background circle {radius}"
    steps.append(f"{q(str(b / 'xmipp_transform_normalize'))} -i {q(str(stk))}.stk"
                 f" --method {norm}{background}")
    return " && ".join(steps)


def xmipp_cmd(bindir: str, folder: Path, out: Path, box: int, radius: int, flip: bool,
              jobs: int = 0) -> list[str]:
    """Xmipp's programs on every micrograph of the workload: ``jobs`` chains at a time
    (0: all at once, as the protocol's parallel steps run them), in one shell that fails
    when any chain failed."""
    ctfdir = write_ctfparams(folder) if flip else None
    chains = [xmipp_chain(bindir, mic, folder / "coords_xmipp" / f"{mic.stem}.pos", out, box,
                          radius, ctfdir / f"{mic.stem}.ctfParam" if ctfdir else None)
              for mic in micrographs(folder)]
    script = ["fail=0"]
    limit = jobs if jobs > 0 else len(chains)
    for k, chain in enumerate(chains):
        script.append(f"( {chain} ) &")
        if (k + 1) % limit == 0:
            script.append("for p in $(jobs -p); do wait $p || fail=1; done")
    script.append("for p in $(jobs -p); do wait $p || fail=1; done")
    script.append("exit $fail")
    return ["bash", "-c", "\n".join(script)]


def read_spider_stack(path: Path) -> np.ndarray:
    """The images of a Spider stack (``.stk``) as ``(n, ny, nx)`` float32 (little-endian)."""
    raw = np.fromfile(path, dtype="<f4")
    nz, ny, nx = int(raw[0]), int(raw[1]), int(raw[11])
    labbyt, istack, maxim = int(raw[21]), int(raw[23]), int(raw[25])
    if istack <= 0 or nz != 1:
        raise ValueError(f"{path}: not a stack of 2-D images (istack {istack}, nz {nz})")
    head = labbyt // 4
    per = head + nx * ny
    if len(raw) != head + maxim * per:
        raise ValueError(f"{path}: {len(raw) * 4} bytes, not {maxim} images of {nx}x{ny}")
    return raw[head:].reshape(maxim, per)[:, head:].reshape(maxim, ny, nx)


def count_xmipp(out: Path) -> int:
    """Images in every Spider stack Xmipp's scissor wrote into ``out``."""
    total = 0
    for stk in out.glob("*.stk"):
        head = np.fromfile(stk, dtype="<f4", count=64)
        total += int(head[25])
    return total


def count_relion(out: Path) -> int:
    """Particles in every ``.mrcs`` RELION wrote under ``out`` (from the MRC headers)."""
    total = 0
    for mrcs in out.rglob("*.mrcs"):
        total += int(np.fromfile(mrcs, dtype="<i4", count=3)[2])
    return total


def count_pairextract(out: Path) -> int:
    """Particles pairextract extracted into ``out`` (its ``summary.json``)."""
    import json

    return int(json.loads((out / "summary.json").read_text())["particles_extracted"])


def check_count(label: str, got: int, expected: int) -> None:
    """Raise :class:`PeerCountError` unless a run extracted ``expected`` particles."""
    if got != expected:
        raise PeerCountError(f"{label} extracted {got} particles, not {expected}: its timing would"
                             " be meaningless (see its log)")
