"""The work plan: one job per micrograph and view, named by a digest of what decides its output.

Where each job's rows go in the output stacks is the store's layout
(:mod:`pairextract.store.layout`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pairextract.core.vocab import VIEWS
from pairextract.store.layout import MicrographJob

if TYPE_CHECKING:
    from pairextract.core.inputs import TiltPairInputs


def _nan_to_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _file_stamp(path: str) -> list[int] | None:
    """Size and modification time: a micrograph rewritten in place is extracted again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# The content fingerprint: the first block (every format's header) and blocks spread evenly
# over the rest. A rewritten micrograph differs in nearly every block; reading all of it
# would cost as much as extracting it.
FINGERPRINT_BLOCK = 4096
FINGERPRINT_SAMPLES = 64


def content_fingerprint(path: str) -> str | None:
    """A fast fingerprint of a file's content: its size, header and 64 sampled 4 KiB blocks.

    None for a file that cannot be read (the run reports it).
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(str(size).encode())
            step = max(FINGERPRINT_BLOCK, size // FINGERPRINT_SAMPLES)
            for offset in range(0, size, step):
                f.seek(offset)
                h.update(f.read(FINGERPRINT_BLOCK))
    except OSError:
        return None
    return h.hexdigest()[:24]


def job_digest(job: MicrographJob, verify_inputs: bool = False) -> str:
    """Hash of everything that decides a job's output apart from the run's parameters.

    ``verify_inputs``: the micrograph's content fingerprint joins its size and modification
    time (a file rewritten with its old size and time is extracted again).
    """
    h = hashlib.sha256()
    what = [job.view, job.mic_pair_id, job.micrograph, _file_stamp(job.micrograph),
            job.pixel_size, job.coord_pixel_size, job.ctf.to_dict() if job.ctf else None]
    if verify_inputs:
        what.append(content_fingerprint(job.micrograph))
    h.update(json.dumps(what, sort_keys=True).encode())
    h.update(np.ascontiguousarray(job.pair_ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(job.coords, dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def make_jobs(inputs: TiltPairInputs, pixel_sizes: dict[str, float | None],
              verify_inputs: bool = False) -> list[MicrographJob]:
    """Jobs for every micrograph of both views, in micrograph-pair order (untilted first).

    ``pixel_sizes`` maps a micrograph path to its pixel size (from the input table, else
    the file header); it decides the coordinate rescale for "other" micrographs.
    ``verify_inputs``: see :func:`job_digest`.
    """
    mics = inputs.micrograph_pairs
    coords = inputs.coordinate_pairs.sort_values(["mic_pair_id", "pair_id"], kind="stable")
    # One pass over the columns, then slices: planning stays linear in the micrographs.
    mic_ids = coords["mic_pair_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, mic_ids[1:] != mic_ids[:-1]]) if len(mic_ids) else \
        np.zeros(0, np.int64)
    ends = [*starts[1:].tolist(), len(mic_ids)] if len(starts) else []
    bounds = dict(zip(mic_ids[starts].tolist(), zip(starts.tolist(), ends, strict=True),
                      strict=True))
    pair_ids = coords["pair_id"].to_numpy(np.int64)
    xy = {v.suffix: coords[[f"x_{v.suffix}", f"y_{v.suffix}"]].to_numpy(np.float64)
          for v in VIEWS}
    jobs: list[MicrographJob] = []
    for view in VIEWS:
        s = view.suffix
        paths = mics[f"micrograph_{s}"].astype(str).tolist()
        coord_px = (mics[f"coord_pixel_size_{s}"].tolist()
                    if f"coord_pixel_size_{s}" in mics else [None] * len(mics))
        for mic_pair_id, path, cps in zip(mics["mic_pair_id"].to_numpy(np.int64).tolist(),
                                          paths, coord_px, strict=True):
            lo_hi = bounds.get(mic_pair_id)
            if lo_hi is None or lo_hi[1] == lo_hi[0]:
                continue
            lo, hi = lo_hi
            job = MicrographJob(
                view=view,
                mic_pair_id=int(mic_pair_id),
                micrograph=path,
                pair_ids=pair_ids[lo:hi],
                coords=xy[s][lo:hi],
                pixel_size=pixel_sizes.get(path),
                coord_pixel_size=_nan_to_none(cps),
                ctf=inputs.ctf_for(path),
            )
            jobs.append(replace(job, digest=job_digest(job, verify_inputs)))
    return jobs

