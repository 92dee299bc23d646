import numpy as np
import pytest
import scipy.fft
from _formulas import (
    ctf_by_formula,
    downsample_by_formula,
    flip_by_formula,
    invert_by_formula,
)

from pairextract import CTF, ExtractionParams
from pairextract.errors import NonFinitePixels
from pairextract.io.micrograph import micrograph_info, pixels
from pairextract.io.mrc import write_mrc
from pairextract.io.pages import row_release
from pairextract.ops import (
    background_mask,
    box_scale,
    fourier_downsample,
    normalize_stack,
    output_sampling,
    phase_flip,
    remove_dust,
    scale_coordinates,
    xmipp_param,
)
from pairextract.ops.boxes import cut_boxes
from pairextract.ops.protocol import (
    _CHUNK_ELEMENTS,
    STATUS_OK,
    STATUS_OUTSIDE,
    extract_micrograph,
    stream_micrograph,
)

BOX = 64
SIGMA = 4.0
CENTRES = np.array([[70, 80], [200, 90], [300, 300], [120, 250], [257, 180], [31, 300]])


def blob(box, sigma=SIGMA, centre=None):
    c = box // 2 if centre is None else centre
    i, j = np.indices((box, box))
    return np.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2))


def synthetic_micrograph(shape=(384, 400), noise=0.05, seed=0):
    """Bright background with a ramp, dark Gaussian blobs at integer centres, noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    r, c = np.indices(shape)
    img = 10.0 + 0.004 * c - 0.003 * r
    for x, y in CENTRES:
        img -= np.exp(-((r - y) ** 2 + (c - x) ** 2) / (2 * SIGMA**2))
    img += rng.normal(scale=noise, size=shape)
    return img.astype(np.float32)


def peak_offset(image, template):
    """Sub-pixel (dy, dx) of the circular cross-correlation peak (parabolic refinement)."""
    cc = scipy.fft.irfft2(scipy.fft.rfft2(image) * np.conj(scipy.fft.rfft2(template)),
                          s=image.shape)
    pk = np.unravel_index(np.argmax(cc), cc.shape)
    out = []
    for ax in (0, 1):
        n = cc.shape[ax]
        idx = list(pk)
        vals = []
        for d in (-1, 0, 1):
            idx[ax] = (pk[ax] + d) % n
            vals.append(cc[tuple(idx)])
        den = vals[0] - 2 * vals[1] + vals[2]
        sub = 0.5 * (vals[0] - vals[2]) / den if den != 0 else 0.0
        shift = pk[ax] + sub
        out.append(shift - n if shift > n / 2 else shift)
    return np.array(out)


def test_end_to_end_invert_ramp_centred_and_bright():
    img = synthetic_micrograph()
    params = ExtractionParams(BOX, invert=True, normalize="Ramp")
    res = extract_micrograph(img, CENTRES.astype(float), params)
    assert res.stack.shape == (len(CENTRES), BOX, BOX) and res.stack.dtype == np.float32
    assert res.status.tolist() == [STATUS_OK] * 5 + [STATUS_OUTSIDE]
    assert res.xy.tolist() == CENTRES.tolist()
    assert res.sampling is None and res.phase_flipped is False
    bg = background_mask(BOX, -1)
    tmpl = blob(BOX)
    for k in range(5):
        box = res.stack[k].astype(np.float64)
        centre = box[BOX // 2 - 3:BOX // 2 + 4, BOX // 2 - 3:BOX // 2 + 4].mean()
        assert centre > box[bg].mean() + 5.0          # bright particle, dark background
        assert abs(box[bg].mean()) < 1e-4 and abs(box[bg].std(ddof=1) - 1) < 1e-4
        assert np.all(np.abs(peak_offset(box, tmpl)) <= 0.5)
    assert np.all(res.stack[5] == 0)
    assert np.isnan(res.local_average[5]) and np.all(np.isfinite(res.local_average[:5]))


def test_offcentre_blob_is_detected():
    # the cross-correlation check can fail: a blob one pixel off gives an offset of 1
    box = blob(BOX, centre=BOX // 2 + 1)
    assert np.abs(peak_offset(box, blob(BOX))).max() > 0.5


def test_invert_without_normalization_and_local_average():
    img = synthetic_micrograph(seed=1)
    res = extract_micrograph(img, CENTRES[:2], ExtractionParams(BOX, invert=True,
                                                                 normalize=None,
                                                                 dust_removal=False))
    dmin, dmax = float(img.min()), float(img.max())
    x, y = CENTRES[0]
    raw = img[y - 32:y + 32, x - 32:x + 32].astype(np.float64)
    np.testing.assert_allclose(res.stack[0], (dmax - raw) / (dmax - dmin), rtol=1e-6)
    assert res.local_average[0] == pytest.approx(raw.mean(), rel=1e-12)


def test_no_invert_particles_dark():
    img = synthetic_micrograph(seed=2)
    res = extract_micrograph(img, CENTRES[:1], ExtractionParams(BOX, normalize="NewXmipp"))
    assert res.stack[0, BOX // 2, BOX // 2] < -5


def test_fill_borders_keeps_border_particle():
    img = synthetic_micrograph()
    res = extract_micrograph(img, CENTRES, ExtractionParams(BOX, fill_borders=True))
    assert (res.status == STATUS_OK).all()
    assert np.all(np.isfinite(res.stack)) and np.any(res.stack[5] != 0)


def test_downsample_scales_coordinates_and_sampling():
    img = synthetic_micrograph(shape=(384, 400))
    coords = np.array([[141.9, 161.0], [400.0, 200.0]])
    params = ExtractionParams(32, downsample=2.0)
    res = extract_micrograph(img, coords, params, pixel_size=1.25)
    assert res.xy.tolist() == [[70, 80], [200, 100]]
    assert res.status.tolist() == [STATUS_OK, STATUS_OUTSIDE]
    assert res.sampling == 2.5
    # the (dark) blob at (70, 80) in the original pixels is at (35, 40) after binning
    assert res.stack[0, 16, 16] < res.stack[0][background_mask(32, -1)].mean()


def test_coord_pixel_size_rescales():
    img = synthetic_micrograph()
    res = extract_micrograph(img, [[35.0, 40.0]], ExtractionParams(BOX),
                             pixel_size=1.0, coord_pixel_size=2.0)
    assert res.xy.tolist() == [[70, 80]]
    with pytest.raises(ValueError, match="pixel_size"):
        extract_micrograph(img, [[35.0, 40.0]], ExtractionParams(BOX), coord_pixel_size=2.0)


def test_phase_flip_policy():
    img = synthetic_micrograph()
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    params = ExtractionParams(BOX, phase_flip=True)
    res = extract_micrograph(img, CENTRES[:2], params, ctf=None, pixel_size=1.0)
    assert res.phase_flipped is False
    flipped = extract_micrograph(img, CENTRES[:2], params, ctf=ctf, pixel_size=1.0)
    assert flipped.phase_flipped is True
    assert not np.allclose(flipped.stack, res.stack, atol=1e-3)
    with pytest.raises(ValueError, match="pixel_size"):
        extract_micrograph(img, CENTRES[:2], params, ctf=ctf)
    # a CTF without phase_flip does nothing to the pixels
    plain = extract_micrograph(img, CENTRES[:2], ExtractionParams(BOX), ctf=ctf, pixel_size=1.0)
    np.testing.assert_array_equal(plain.stack, res.stack)


@pytest.mark.parametrize(("image", "coords", "match"), [
    (np.zeros((10, 10, 2)), [[1, 1]], "2-D"),
    (np.zeros((100, 100)), [[1, 1, 1]], r"\(n, 2\)"),
    (np.zeros((100, 100)), [[np.nan, 1]], "NaN"),
    (np.zeros((100, 100)), [["a", 1]], "numbers"),
    (np.zeros((40, 100)), [[50, 20]], "smaller than the box"),
    (np.full((100, 100), np.inf), [[50, 50]], "infinite"),
])
def test_bad_input_clear_errors(image, coords, match):
    with pytest.raises(ValueError, match=match):
        extract_micrograph(image, coords, ExtractionParams(BOX))


def test_empty_coordinates():
    res = extract_micrograph(synthetic_micrograph(), np.empty((0, 2)), ExtractionParams(BOX))
    assert res.stack.shape == (0, BOX, BOX) and res.status.shape == (0,)


def test_dust_removed_before_cut():
    img = synthetic_micrograph(seed=3)
    x, y = CENTRES[2]
    img[y + 10, x + 10] = 500.0
    res = extract_micrograph(img, CENTRES[2:3], ExtractionParams(BOX, normalize=None))
    assert res.stack[0].max() < 11
    res = extract_micrograph(img, CENTRES[2:3], ExtractionParams(BOX, normalize=None,
                                                                 dust_removal=False))
    assert res.stack[0].max() == 500.0


def test_synthetic_dataset_centred_and_bright(tmp_path):
    from pairextract.io.mrc import read_micrograph
    from pairextract.testing import synth

    box = 48
    ds = synth.make_dataset(tmp_path, n_mic_pairs=1, shape=(512, 512), particles_per_pair=10,
                            box=box, pixel_size=2.0, seed=7, n_edge=2)
    params = ExtractionParams(box, invert=True)
    bg = background_mask(box, -1)
    for view, path in (("u", ds.micrographs_u[0]), ("t", ds.micrographs_t[0])):
        truth = ds.truth
        coords = truth[[f"x_{view}", f"y_{view}"]].to_numpy(dtype=float)
        res = extract_micrograph(read_micrograph(path), coords, params, pixel_size=2.0)
        inside = truth[f"inside_{view}"].to_numpy()
        np.testing.assert_array_equal(res.status == STATUS_OK, inside)
        assert inside.sum() >= 8
        for k in np.flatnonzero(inside):
            pid = int(truth["pair_id"].iloc[k])
            tmpl = ds.render_particle(pid, view, box, ctf=True)
            b = res.stack[k].astype(np.float64)
            assert np.all(np.abs(peak_offset(b, tmpl)) <= 0.5), (view, pid)
            core = ds.render_particle(pid, view, box) > 0.3 * ds.render_particle(
                pid, view, box).max()
            assert b[core].mean() > b[bg].mean() + 1.0, (view, pid)


@pytest.mark.parametrize("flip", [False, True])
def test_input_untouched_unless_consumed(flip):
    img = synthetic_micrograph(seed=4)
    img[100, 100] = 400.0                       # dust to fix
    keep = img.copy()
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    params = ExtractionParams(BOX, invert=True, phase_flip=flip)
    res = extract_micrograph(img, CENTRES, params, ctf=ctf, pixel_size=1.0)
    np.testing.assert_array_equal(img, keep)
    consumed = stream_micrograph(img, CENTRES, params, ctf=ctf, pixel_size=1.0,
                                  consume_image=True)
    np.testing.assert_array_equal(consumed.stack, res.stack)
    # Boxes are cut and patched, or the flip reads the rows with the patch applied: the
    # micrograph is never written, consumed or not.
    np.testing.assert_array_equal(img, keep)


# A CTF with a Fourier coefficient of a 64 x 64 micrograph, (17, 32), whose sign differs between
# sampling 1.7 in double and 1.7 as Xmipp parses --sampling 1.700000 (C float 1.70000005):
# found by searching defocus values, its CTF is 1e-7..1e-6 (in units of pi of the phase) off
# zero on either side, far above rounding.
EDGE_CTF = CTF(defocus_u=26346.3, defocus_v=26201.8, defocus_angle=131.7, voltage=300.0,
               cs=2.7, amplitude_contrast=0.1)


@pytest.mark.parametrize("downsample", [1.0, 2.0])
def test_phase_flip_samples_at_the_c_float_of_the_sampling(downsample):
    """The flip uses --sampling as Xmipp parses it: a double 1.7 flips coefficient (17, 32)
    the other way, and the particle differs from the independent computation."""
    tm_xmipp = float(np.float32(float(f"{1.7:f}")))
    at_double = ctf_by_formula(64, 64, 1.7, EDGE_CTF)
    at_xmipp = ctf_by_formula(64, 64, tm_xmipp, EDGE_CTF)
    assert np.flatnonzero((at_double < 0) != (at_xmipp < 0)).tolist() == [17 * 33 + 32]
    n = int(64 * downsample)
    img = np.random.default_rng(5).normal(size=(n, n)).astype(np.float32)
    params = ExtractionParams(64, downsample=downsample, dust_removal=False, phase_flip=True,
                              normalize=None)
    res = extract_micrograph(img, [[32 * downsample, 32 * downsample]], params, ctf=EDGE_CTF,
                             pixel_size=1.7 / downsample)
    assert res.status.tolist() == [STATUS_OK] and res.phase_flipped
    assert res.sampling == pytest.approx(1.7)
    small = img if downsample == 1.0 else downsample_by_formula(img, 64, 64)
    expect = flip_by_formula(small, tm_xmipp, EDGE_CTF)
    double = flip_by_formula(small, 1.7, EDGE_CTF)
    np.testing.assert_allclose(res.stack[0], expect, atol=2e-5)
    assert np.abs(res.stack[0] - double).max() > 1e-3


def test_dust_threshold_as_xmipp_parses_it():
    """--bad_pixels outliers 3.300000 acts as the C float 3.29999995: a pixel between the two
    limits is dust for Xmipp (and here), not for the double 3.3."""
    rng = np.random.default_rng(2)
    img = rng.normal(size=(64, 64))
    img -= img.mean() + 3.3 * img.std()  # mu + 3.3 sigma near 0, where float32 is fine-grained
    k32 = float(np.float32(float(f"{3.3:f}")))
    for _ in range(5):  # the pixel moves mu and sigma: settle it between the two limits
        mu, sigma = img.mean(), np.sqrt(abs(np.mean(img * img) - img.mean() ** 2))
        img[10, 10] = mu + (k32 + 3.3) / 2 * sigma
    img = img.astype(np.float32)
    x = img.astype(np.float64)
    mu, sigma = x.mean(), np.sqrt(abs(np.mean(x * x) - x.mean() ** 2))
    assert mu + k32 * sigma < x[10, 10] < mu + 3.3 * sigma
    params = ExtractionParams(64, dust_threshold=3.3, normalize=None)
    res = extract_micrograph(img, [[32, 32]], params)
    assert res.stack[0][10, 10] != img[10, 10]
    window = np.delete(img[8:13, 8:13].ravel(), 12)
    assert res.stack[0][10, 10] == pytest.approx(np.median(window), abs=1e-6)


def _case_params(case: str) -> tuple[ExtractionParams, CTF | None]:
    """Options of the streaming tests' cases (invert and Ramp in all of them)."""
    ctf = None
    kw: dict = {"invert": True, "normalize": "Ramp"}
    if case == "fill_borders":
        kw["fill_borders"] = True
    if case == "outside":
        kw["dust_removal"] = False
    if case == "downsample":
        kw["downsample"] = 1.5
    if case in ("flip", "tilt_flip"):
        kw["phase_flip"] = True
        tilt = 30.0 if case == "tilt_flip" else None
        ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1, specimen_tilt=tilt,
                  specimen_tilt_axis=None if tilt is None else 80.0)
    if case == "tilt_flip":
        kw["tilt_defocus"] = "ctf"
    return ExtractionParams(BOX, **kw), ctf


