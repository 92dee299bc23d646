import numpy as np
import pytest

from pairextract.ops.boxes import box_origin, cut_boxes, inside_micrograph


@pytest.mark.parametrize("box", [64, 65])
def test_delta_lands_on_origin(box):
    img = np.zeros((200, 300), dtype=np.float32)
    x, y = 123, 77
    img[y, x] = 1.0
    stack, valid = cut_boxes(img, np.array([[x, y]]), box)
    assert valid.all()
    assert stack.shape == (1, box, box)
    assert stack.dtype == np.float32
    assert np.argwhere(stack[0] == 1.0).tolist() == [[box // 2, box // 2]]
    assert box_origin(box) == box // 2


def test_reference_example_box4():
    img = np.arange(40 * 30, dtype=np.float32).reshape(40, 30)
    stack, _ = cut_boxes(img, np.array([[10, 20]]), 4)
    np.testing.assert_array_equal(stack[0], img[18:22, 8:12])


@pytest.mark.parametrize("box", [63, 64])
def test_border_validity_rule(box):
    h, w = 100, 120
    lo = box // 2
    hi_x = w - (box - box // 2)  # W - ceil(B/2)
    hi_y = h - (box - box // 2)
    xy = np.array([[lo, lo], [hi_x, hi_y], [lo - 1, lo], [hi_x + 1, lo], [lo, lo - 1],
                   [lo, hi_y + 1]])
    assert inside_micrograph(xy, box, (h, w)).tolist() == [True, True, False, False, False,
                                                          False]
    img = np.ones((h, w), dtype=np.float32)
    stack, valid = cut_boxes(img, xy, box)
    assert valid.tolist() == [True, True, False, False, False, False]
    assert np.all(stack[~valid] == 0)
    assert np.all(stack[valid] == 1)


def test_fill_borders_copies_nearest_edge():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(50, 60)).astype(np.float32)
    box = 16
    xy = np.array([[2, 3], [58, 49], [30, 25]])
    stack, valid = cut_boxes(img, xy, box, fill_borders=True)
    assert valid.all()
    padded = np.pad(img, box, mode="edge")
    for k, (x, y) in enumerate(xy):
        r0, c0 = y - box // 2 + box, x - box // 2 + box
        np.testing.assert_array_equal(stack[k], padded[r0:r0 + box, c0:c0 + box])
    # corner pixel of the first box repeats img[0, 0]
    assert stack[0, 0, 0] == img[0, 0]


@pytest.mark.parametrize("fill_borders", [False, True])
@pytest.mark.parametrize("box", [8, 9])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_patched_boxes_equal_boxes_of_the_patched_image(fill_borders, box, dtype):
    # Boxes cut from the untouched image and patched are those cut from the patched image,
    # also where a box leaves the image and the clamped border pixels are patched ones.
    rng = np.random.default_rng(4)
    h, w = 30, 41
    img = rng.integers(-500, 500, size=(h, w)).astype(dtype)
    keep = img.copy()
    spots = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, 7), (h - 1, 20), (12, 0),
             (5, w - 1), (1, 1), (h - 2, w - 2)]
    spots += [tuple(rng.integers(0, (h, w))) for _ in range(25)]
    index = np.unique([r * w + c for r, c in spots]).astype(np.int64)
    value = rng.normal(size=index.size).astype(np.float32) * 1000
    fixed = img.astype(np.float32)
    fixed.reshape(-1)[index] = value
    xy = np.array([[20, 15], [1, 1], [w - 1, h - 1], [0, h - 1], [w - 2, 0], [-3, 10],
                   [w + 2, 10], [20, -4], [20, h + 3], [-20, -20], [w + 9, h + 9], [4, 4],
                   [w - 5, h - 5], [10, 6], [30, 22]])
    released: list[tuple[int, int]] = []
    got, valid = cut_boxes(img, xy, box, fill_borders=fill_borders, patch=(index, value),
                           release=lambda r0, r1: released.append((r0, r1)))
    want, want_valid = cut_boxes(fixed, xy, box, fill_borders=fill_borders)
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(img, keep)
    assert (got != cut_boxes(img, xy, box, fill_borders=fill_borders)[0]).any()
    # every box cut says which rows it read
    assert len(released) == int(valid.sum())
    assert all(0 <= r0 < r1 <= h for r0, r1 in released)
