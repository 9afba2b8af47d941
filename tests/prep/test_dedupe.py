"""DCT pHash and duplicate grouping."""

import math

import numpy as np

from tests.prep_images import recompressed, scene
from toolkit.prep.dedupe import dct2, dct_matrix, find_duplicates, hamming, phash


def test_dct_matrix_is_the_orthonormal_dct_ii():
    n = 8
    matrix = dct_matrix(n)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(n), atol=1e-12)
    x = np.random.default_rng(0).normal(size=n)
    # X_k = s_k * sum_i x_i cos(pi (2i + 1) k / 2n), s_0 = sqrt(1/n), s_k = sqrt(2/n)
    direct = [(math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)) * sum(x[i] * math.cos(math.pi * (2 * i + 1) * k / (2 * n)) for i in range(n))
              for k in range(n)]
    np.testing.assert_allclose(matrix @ x, direct, atol=1e-12)


def test_dct2_of_a_constant_is_only_the_dc_term():
    out = dct2(np.full((32, 32), 5.0))
    assert abs(out[0, 0] - 5.0 * 32) < 1e-9
    out[0, 0] = 0
    assert np.abs(out).max() < 1e-9


def test_dct2_of_a_cosine_basis_image_is_one_coefficient():
    n = 32
    row = np.cos(np.pi * (2 * np.arange(n) + 1) * 3 / (2 * n))
    out = dct2(np.outer(np.ones(n), row))
    peak = np.unravel_index(np.argmax(np.abs(out)), out.shape)
    assert peak == (0, 3)
    out[peak] = 0
    assert np.abs(out).max() < 1e-9


def test_phash_is_64_bits_and_stable_under_resize_and_recompression():
    original = scene(3)
    value = phash(original)
    assert 0 <= value < 2 ** 64
    assert hamming(value, phash(recompressed(original, (64, 64), quality=60))) <= 4
    assert hamming(value, phash(original.resize((200, 200)))) <= 4


def test_different_images_are_far_apart():
    hashes = [phash(scene(seed)) for seed in range(6)]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distances) > 12


def test_hamming_counts_bits():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2 ** 64 - 1, 0) == 64


def test_find_duplicates_keeps_the_first_in_priority_order():
    hashes = [0b0000, 0b0001, 0b1111_0000_0000, 0b0011]
    found = find_duplicates(hashes, [0, 1, 2, 3], max_distance=1)
    assert [(d.index, d.of, d.distance) for d in found] == [(1, 0, 1)]
    # index 3 is 2 bits from 0 and 1 bit from 1, but 1 was dropped: it is compared with the kept ones only
    found = find_duplicates(hashes, [3, 1, 0, 2], max_distance=1)
    assert [(d.index, d.of) for d in found] == [(1, 3)]
    assert {d.index for d in find_duplicates(hashes, [0, 1, 2, 3], max_distance=2)} == {1, 3}


def test_find_duplicates_exact_threshold_and_64_bit_values():
    hashes = [2 ** 63 + 5, 2 ** 63 + 4, 7]
    assert [d.index for d in find_duplicates(hashes, [0, 1, 2], max_distance=0)] == []
    assert [(d.index, d.of, d.distance) for d in find_duplicates(hashes, [0, 1, 2], max_distance=1)] == [(1, 0, 1)]