@pytest.mark.parametrize("case", ["outside", "fill_borders", "flip", "tilt_flip"])
def test_sink_gets_the_same_rows_as_the_whole_stack(case):
    # The task streams boxes to its shard file; the rows must be those of the whole stack,
    # skipped ones (zeros) included, in order.
    img = synthetic_micrograph()
    # more boxes than one chunk of the normalization (128 of 64^2), some outside
    coords = np.tile(np.concatenate([CENTRES, [[5, 5], [398, 200]], CENTRES[::-1]]), (20, 1))
    # "outside": dust removal on, as before (only the put test's "outside" turns it off)
    params, ctf = _case_params(case if case != "outside" else "dust")
    whole = extract_micrograph(img, coords, params, ctf=ctf, pixel_size=1.0)
    blocks: list[np.ndarray] = []
    streamed = stream_micrograph(img, coords, params, ctf=ctf, pixel_size=1.0,
                                  sink=blocks.append)
    assert streamed.stack.shape == (0, BOX, BOX)
    assert max(len(b) for b in blocks) < len(coords)  # never the whole stack at once
    np.testing.assert_array_equal(np.concatenate(blocks), whole.stack)
    np.testing.assert_array_equal(streamed.status, whole.status)
    np.testing.assert_array_equal(streamed.local_average, whole.local_average)


