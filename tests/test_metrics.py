import numpy as np
import pytest

from trainer.metrics import continual, drift, ram, recall, sam_change


def normalised(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rotate_every_plane(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate each coordinate pair by the same angle: every vector turns by exactly `degrees`."""
    a = np.radians(degrees)
    out = x.copy()
    out[:, 0::2] = np.cos(a) * x[:, 0::2] - np.sin(a) * x[:, 1::2]
    out[:, 1::2] = np.sin(a) * x[:, 0::2] + np.cos(a) * x[:, 1::2]
    return out


@pytest.mark.parametrize("degrees", [3.0, 17.0, 40.0])
def test_known_rotation_gives_that_ram_and_no_sam_change(degrees):
    x = normalised(np.random.default_rng(0), 50, 16)
    y = rotate_every_plane(x, degrees)
    np.testing.assert_allclose(ram(x, y), degrees, atol=1e-5)
    assert sam_change(x, y).max() < 1e-4


def test_drift_histograms_put_a_known_rotation_in_its_bin():
    rng = np.random.default_rng(1)
    img, txt = normalised(rng, 40, 8), normalised(rng, 40, 8)
    d = drift((img, txt), (rotate_every_plane(img, 27.0), rotate_every_plane(txt, 12.0)))
    assert d["ram"]["image"]["counts"] == [0, 0, 0, 40, 0]  # [25, 30)
    assert d["ram"]["text"]["counts"] == [40, 0, 0, 0, 0]  # [0, 15)
    assert d["ram"]["image"]["mean"] == pytest.approx(27.0, abs=1e-4)
    assert d["sam_change"]["image"]["counts"][0] == 40 * 39 // 2
    assert d["inter_modal_deviation"] == pytest.approx(15.0, abs=1e-4)


def test_imav_measures_angle_change_of_correctly_retrieved_pairs():
    img = np.eye(4)
    txt = np.eye(4)
    after_txt = rotate_every_plane(txt, 10.0)
    d = drift((img, txt), (img, after_txt))
    assert d["imav"]["n"] == 4
    assert d["imav"]["mean"] == pytest.approx(10.0, abs=1e-5)


def test_recall_definitions():
    e = np.eye(5)
    perfect = recall(e, e)
    assert perfect["i2t"] == {"r1": 1.0, "r5": 1.0, "r10": 1.0}
    shifted = recall(e, np.roll(e, 1, axis=0))  # every image's best text is someone else's
    assert shifted["i2t"]["r1"] == 0.0 and shifted["t2i"]["r1"] == 0.0


def test_recall_at_k_counts_the_matches_ranked_above_k():
    n = 10
    sim = np.full((n, n), -1.0)
    for i in range(n):
        sim[i, [j for j in range(n) if j != i][:i]] = 1.0  # image i: exactly i texts outscore its own
        sim[i, i] = 0.0
    r = recall(np.eye(n), sim.T)  # image i . text j = sim[i, j]
    assert r["i2t"] == {"r1": 0.1, "r5": 0.5, "r10": 1.0}


def test_recall_counts_a_match_in_the_top_k():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    txt = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    r = recall(img, txt, ks=(1, 2))
    # image 0's best is text 1 (its match, text 0, ranks 3rd); image 2 matches itself
    assert r["i2t"]["r1"] == pytest.approx(1 / 3)
    assert r["i2t"]["r2"] == pytest.approx(1 / 3)


def test_continual_metrics():
    acc = np.array([[0.8, 0.1, 0.0], [0.5, 0.7, 0.1], [0.4, 0.6, 0.9]])
    m = continual(acc)
    assert m["average"] == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert m["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.7 - 0.6)) / 2)
    assert m["bwt"] == pytest.approx(((0.4 - 0.8) + (0.6 - 0.7)) / 2)


def test_collapsed_embeddings_score_chance_not_perfect():
    n = 20
    same = np.tile(np.array([[0.6, 0.8]]), (n, 1))  # every image and text is one vector: all scores tie
    r = recall(same, same)
    for direction in ("i2t", "t2i"):
        assert r[direction]["r1"] == pytest.approx(1 / n)
        assert r[direction]["r5"] == pytest.approx(5 / n)
        assert r[direction]["r10"] == pytest.approx(10 / n)


def test_a_tie_with_a_wrong_item_is_a_miss_half_the_time():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    r = recall(img, txt, ks=(1,))
    # image 0 retrieves text 0 alone; image 1 ties text 1 (its match) with nothing; image 2's
    # match scores 0 against text 1's 1: a miss. Texts 1 and 2 each tie images 1 and 2: half a hit.
    assert r["i2t"]["r1"] == pytest.approx(2 / 3)
    assert r["t2i"]["r1"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_identical_captions_all_count_as_correct():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    txt = np.array([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]])
    assert recall(img, txt, ks=(1,))["i2t"]["r1"] == pytest.approx(1 / 3)  # 0 and 1 swap their captions
    both = recall(img, txt, ks=(1,), captions=["a cat", "a cat", "a dog"])  # ... which are the same caption
    assert both["i2t"]["r1"] == pytest.approx(1.0) and both["t2i"]["r1"] == pytest.approx(1.0)
