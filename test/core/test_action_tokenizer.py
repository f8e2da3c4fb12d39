"""Action-bin mapping and un-normalization against hand-computed values."""

import numpy as np
import pytest

from kv_efficient_vla_ros.core.openvla.action_tokenizer import ActionStats, ActionTokenizer, UnnormKeyError

V = 32000


def test_bin_centers_by_hand():
    tok = ActionTokenizer(V, 256)
    # centers of linspace(-1, 1, 256) are -1 + (2i + 1) / 255
    ids = np.array([V - 1, V - 2, V - 128, V - 255, V - 256])
    expected = np.array([-1 + 1 / 255, -1 + 3 / 255, 0.0, 1 - 1 / 255, 1 - 1 / 255])  # V-256 clips to the last
    np.testing.assert_allclose(tok.token_ids_to_normalized(ids), expected, atol=1e-12)
    # ids below the action range clip to the last bin, as the official decode does
    np.testing.assert_allclose(tok.token_ids_to_normalized(np.array([5])), [1 - 1 / 255])


def test_tokenize_then_detokenize_stays_within_one_bin():
    tok = ActionTokenizer(V, 256)
    actions = np.linspace(-1, 1, 1001)
    back = tok.token_ids_to_normalized(tok.normalized_to_token_ids(actions))
    assert np.max(np.abs(back - actions)) <= 2 / 255 + 1e-12
    assert tok.normalized_to_token_ids(np.array([-1.0]))[0] == V - 1


def test_restricted_index_maps_to_the_last_256_ids():
    tok = ActionTokenizer(V, 256)
    assert tok.action_index_to_token_ids(np.array([0, 255])).tolist() == [V - 256, V - 1]


def test_unnormalize_by_hand():
    stats = ActionStats(q01=np.full(7, -0.5), q99=np.full(7, 1.5), mask=np.array([True] * 6 + [False]))
    a = np.array([0.0, -1.0, 1.0, 0.5, -0.5, 0.25, 0.3])
    # 0.5 * (a + 1) * 2.0 - 0.5 = a + 0.5 on masked dims; the gripper passes through
    np.testing.assert_allclose(stats.unnormalize(a), [0.5, -0.5, 1.5, 1.0, 0.0, 0.75, 0.3])


NORM_STATS = {
    "a": {"action": {"q01": [0.0] * 7, "q99": [2.0] * 7}},
    "b": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [False] * 7}},
}


def test_unnorm_key_selection():
    assert ActionStats.from_norm_stats(NORM_STATS, "a").mask.all()  # mask defaults to all true
    assert not ActionStats.from_norm_stats(NORM_STATS, "b").mask.any()
    only = ActionStats.from_norm_stats({"a": NORM_STATS["a"]}, None)
    np.testing.assert_allclose(only.q99, 2.0)


@pytest.mark.parametrize(("key", "message"), [(None, r"required.*\['a', 'b'\]"), ("c", r"'c' not found.*\['a', 'b'\]")])
def test_bad_unnorm_key_lists_the_keys(key, message):
    with pytest.raises(UnnormKeyError, match=message):
        ActionStats.from_norm_stats(NORM_STATS, key)


def test_bad_unnorm_key_through_the_policy(tiny_checkpoint):
    from kv_efficient_vla_ros.core.policy import OpenVLAPolicy

    with pytest.raises(UnnormKeyError, match="sim_panda_cued_place"):
        OpenVLAPolicy.from_checkpoint(tiny_checkpoint, unnorm_key="bridge_orig")