@pytest.mark.parametrize("case", ["dust", "outside", "fill_borders", "flip", "tilt_flip",
                                  "downsample"])
def test_put_gets_each_box_once_and_reads_the_rows_top_to_bottom(case):
    # What a task gives its shard writer: every box bit for bit as the whole stack has it,
    # each once, skipped ones never (they stay zeros in the file); without downsampling or
    # flip the boxes are cut top row first and each row of the micrograph is released once,
    # in order, after its last box.
    img = dusty_micrograph()
    coords = np.tile(np.concatenate([BORDER_CENTRES, CENTRES[::-1]]), (12, 1))
    params, ctf = _case_params(case)
    whole = extract_micrograph(img, coords, params, ctf=ctf, pixel_size=1.0)
    got = np.zeros_like(whole.stack)
    given = np.zeros(len(coords), dtype=int)
    seen: list[tuple[int, int]] = []

    def put(rows, boxes):
        given[rows] += 1
        got[rows] = boxes

    res = stream_micrograph(img, coords, params, ctf=ctf, pixel_size=1.0, put=put,
                             release=lambda r0, r1: seen.append((r0, r1)))
    assert res.stack.shape == (0, BOX, BOX)
    np.testing.assert_array_equal(got, whole.stack)
    np.testing.assert_array_equal(res.local_average, whole.local_average)
    ok = whole.status == "ok"
    assert (given[ok] == 1).all() and ((given[~ok] == 0).all() or case == "tilt_flip")
    if case in ("dust", "outside", "fill_borders"):
        # the cut's releases: the last scan's, in order, each row once, down to the bottom
        cut = seen[len(seen) - next(i for i, (a, _) in enumerate(reversed(seen)) if a == 0) - 1:]
        assert [a for a, _ in cut[1:]] == [b for _, b in cut[:-1]]
        assert cut[-1][1] == img.shape[0]
    with pytest.raises(ValueError, match="not both"):
        stream_micrograph(img, coords, params, ctf=ctf, pixel_size=1.0, put=put,
                           sink=lambda b: None)


