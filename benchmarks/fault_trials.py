"""Try every fault of the catalogue as a user would: one ``pairextract`` process per fault.

    PYTHONPATH=. python3 benchmarks/fault_trials.py [--only D1,E4] > trials.md

Each fault (``tests/_faults.py``) is set up in a fresh folder and run as a separate process
(``python -m pairextract ...``) against one standing LocalCluster (its address passed with
``--scheduler``). Printed: one Markdown row per fault with the exit status and the message seen,
then the totals the document quotes: files of the user changed (data lost), Python tracebacks
printed, faults whose exit status, message or output check differed from what is expected.
Dask's own worker log lines ("Compute Failed", with Dask's summary of the worker-side
traceback) are counted separately, as they are not pairextract's output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _faults import FAULTS, Fault, snapshot  # noqa: E402


def _message(text: str) -> str:
    """What happened, as the user sees it: pairextract's error (with the line it introduces),
    else the failed micrographs and the warnings of the summary."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked: list[str] = []
    for i, ln in enumerate(lines):
        if ln.startswith("pairextract ") or (ln.startswith("error:") and not picked):
            picked.append(ln)
            if ln.endswith(":") and i + 1 < len(lines):
                picked.append(lines[i + 1])
            break
    if not picked:
        for i, ln in enumerate(lines):
            if ln.startswith("micrographs:") and " 0 failed" not in ln and i + 1 < len(lines):
                picked.append(lines[i + 1])
        picked += [ln for ln in lines if ln.startswith("warning:")][:1]
        picked = picked or [ln for ln in lines if ln.startswith("pairs kept")][:1]
    out = " ".join(picked).replace("|", "\\|")
    return out if len(out) <= 240 else out[:237] + "..."


def trial(fault: Fault, scheduler: str, root: Path) -> dict[str, object]:
    ctx: dict[str, object] = {"scheduler": scheduler}
    argv = fault.setup(root, ctx)  # type: ignore[arg-type]
    before = snapshot(root, fault.protect)
    try:
        proc = subprocess.run([sys.executable, "-m", "pairextract", *argv], cwd=root,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        for undo in ctx.get("cleanup", []):  # type: ignore[attr-defined]
            undo()
    text = proc.stdout + proc.stderr
    lost = snapshot(root, fault.protect) != before
    problem = fault.check(root) if fault.check else None
    wrong = (proc.returncode != fault.rc or any(s not in text for s in fault.says)
             or problem is not None)
    return {"fault": fault, "argv": argv, "rc": proc.returncode, "message": _message(text),
            "traceback": "Traceback (most recent call last)" in text,
            "dask_log": "Compute Failed" in text, "lost": lost, "wrong": wrong,
            "problem": problem}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated fault ids")
    args = parser.parse_args()
    from distributed import LocalCluster

    chosen = [f for f in FAULTS if not args.only or f.id in args.only.split(",")]
    rows, results = [], []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            tempfile.TemporaryDirectory() as tmp:
        for fault in chosen:
            root = Path(tmp) / fault.id
            root.mkdir()
            r = trial(fault, cluster.scheduler_address, root)
            results.append(r)
            how = " ".join(str(a) for a in r["argv"] if not str(a).startswith("tcp://"))  # type: ignore[attr-defined]
            how = how.replace(str(root) + "/", "").replace(str(root), ".")
            how = how.replace(" --scheduler", "").replace(" --no-progress", "")
            message = str(r["message"]).replace(str(root) + "/", "").replace(str(root), ".")
            seen = f"exit {r['rc']}: {message}"
            if r["wrong"]:
                seen += f" **(expected exit {fault.rc}; {r['problem'] or 'message differs'})**"
            rows.append(f"| {fault.id} | {fault.title} | `pairextract {how}` | {seen} | "
                        f"`test_faults::test_fault[{fault.id}]` |")
            print(rows[-1], flush=True)
    print()
    print(f"faults tried: {len(results)}; data lost: {sum(bool(r['lost']) for r in results)}; "
          f"Python tracebacks: {sum(bool(r['traceback']) for r in results)}; "
          f"wrong exit/message/output: {sum(bool(r['wrong']) for r in results)}; "
          f"Dask 'Compute Failed' log lines: {sum(bool(r['dask_log']) for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
