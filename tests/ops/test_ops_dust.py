
import numpy as np
import pytest

from pairextract.ops.dust import _mean_std, dust_mask, dust_patch, remove_dust


def slow_reference(image, k):
    """Literal transcription of the reference's rule: full raster sweeps over every pixel."""
    x = image.astype(np.float64)
    mu = x.mean()
    sigma = np.sqrt(abs((x * x).mean() - mu * mu))
    bad = (x < mu - k * sigma) | (x > mu + k * sigma)
    h, w = x.shape
    while bad.any():
        progress = False
        for r in range(h):
            for c in range(w):
                if not bad[r, c]:
                    continue
                r0, r1 = max(0, r - 2), min(h, r + 3)
                c0, c1 = max(0, c - 2), min(w, c + 3)
                vals = x[r0:r1, c0:c1][~bad[r0:r1, c0:c1]]
                if vals.size:
                    x[r, c] = np.median(vals)
                    bad[r, c] = False
                    progress = True
        if not progress:
            break
    return x.astype(np.float32)


def test_isolated_outlier_replaced_by_median_of_24():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, size=(40, 40)).astype(np.float32)
    img[20, 17] = 100.0
    out = remove_dust(img, 3.5)
    window = img[18:23, 15:20].astype(np.float64).ravel()
    neighbours = np.delete(window, 12)
    assert out[20, 17] == np.float32(np.median(neighbours))
    mask = np.ones_like(img, dtype=bool)
    mask[20, 17] = False
    np.testing.assert_array_equal(out[mask], img[mask])


def test_corner_outlier_uses_clipped_window():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, size=(30, 30)).astype(np.float32)
    img[0, 0] = -50.0
    out = remove_dust(img, 3.5)
    neighbours = img[0:3, 0:3].astype(np.float64).ravel()[1:]  # 8 values: even count
    assert out[0, 0] == np.float32(np.median(neighbours))


def test_cluster_is_sequential_like_reference():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, size=(48, 52)).astype(np.float32)
    img[10:13, 20:23] = 60.0 + rng.uniform(0, 1, size=(3, 3))   # 3x3 cluster
    img[30, 5] = -40.0
    img[31, 6] = 45.0                                          # diagonal pair
    img[0:2, 50:52] = 55.0                                     # cluster in a corner
    img[40, 40] = 70.0
    img[42, 41] = -70.0                                        # two within 2 px
    out = remove_dust(img, 3.5)
    ref = slow_reference(img, 3.5)
    np.testing.assert_array_equal(out, ref)
    assert np.all(out[10:13, 20:23] < 1.0)


def test_random_clusters_match_reference():
    rng = np.random.default_rng(5)
    img = rng.normal(size=(64, 64)).astype(np.float32)
    for _ in range(12):
        r, c = rng.integers(0, 62, size=2)
        img[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = rng.choice([-1, 1]) * 9.0
    out = remove_dust(img, 3.5)
    np.testing.assert_array_equal(out, slow_reference(img, 3.5))


def test_clean_image_unchanged():
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 1, size=(64, 64)).astype(np.float32)  # max |z| ~ 1.73 < 3.5
    assert not dust_mask(img, 3.5).any()
    out = remove_dust(img, 3.5)
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_mask_strict_and_population_std():
    img = np.zeros((10, 10))
    img[0, 0] = 1.0
    mu = 0.01
    sigma = np.sqrt(0.01 - mu * mu)  # population std
    k = (1.0 - mu) / sigma
    assert not dust_mask(img, k * (1 + 1e-9))[0, 0]
    assert dust_mask(img, k * (1 - 1e-9))[0, 0]


def test_gaussian_micrograph_outlier_count():
    # Its speed is measured by benchmarks/bench_kernels.py, not asserted here.
    shape = (4096, 4096)
    rng = np.random.default_rng(4)
    img = rng.standard_normal(size=shape, dtype=np.float32)
    out = remove_dust(img, 3.5)
    n_bad = int((out != img).sum())
    assert 5000 < n_bad < 11000


def test_overwrite_in_place():
    rng = np.random.default_rng(6)
    img = rng.uniform(0, 1, size=(40, 40)).astype(np.float32)
    img[5, 5] = 50.0
    img[6, 6] = 50.0
    expect = remove_dust(img, 3.5)
    out = remove_dust(img, 3.5, overwrite=True)
    assert out is img
    np.testing.assert_array_equal(img, expect)
    as64 = img.astype(np.float64)
    assert remove_dust(as64, 3.5, overwrite=True) is not as64   # not float32: copies


def test_float32_mask_equals_float64_comparison_at_the_thresholds():
    # The float32 path compares against the nearest float32 bounds; pixels one ulp either
    # side of mean +- k*std must fall exactly as they do when compared in float64.
    rng = np.random.default_rng(3)
    for k in (0.5, 1.0, 2.0, 3.5):
        img = np.round(rng.standard_normal((61, 67)) * 8).astype(np.float32) / np.float32(8)
        stats = dust_patch(img, k)
        mu, sigma = stats.mean, stats.std
        for edge in (mu - k * sigma, mu + k * sigma):
            e = np.float32(edge)
            img[0, :3] = [np.nextafter(e, np.float32(-np.inf)), e,
                          np.nextafter(e, np.float32(np.inf))]
        x = img.astype(np.float64)
        stats = dust_patch(img, k)
        mu, sigma = stats.mean, stats.std
        want = (x < mu - k * sigma) | (x > mu + k * sigma)
        np.testing.assert_array_equal(dust_mask(img, k), want)
        # and the bad pixels are visited in raster order, as np.nonzero gives them
        np.testing.assert_array_equal(remove_dust(img, k), remove_dust(x, k))