@pytest.mark.parametrize("normalize", ["Ramp", "NewXmipp", "OldXmipp", None])
@pytest.mark.parametrize("streamed", [False, True])
def test_boxes_are_cut_inverted_and_normalized_chunk_by_chunk(normalize, streamed):
    # Cut, invert (the reference formula rounded to float32), normalize chunk by chunk of
    # valid boxes: every row identical to the bit, skipped rows zero, and the local averages
    # those of the cut boxes. 264 rows, 240 valid: two chunks of 128.
    img = synthetic_micrograph()
    coords = np.tile(np.concatenate([CENTRES, [[5, 5], [398, 200]], CENTRES[::-1]]), (20, 1))
    coords = np.concatenate([coords, [[150, 150], [151, 152], [200, 201], [90, 300]] * 6])
    params = ExtractionParams(BOX, dust_removal=False, invert=True, normalize=normalize,
                              bg_radius=25)
    blocks: list[np.ndarray] = []
    res = stream_micrograph(img, coords, params, sink=blocks.append if streamed else None)
    stack = np.concatenate(blocks) if streamed else res.stack

    cut, valid = cut_boxes(img, coords.astype(np.int64), BOX)
    expect = np.zeros_like(cut)
    idx = np.flatnonzero(valid)
    chunk = _CHUNK_ELEMENTS // (BOX * BOX)
    assert 1 < idx.size / chunk < 2
    for k in range(0, idx.size, chunk):
        part = cut[idx[k:k + chunk]]
        part[...] = invert_by_formula(part, float(img.min()), float(img.max()))
        if normalize is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                normalize_stack(part, normalize, 25, out=part)
        expect[idx[k:k + chunk]] = part
    np.testing.assert_array_equal(stack.view(np.uint32), expect.view(np.uint32))
    np.testing.assert_array_equal(res.local_average[valid],
                                  cut[valid].reshape(idx.size, -1).mean(axis=1,
                                                                        dtype=np.float64))


