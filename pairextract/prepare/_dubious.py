"""Inputs that can be extracted but are probably not what the user meant: warnings."""

from __future__ import annotations

from typing import Any

import numpy as np

from pairextract.core.inputs import TiltPairInputs
from pairextract.core.vocab import VIEWS
from pairextract.io.micrograph import pixel_row, pixels
from pairextract.prepare._report import CheckReport, listed


def _check_dubious(inputs: TiltPairInputs, report: CheckReport, phase_flip: bool,
                   readable: dict[str, Any]) -> None:
    """Inputs that can be extracted but are probably not what the user meant: warnings.

    ``readable``: the micrographs whose pixels may be sampled for a constant image (the
    default reader only; injected readers in tests have no pixels).
    """
    mp = inputs.micrograph_pairs
    cp = inputs.coordinate_pairs
    if len(cp) == 0:
        report.warnings.append(f"{inputs.source or 'the input'} has no coordinate pairs "
                               "(a header and no rows?): nothing will be extracted")
    # A pixel size that cannot be one: every box would be misplaced.
    for s in (v.suffix for v in VIEWS):
        for col in (f"pixel_size_{s}", f"coord_pixel_size_{s}"):
            bad = mp[mp[col].notna() & ~(mp[col] > 0)]
            if len(bad):
                report.errors.append(
                    f"{col.replace('_', ' ')} must be > 0 Å/px: "
                    + listed([f"{m} ({v})" for m, v in zip(bad[f"micrograph_{s}"], bad[col],
                                                               strict=True)]))
    # One row pairing u001 with t002 while every other row of u001 pairs it with t001.
    counts = cp.groupby("mic_pair_id").size()
    for s, other, view in (("u", "t", "untilted"), ("t", "u", "tilted")):
        # only micrographs in more than one micrograph pair can be paired with another one
        shared = mp[mp[f"micrograph_{s}"].duplicated(keep=False)]
        for mic, group in shared.groupby(f"micrograph_{s}", sort=False):
            if len(group) < 2:
                continue
            n = {int(i): int(counts.get(i, 0)) for i in group["mic_pair_id"]}
            main_id = max(n, key=lambda i: n[i])
            partner = dict(zip(group["mic_pair_id"].astype(int), group[f"micrograph_{other}"],
                               strict=True))
            for i, k in n.items():
                if i != main_id and k < n[main_id]:
                    ids = cp.loc[cp["mic_pair_id"] == i, "pair_id"].astype(int).tolist()
                    report.warnings.append(
                        f"{view} micrograph {mic} is paired with {partner[i]} in {k} row(s) "
                        f"(pair ids {listed([str(x) for x in ids])}) but with "
                        f"{partner[main_id]} in {n[main_id]}: a typo in the table?")
    same = mp[mp["micrograph_u"] == mp["micrograph_t"]]
    if len(same):
        report.warnings.append(
            "the same micrograph is both the untilted and the tilted view (a copy-paste "
            f"slip in the table?): {listed(list(dict.fromkeys(same['micrograph_u'])))}")
    _check_defocus_unit(inputs, report)
    # Phase flipping with a defocus that is not underfocus.
    if phase_flip:
        odd = []
        for m in inputs.micrographs():
            ctf = inputs.ctf_for(m)
            if ctf is not None and not (ctf.defocus_u > 0 and ctf.defocus_v > 0):
                odd.append(f"{m} (U={ctf.defocus_u:g}, V={ctf.defocus_v:g} Å)")
        if odd:
            report.warnings.append(
                "phase flip with a defocus that is 0 or negative (overfocus, or a missing "
                f"value?): {listed(odd)}")
    constant = [m for m, info in readable.items() if info is not None and _is_constant(info)]
    if constant:
        report.warnings.append("micrographs with one value in every pixel (sigma 0; their "
                               f"particles will be flat): {listed(constant)}")


# Below this a defocus is almost surely in µm (1.5 meant as 15000 Å): no one images that close
# to focus.
MIN_PLAUSIBLE_DEFOCUS_A = 100.0


def _check_defocus_unit(inputs: TiltPairInputs, report: CheckReport) -> None:
    """Warn of CTF defoci given in µm where Å are read."""
    tiny = []
    for m in inputs.micrographs():
        ctf = inputs.ctf_for(m)
        if ctf is None:
            continue
        if any(0 < d < MIN_PLAUSIBLE_DEFOCUS_A for d in (ctf.defocus_u, ctf.defocus_v)):
            tiny.append(f"{m} (U={ctf.defocus_u:g}, V={ctf.defocus_v:g} Å)")
    if tiny:
        report.warnings.append(
            f"defocus below {MIN_PLAUSIBLE_DEFOCUS_A:g} Å, almost surely given in µm (defocus "
            f"is read in Å: 1.5 µm is 15000 Å): {listed(tiny)}")


def _is_constant(info: Any) -> bool:
    """Whether every pixel of the micrograph has one value.

    One middle row (a few KiB, one read) decides almost every micrograph; only when that row
    is flat is the whole image read.
    """
    try:
        row = pixel_row(info, int(info.shape[0]) // 2)
        if row.size and row.min() != row.max():
            return False
        image = pixels(info)
        return bool(image.size) and bool(np.min(image) == np.max(image))
    except Exception:  # unreadable pixels are reported by the extraction itself
        return False