def dusty(seed, shape, dtype, clusters=4, isolated=6):
    """Noise with isolated and clustered outliers, some on borders and corners."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = rng.normal(50.0, 4.0, size=shape)
    spots = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h // 2, 0)]
    spots += [tuple(rng.integers(0, (h, w))) for _ in range(isolated)]
    for r, c in spots:
        img[r, c] = 50.0 + rng.choice([-1, 1]) * rng.uniform(30, 45)
    for _ in range(clusters):
        r, c = rng.integers(0, (h, w))
        img[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = 50.0 + rng.choice([-1, 1]) * 40
    return img.astype(dtype)


CASES = [(seed, shape, dtype, k)
         for seed, (shape, dtype) in enumerate([((40, 52), np.float32), ((33, 29), np.float64),
                                                ((36, 41), np.float16), ((30, 45), np.int16),
                                                ((5, 64), np.uint8), ((64, 3), np.float32)])
         for k in (3.5, 2.0, 0.8)]


@pytest.mark.parametrize(("seed", "shape", "dtype", "k"), CASES)
def test_patch_holds_exactly_the_reference_changes(seed, shape, dtype, k):
    # The sparse patch is the reference's result at the bad pixels, nothing else; the dense
    # remove_dust built on it equals the reference, and the range is the cleaned image's.
    img = dusty(seed, shape, dtype)
    keep = img.copy()
    ref = slow_reference(img, k)
    patch = dust_patch(img, k, value_range=True)
    np.testing.assert_array_equal(img, keep)  # only read
    np.testing.assert_array_equal(patch.index, np.flatnonzero(dust_mask(img, k)))
    assert patch.index.dtype == np.int64 and patch.value.dtype == np.float32
    np.testing.assert_array_equal(patch.value, ref.reshape(-1)[patch.index])
    np.testing.assert_array_equal(remove_dust(img, k), ref)
    assert (patch.low, patch.high) == (float(ref.min()), float(ref.max()))
    x = img.astype(np.float64)
    assert patch.mean == _mean_std(img)[0] and patch.mean == pytest.approx(x.mean())
    assert patch.std == pytest.approx(x.std())


def test_patch_of_a_clean_image_is_empty_and_its_range_the_image_range():
    img = np.random.default_rng(3).uniform(0, 1, size=(64, 64)).astype(np.float32)
    patch = dust_patch(img, 3.5, value_range=True)
    assert patch.index.size == 0 and patch.value.size == 0
    assert (patch.low, patch.high) == (float(img.min()), float(img.max()))
    assert dust_patch(img, 3.5).low is None


def test_release_covers_every_row_once_read():
    img = dusty(7, (700, 40), np.float32)  # more than two row blocks
    seen: list[tuple[int, int]] = []
    patch = dust_patch(img, 3.5, value_range=True, release=lambda r0, r1: seen.append((r0, r1)))
    plain = dust_patch(img, 3.5, value_range=True)
    np.testing.assert_array_equal(patch.index, plain.index)
    np.testing.assert_array_equal(patch.value, plain.value)
    covered = np.zeros(700, dtype=int)
    for r0, r1 in seen:
        assert 0 <= r0 < r1 <= 700
        covered[r0:r1] += 1
    assert covered.min() == 2  # each row released by both passes (statistics, then mask)


def test_transposed_input_is_cleaned_like_a_c_ordered_one():
    img = dusty(8, (45, 38), np.float32)
    np.testing.assert_array_equal(remove_dust(np.asfortranarray(img), 3.5),
                                  slow_reference(img, 3.5))
    np.testing.assert_array_equal(remove_dust(img.T, 3.5), slow_reference(img.T.copy(), 3.5))


@pytest.mark.parametrize("shape", [(600, 301), (257, 1024), (1000, 7)])
def test_mean_summed_in_pieces_is_the_sum_of_whole_float64_blocks(monkeypatch, shape):
    # The statistics copy at most _COPY_ELEMENTS pixels at a time, split where numpy's pairwise
    # sum splits: the mean has the bits of summing a float64 copy of each 256-row block.
    from pairextract.ops import dust

    monkeypatch.setattr(dust, "_COPY_ELEMENTS", 1000)
    rng = np.random.default_rng(11)
    img = (rng.normal(size=shape) * 3 + 1e4).astype(np.float32)
    rows = dust._ROWS_PER_BLOCK
    want = 0.0
    for r in range(0, shape[0], rows):
        want += float(np.add.reduce(img[r:r + rows].astype(np.float64).reshape(-1)))
    mean, std = dust._mean_std(img)
    assert mean == want / img.size
    assert std == pytest.approx(img.astype(np.float64).std(), rel=1e-9)
