"""What a run is about to do, said once as it starts: the start banner and the record's lines.

The banner (printed before the progress bar) and the run's ``note.txt``
(:mod:`pairextract.store.record`) say the same: the inputs counted, the parameters, the
cluster and its workers, the dashboard, where the record and the worker logs are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pairextract.core.inputs import TiltPairInputs
from pairextract.core.params import ExtractionParams
from pairextract.store import LOGS
from pairextract.store.record import NOTE, RUN_LOG

__all__ = ["about_run", "banner"]


def _cluster(client: Any) -> tuple[str, str | None]:
    """The cluster in words (kind, workers, threads) and its dashboard link (None if none)."""
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    except Exception:  # noqa: BLE001 - a client that cannot say: the run still goes on
        return f"{type(client).__name__}", None
    cluster = getattr(client, "cluster", None)
    kind = (type(cluster).__name__ if cluster is not None
            else f"scheduler at {client.scheduler.address}")
    text = f"{kind}, {len(workers)} worker(s), {threads} thread(s)"
    spec = getattr(cluster, "scheduler_spec", None)
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (bokeh missing, or none configured)
        link = None
    if isinstance(spec, dict) and spec.get("options", {}).get("dashboard") is False:
        link = None  # the scheduler's plain HTTP routes, not a dashboard
    return text, link or None


def about_run(inputs: TiltPairInputs, out: Path, client: Any, n_jobs: int, n_done: int,
              n_failed: int) -> list[tuple[str, str]]:
    """``(label, text)`` lines of what this run starts with (banner and record)."""
    n_ctf = len(inputs.ctfs) if getattr(inputs, "ctfs", None) is not None else 0
    lines = [
        ("input", str(inputs.source or "(in memory)")),
        ("pairs", f"{len(inputs.coordinate_pairs)} coordinate pair(s) on "
                  f"{len(inputs.micrograph_pairs)} micrograph pair(s), {n_ctf} CTF(s)"),
        ("micrographs", f"{n_jobs - n_done - n_failed} to extract, {n_done} already done"
                        + (f", {n_failed} unreadable" if n_failed else "")),
    ]
    cluster, link = _cluster(client)
    lines.append(("cluster", cluster))
    lines.append(("dashboard", link or "none (the command line's --dashboard opens Dask's "
                                       "dashboard; it needs bokeh>=3.1)"))
    lines.append(("output", str(out)))
    record = f"{out / NOTE}, {out / RUN_LOG}"
    if (out / LOGS).is_dir():
        record += f"; worker logs in {out / LOGS}"
    lines.append(("record", record))
    return lines


def banner(about: list[tuple[str, str]], params: ExtractionParams) -> str:
    """The start banner: ``pairextract extract`` and the lines of :func:`about_run`."""
    shown = ", ".join(f"{k}={v}" for k, v in params.to_dict().items())
    lines = ["pairextract extract", f"  {'parameters:':<13}{shown}"]
    lines += [f"  {label + ':':<13}{text}" for label, text in about]
    return "\n".join(lines)