def dusty_micrograph(dtype=np.float32, seed=6):
    """The synthetic micrograph with outliers inside boxes, in clusters, and on the borders
    and corners (where boxes leaving the micrograph clamp to them)."""
    img = synthetic_micrograph(seed=seed).astype(np.float64)
    h, w = img.shape
    for r, c in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, 3), (2, 0), (h - 1, 40),
                 (200, w - 1), (80, 70), (300, 301), (90, 205)]:
        img[r, c] = 60.0
    img[250:253, 120:122] = -40.0                  # a cluster in a box
    img[0:2, w - 2:w] = 70.0                       # a cluster in a corner
    if np.issubdtype(dtype, np.integer):
        img = np.round(img * 100)
    return img.astype(dtype)


BORDER_CENTRES = np.concatenate([CENTRES, [[5, 5], [398, 200], [0, 383], [399, 0], [-10, 150],
                                           [200, 390], [200, 3]]])


@pytest.mark.parametrize("fill", [False, True])
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_boxes_of_the_untouched_micrograph_equal_those_of_the_cleaned_one(fill, invert, dtype):
    # The boxes are cut from the micrograph as it is and patched; the previous way cleaned
    # the whole micrograph first (remove_dust) and cut from it, inverting over its range.
    img = dusty_micrograph(dtype)
    keep = img.copy()
    params = ExtractionParams(BOX, invert=invert, fill_borders=fill, normalize="Ramp")
    got = extract_micrograph(img, BORDER_CENTRES, params)
    cleaned = remove_dust(img, xmipp_param(params.dust_threshold))
    assert (cleaned != img).sum() > 10
    want = extract_micrograph(cleaned, BORDER_CENTRES,
                              ExtractionParams(BOX, invert=invert, fill_borders=fill,
                                               normalize="Ramp", dust_removal=False))
    np.testing.assert_array_equal(img, keep)  # never written
    np.testing.assert_array_equal(got.status, want.status)
    np.testing.assert_array_equal(got.stack, want.stack)
    np.testing.assert_array_equal(got.local_average, want.local_average)
    blocks: list[np.ndarray] = []
    seen: list[tuple[int, int]] = []
    streamed = stream_micrograph(img, BORDER_CENTRES, params, sink=blocks.append,
                                  release=lambda r0, r1: seen.append((r0, r1)))
    np.testing.assert_array_equal(np.concatenate(blocks), want.stack)
    np.testing.assert_array_equal(streamed.local_average, want.local_average)
    assert seen and all(0 <= r0 < r1 <= img.shape[0] for r0, r1 in seen)


