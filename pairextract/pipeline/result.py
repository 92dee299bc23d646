"""What a run did: :class:`ExtractionResult` and its printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class ExtractionResult:
    """What a run did: counts, the drop table and where the output is."""

    out: Path
    pairs_in: int
    pairs_kept: int
    dropped: pd.DataFrame
    micrographs_extracted: int
    micrographs_reused: int
    micrographs_failed: dict[str, str]
    seconds: float
    particles_extracted: int
    warnings: list[str] = field(default_factory=list)
    #: Kept pairs that the geometry check flags as off the fitted tilt geometry.
    pairs_flagged: int = 0
    #: ``tilt_sign="auto"``: per micrograph, the sign read, its confidence and whether it was
    #: used (else the micrograph was flipped whole).
    tilt_signs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def drop_counts(self) -> dict[str, int]:
        """Dropped pairs by reason."""
        counts = self.dropped["reason"].value_counts().sort_index()
        return {str(k): int(v) for k, v in counts.items()}

    @property
    def particles_per_second(self) -> float:
        return self.particles_extracted / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """The run's summary as a JSON-ready dict (also written to ``summary.json``)."""
        return {
            "out": str(self.out),
            "pairs_in": self.pairs_in,
            "pairs_kept": self.pairs_kept,
            "pairs_flagged": self.pairs_flagged,
            "pairs_dropped": int(len(self.dropped)),
            "dropped_by_reason": self.drop_counts,
            "micrographs_extracted": self.micrographs_extracted,
            "micrographs_reused": self.micrographs_reused,
            "micrographs_failed": self.micrographs_failed,
            "particles_extracted": self.particles_extracted,
            "seconds": round(self.seconds, 3),
            "particles_per_second": round(self.particles_per_second, 1)
            if self.particles_extracted else None,
            "warnings": self.warnings,
            **({"tilt_signs": self.tilt_signs} if self.tilt_signs else {}),
        }

    def __str__(self) -> str:
        return format_summary(self.summary())

    def _repr_html_(self) -> str:
        """A notebook's view of the run: a small table instead of the dataclass's repr."""
        return summary_html(self.summary())


def flagged_note(n: int) -> str:
    """What to tell a user about ``n`` kept pairs that are off the fitted tilt geometry."""
    return (f"{n} pairs flagged off the tilt geometry (kept; --drop-flagged drops them; "
            "column 'flagged' of pairs.parquet)")


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable summary of a run (from :meth:`ExtractionResult.summary`)."""
    lines = [
        f"pairs in:      {s['pairs_in']}",
        f"pairs kept:    {s['pairs_kept']}",
    ]
    if s.get("pairs_flagged"):
        lines.append(f"  {flagged_note(int(s['pairs_flagged']))}")
    lines.append(f"pairs dropped: {s['pairs_dropped']}")
    for reason, n in s.get("dropped_by_reason", {}).items():
        lines.append(f"  {reason:<28} {n}")
    lines.append(f"micrographs:   {s['micrographs_extracted']} extracted, "
                 f"{s['micrographs_reused']} already done, "
                 f"{len(s['micrographs_failed'])} failed")
    for name, err in s.get("micrographs_failed", {}).items():
        lines.append(f"  {name}: {err}")
    if s.get("particles_per_second"):
        lines.append(f"speed:         {s['particles_per_second']} particles/s "
                     f"({s['particles_extracted']} particles in {s['seconds']} s)")
    signs = s.get("tilt_signs") or {}
    if signs:
        used = [v for v in signs.values() if v["used"]]
        lines.append(f"tilt sign:     read from the Thon rings of {len(signs)} micrograph(s): "
                     f"{sum(v['sign'] == 1 for v in used)} +1, "
                     f"{sum(v['sign'] == -1 for v in used)} -1, "
                     f"{len(signs) - len(used)} unsure (flipped whole)")
    for w in s.get("warnings", []):
        lines.append(f"warning: {w}")
    lines.append(f"output:        {s['out']}")
    return "\n".join(lines)


def outcome(s: dict[str, Any]) -> str:
    """What a run did, in one line (for the run's record)."""
    drops = ", ".join(f"{k} {v}" for k, v in s.get("dropped_by_reason", {}).items())
    return (f"{s['micrographs_extracted']} micrograph(s) extracted, "
            f"{s['micrographs_reused']} already done, {len(s['micrographs_failed'])} failed; "
            f"{s['pairs_kept']} of {s['pairs_in']} pairs kept, {s['pairs_dropped']} dropped"
            + (f" ({drops})" if drops else "")
            + f", {s.get('pairs_flagged', 0)} flagged; {s['particles_extracted']} particles "
            f"in {s['seconds']} s")


def summary_html(s: dict[str, Any]) -> str:
    """The run's summary (from :meth:`ExtractionResult.summary`) as an HTML table."""
    from html import escape

    def row(name: str, value: object, indent: bool = False) -> str:
        pad = "padding-left:2em;" if indent else ""
        return (f"<tr><th style='text-align:left;{pad}'>{escape(name)}</th>"
                f"<td style='text-align:left'>{escape(str(value))}</td></tr>")

    rows = [row("pairs in", s["pairs_in"]), row("pairs kept", s["pairs_kept"]),
            row("pairs dropped", s["pairs_dropped"])]
    rows += [row(reason, n, indent=True) for reason, n in s.get("dropped_by_reason", {}).items()]
    # "pairs_flagged" comes with the geometry flags' summary; an older summary has none
    rows.append(row("pairs flagged", s.get("pairs_flagged", 0)))
    rows.append(row("micrographs", f"{s['micrographs_extracted']} extracted, "
                                   f"{s['micrographs_reused']} already done, "
                                   f"{len(s['micrographs_failed'])} failed"))
    rows += [row(name, err, indent=True) for name, err in s["micrographs_failed"].items()]
    speed = (f", {s['particles_per_second']} particles/s"
             if s.get("particles_per_second") else "")
    rows.append(row("time", f"{s['seconds']} s ({s['particles_extracted']} particles "
                            f"extracted{speed})"))
    rows += [row("warning", w) for w in s.get("warnings", [])]
    rows.append(row("output", s["out"]))
    return ("<div><strong>pairextract: ExtractionResult</strong>"
            f"<table>{''.join(rows)}</table></div>")
