"""Record every output of a fixed set of CLI runs, to show that a refactoring changed none of them.

    python benchmarks/record_outputs.py record BEFORE.json     # on the old code
    python benchmarks/record_outputs.py record AFTER.json      # on the new code
    python benchmarks/record_outputs.py compare BEFORE.json AFTER.json

Each run is the installed ``pairextract`` CLI in a fresh process on synthetic data made by the
demo (4 micrograph pairs of 1024², 40 particles each). For every step the manifest holds the
exit status, stdout and stderr (the work folder's path and timings masked) and the SHA-256 of
every file the step wrote. ``record`` runs the whole set twice and marks the files whose bytes
differ between the two passes (timings, nonces) as volatile: ``compare`` then checks only that
they exist. Everything else must be byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Timings, rates, sizes and dates in messages, masked before comparing.
_VOLATILE_TEXT = [
    (re.compile(r"\d+(\.\d+)?\s*(s|ms|min|cpu-s|particles/s|pairs/s|/s|it/s|MiB|GiB|KiB|B)\b"),
     "<N><unit>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?"), "<date>"),
    (re.compile(r"\d\d:\d\d(:\d\d)?"), "<time>"),
    (re.compile(r"tcp://[\d.]+:\d+"), "tcp://<addr>"),
    (re.compile(r"https?://[\w.:/-]+"), "<url>"),
    (re.compile(r"\r"), "\n"),
]


_MARK = ".record_outputs"
_BAR = re.compile(r"^\[[#.]*\] (\d+)/(\d+) ")


def _mask(text: str, work: Path) -> str:
    text = text.replace(str(work), "<W>")
    for pattern, repl in _VOLATILE_TEXT:
        text = pattern.sub(repl, text)
    return _final_bars(text)


def _final_bars(text: str) -> str:
    """Progress bars redraw at times that vary: keep their final state only."""
    return "\n".join(line for line in text.splitlines()
                     if not (m := _BAR.match(line)) or m.group(1) == m.group(2))


def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != _MARK:
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _relion_alignment(export: Path, dest: Path) -> None:
    """A 2-D alignment of the exported untilted particles: known origins, as Class2D writes."""
    import starfile

    star = starfile.read(export / "untilted" / "particles.star", always_dict=True)
    parts = star["particles"].copy()
    n = len(parts)
    parts["rlnOriginXAngst"] = [((k * 7) % 9 - 4) * 0.5 for k in range(n)]
    parts["rlnOriginYAngst"] = [((k * 5) % 7 - 3) * 0.5 for k in range(n)]
    parts["rlnAnglePsi"] = [float((k * 37) % 360) for k in range(n)]
    star["particles"] = parts
    dest.parent.mkdir(parents=True, exist_ok=True)
    starfile.write(star, dest)


def _steps() -> list[tuple[str, list[str]]]:
    ctf = ["--ctf-untilted", "demo/data/micrographs_ctf.star",
           "--ctf-tilted", "demo/data/micrographs_ctf.star"]
    table = "demo/data/pairs.csv"
    common = ["--no-progress", "--workers", "2"]
    return [
        ("demo", ["demo", "demo", "--workers", "2"]),
        ("info_demo", ["info", "demo/extracted"]),
        ("check_json", ["check", table, "--box", "64", "--phase-flip", *ctf, "--json"]),
        ("check_text", ["check", table, "--box", "64", "--phase-flip", *ctf]),
        ("ds16_flip_ramp", ["extract", table, "--out", "ds16", "--box", "40",
                            "--downsample", "1.6", "--phase-flip", "--norm", "Ramp", *ctf,
                            *common]),
        ("float16", ["extract", table, "--out", "f16", "--box", "64", "--invert",
                     "--float16", "--norm", "NewXmipp", *common]),
        ("oldxmipp_fill", ["extract", table, "--out", "old", "--box", "96", "--fill-borders",
                           "--norm", "OldXmipp", "--bg-radius", "30", "--no-dust", *common]),
        ("tilt_geometry", ["extract", table, "--out", "tiltgeo", "--box", "64",
                           "--phase-flip", "--tilt-defocus", "geometry", *ctf, *common]),
        ("tilt_ctf", ["extract", table, "--out", "tiltctf", "--box", "64",
                      "--phase-flip", "--tilt-defocus", "ctf", "--tilt-sign", "-1", *ctf,
                      *common]),
        ("export_relion", ["export", "demo/extracted", "--to", "relion", "rel"]),
        ("export_xmipp", ["export", "demo/extracted", "--to", "xmipp", "xmp"]),
        ("_alignment", []),
        ("recenter", ["extract", table, "--out", "rec", "--box", "64", "--invert",
                      "--recenter", "rel/Class2D/job001/run_it025_data.star", *common]),
        ("_hide_mic", []),
        ("resume_first", ["extract", table, "--out", "res", "--box", "64", "--invert",
                          *common]),
        ("_restore_mic", []),
        ("resume_second", ["extract", table, "--out", "res", "--box", "64", "--invert",
                           *common]),
        ("resume_again", ["extract", table, "--out", "res", "--box", "64", "--invert",
                          *common]),
        ("info_resumed", ["info", "res"]),
        ("check_output_json", ["check", "res", "--json"]),
        ("bad_bg_radius", ["extract", table, "--out", "bad", "--box", "64", "--bg-radius",
                           "40", *common]),
        ("out_is_input", ["extract", table, "--out", "demo/data", "--box", "64", *common]),
        ("montage", ["montage", "demo/extracted", "--n", "6", "--out", "m.png"]),
        ("api_dataset", []),
    ]


_API = """
import sys, pairextract as pe
ds = pe.open_pairs(sys.argv[1])
print(ds)
for k in sorted(ds.attrs): print(k, '=', ds.attrs[k])
for v in ds.variables: print(v, dict(sorted(ds[v].attrs.items())))
print(pe.read_drops(sys.argv[1]).to_string())
"""


def _run_once(work: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONHASHSEED="0", COLUMNS="100", NO_COLOR="1")
    result: dict[str, Any] = {}
    before: dict[str, str] = {}
    for name, argv in _steps():
        hidden = work / "demo/data/mics/t002.mrc"
        if name == "_alignment":
            _relion_alignment(work / "rel", work / "rel/Class2D/job001/run_it025_data.star")
            before = _hashes(work)
            continue
        if name == "_hide_mic":
            hidden.rename(hidden.with_suffix(".hidden"))
            before = _hashes(work)
            continue
        if name == "_restore_mic":
            hidden.with_suffix(".hidden").rename(hidden)
            before = _hashes(work)
            continue
        if name == "api_dataset":
            cmd = [sys.executable, "-c", _API, "demo/extracted"]
        else:
            cmd = [sys.executable, "-m", "pairextract", *argv]
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        after = _hashes(work)
        written = {k: v for k, v in after.items() if before.get(k) != v}
        result[name] = {"argv": argv, "rc": p.returncode, "stdout": _mask(p.stdout, work),
                        "stderr": _mask(p.stderr, work), "files": written}
        print(f"{name:20s} rc={p.returncode} files={len(written)}", flush=True)
        before = after
    return result


def record(path: Path) -> None:
    # One fixed folder, so that paths written into the outputs are the same in every pass.
    work = Path(tempfile.gettempdir()) / "pairextract-record"
    passes = []
    for _ in range(2):
        if work.exists():
            if not (work / _MARK).exists():
                raise SystemExit(f"{work} exists and was not made by this script")
            shutil.rmtree(work)
        work.mkdir()
        (work / _MARK).touch()
        passes.append(_run_once(work))
    shutil.rmtree(work)
    first, second = passes
    for name, step in first.items():
        other = second[name]["files"]
        step["volatile"] = sorted(k for k, v in step["files"].items() if other.get(k) != v)
    path.write_text(json.dumps(first, indent=1, sort_keys=True))
    print(f"recorded {len(first)} steps into {path}")


def _names(files: dict[str, str]) -> list[str]:
    """File names with the per-process part of journal names masked (kept as a count)."""
    return sorted(re.sub(r"journal-[^/]+\.part$", "journal-<id>.part", f) for f in files)


def compare(a_path: Path, b_path: Path) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    problems = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"{name}: only in one manifest")
            continue
        sa, sb = a[name], b[name]
        for key in ("rc", "stdout", "stderr"):
            if _final_bars(str(sa[key])) != _final_bars(str(sb[key])):
                problems.append(f"{name}: {key} differs:\n--- before\n{sa[key]}\n--- after\n"
                                f"{sb[key]}")
        volatile = set(sa["volatile"]) | set(sb["volatile"])
        names_a, names_b = _names(sa["files"]), _names(sb["files"])
        if names_a != names_b:
            problems.append(f"{name}: files differ: only before "
                            f"{sorted(set(names_a) - set(names_b))}, only after "
                            f"{sorted(set(names_b) - set(names_a))}")
        for f in sorted(set(sa["files"]) & set(sb["files"]) - volatile):
            if sa["files"][f] != sb["files"][f]:
                problems.append(f"{name}: {f} bytes differ")
    n_files = sum(len(s["files"]) for s in a.values())
    n_volatile = sum(len(s["volatile"]) for s in a.values())
    print(f"{len(a)} steps, {n_files} files ({n_volatile} volatile, compared by presence)")
    for p in problems:
        print(p)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("manifest", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.manifest)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