@pytest.mark.parametrize("downsample", [1.0, 1.5])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_flip_of_the_patched_rows_equals_flipping_the_cleaned_micrograph(downsample, dtype):
    # The flip reads the rows with the dust patch applied; the previous way cleaned the whole
    # micrograph (remove_dust), flipped it whole (phase_flip) and cut from that.
    img = dusty_micrograph(dtype)
    keep = img.copy()
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    params = ExtractionParams(BOX, downsample=downsample, invert=True, phase_flip=True,
                              normalize="Ramp")
    seen: list[tuple[int, int]] = []
    got = stream_micrograph(img, BORDER_CENTRES, params, ctf=ctf, pixel_size=1.0,
                             release=lambda r0, r1: seen.append((r0, r1)))
    np.testing.assert_array_equal(img, keep)
    small = img if downsample == 1.0 else fourier_downsample(img, downsample)
    cleaned = remove_dust(small, xmipp_param(params.dust_threshold))
    assert (cleaned != small).sum() > 5
    flipped = phase_flip(cleaned, xmipp_param(output_sampling(1.0, downsample)), ctf.defocus_u,
                         ctf.defocus_v, ctf.defocus_angle, ctf.voltage, ctf.cs,
                         ctf.amplitude_contrast)
    want = extract_micrograph(flipped, scale_coordinates(BORDER_CENTRES,
                                                         box_scale(1.0, 1.0, downsample)),
                              ExtractionParams(BOX, invert=True, normalize="Ramp",
                                               dust_removal=False))
    np.testing.assert_array_equal(got.status, want.status)
    np.testing.assert_array_equal(got.stack.view(np.uint32), want.stack.view(np.uint32))
    np.testing.assert_array_equal(got.local_average, want.local_average)
    assert got.phase_flipped
    if downsample == 1.0:  # every row of the micrograph released once the flip has read it
        assert sorted(set(seen))[-1][1] == img.shape[0]


def test_flipping_a_micrograph_holds_its_spectrum_and_little_else():
    # Dust removal, the flip and the cut of a whole micrograph: no cleaned copy and no separate
    # result beside the complex128 spectrum (each would be half of it again at this size).
    import tracemalloc

    h = w = 2048
    rng = np.random.default_rng(9)
    img = rng.normal(size=(h, w)).astype(np.float32)
    img[rng.integers(0, h, 50), rng.integers(0, w, 50)] = 60.0
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    params = ExtractionParams(64, invert=True, phase_flip=True, normalize="Ramp")
    xy = rng.uniform(100, 1900, (40, 2))
    stream_micrograph(img, xy, params, ctf=ctf, pixel_size=1.0, sink=lambda b: None)  # warm
    tracemalloc.start()
    try:
        stream_micrograph(img, xy, params, ctf=ctf, pixel_size=1.0, sink=lambda b: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    spectrum = h * (w // 2 + 1) * 16
    assert peak < spectrum + 3 * 256 * w * 8, peak / spectrum


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float16])
@pytest.mark.parametrize("case", ["dust", "plain", "downsample", "flip"])
def test_pixel_types_float32_holds_give_the_particles_of_their_float32_copy(dtype, case):
    # Tasks extract 8/16-bit and float16 micrographs without a float32 copy.
    img = dusty_micrograph(np.float64, seed=8)
    img = (img - img.min()) / (img.max() - img.min()) * (200 if dtype == np.uint8 else 3000)
    img = img.astype(dtype)
    kw: dict = {"invert": True, "dust_removal": case != "plain"}
    if case == "downsample":
        kw["downsample"] = 2.0
    if case == "flip":
        kw["phase_flip"] = True
    params = ExtractionParams(32, **kw)
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    got = extract_micrograph(img, CENTRES, params, ctf=ctf, pixel_size=1.0)
    want = extract_micrograph(img.astype(np.float32), CENTRES, params, ctf=ctf, pixel_size=1.0)
    np.testing.assert_array_equal(got.stack, want.stack)
    np.testing.assert_array_equal(got.local_average, want.local_average)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "both"])
@pytest.mark.parametrize("case", ["dust", "invert", "neither", "no_box", "downsample", "flip",
                                  "flip_dust"])
def test_nonfinite_pixels_are_counted_on_every_path(value, case):
    # The check rides on the first scan (sums, range) and counts only when that is not finite.
    img = synthetic_micrograph(seed=2).astype(np.float64)
    bad = {"nan": [np.nan] * 3, "inf": [np.inf] * 3, "-inf": [-np.inf] * 3,
           "both": [np.inf, -np.inf, np.inf]}[value]
    img[[3, 200, 383], [0, 100, 399]] = bad
    kw: dict = {"dust_removal": case in ("dust", "flip_dust"), "invert": case != "neither"}
    if case == "downsample":
        kw["downsample"] = 2.0
    if case.startswith("flip"):
        kw["phase_flip"] = True
    coords = [[-100, -100]] if case == "no_box" else CENTRES
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    for dtype in (np.float32, np.float64):
        with pytest.raises(NonFinitePixels, match="contains 3 NaN or infinite") as err:
            extract_micrograph(img.astype(dtype), coords, ExtractionParams(BOX, **kw), ctf=ctf,
                               pixel_size=1.0)
        assert err.value.count == 3


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dust", [False, True])
@pytest.mark.parametrize("flip", [False, True])
def test_huge_finite_pixels_are_not_taken_for_infinite(dust, flip):
    # float64 sums (and min + max) can overflow without any pixel being infinite
    img = synthetic_micrograph(seed=2).astype(np.float64) * 1e307
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    res = extract_micrograph(img, CENTRES, ExtractionParams(BOX, dust_removal=dust,
                                                            normalize=None, phase_flip=flip),
                             ctf=ctf, pixel_size=1.0)
    assert (res.status == STATUS_OK).sum() == len(CENTRES) - 1  # (31, 300) leaves it


def test_memory_mapped_micrograph_released_as_read_gives_the_same_particles(tmp_path):
    img = dusty_micrograph()
    path = tmp_path / "m.mrc"
    write_mrc(path, img, 1.0)
    before = path.read_bytes()
    mapped = pixels(micrograph_info(path))
    release = row_release(mapped)
    assert release is not None
    params = ExtractionParams(BOX, invert=True, fill_borders=True)
    got = stream_micrograph(mapped, BORDER_CENTRES, params, release=release)
    want = extract_micrograph(img, BORDER_CENTRES, params)
    np.testing.assert_array_equal(got.stack, want.stack)
    np.testing.assert_array_equal(np.asarray(mapped), img)
    assert path.read_bytes() == before
