"""Cache mechanics without the model: RoPE re-rotation, summaries, slot reuse, budgets over 10,000 ticks."""

from dataclasses import dataclass, field

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from kv_efficient_vla_ros.core.cache import CacheConfig, ChunkedCache
from kv_efficient_vla_ros.core.cache.gate import GateConfig, RecurrentGate
from kv_efficient_vla_ros.core.cache.rope import RopeRotator
from kv_efficient_vla_ros.core.cache.storage import KEYS, VALUES, KVStorage
from kv_efficient_vla_ros.core.cache.strategies import Decision, GatedStrategy

LAYERS, HEADS, DIM = 2, 2, 16
FRAME, PROMPT = 16, 5
LLAMA = LlamaConfig(hidden_size=HEADS * DIM, num_attention_heads=HEADS, num_key_value_heads=HEADS)


ROTARY = LlamaRotaryEmbedding(LLAMA)
ROTATOR = RopeRotator(ROTARY)


def _rotary():
    return ROTARY


def _rope(keys, pos):
    cos, sin = _rotary()(keys, pos[None])
    return apply_rotary_pos_emb(keys, keys, cos, sin)[1]


def _rope64(keys, pos):
    """RoPE with exact (float64) angles."""
    angles = pos.double()[:, None] * _rotary().inv_freq.double()[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    half = keys.shape[-1] // 2
    rotated_half = torch.cat([-keys[..., half:], keys[..., :half]], dim=-1)
    return keys * angles.cos() + rotated_half * angles.sin()


@pytest.mark.parametrize(("p", "q"), [(5, 900), (900, 5), (12000, 3), (0, 30000)])
def test_rerotation_equals_encoding_at_the_new_position(p, q):
    raw = torch.randn(1, HEADS, 7, DIM, generator=torch.Generator().manual_seed(p), dtype=torch.float64)
    moved = RopeRotator(_rotary()).rotate(_rope64(raw, torch.arange(p, p + 7)), torch.full((7,), q - p))
    torch.testing.assert_close(moved, _rope64(raw, torch.arange(q, q + 7)), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("p", "q"), [(5, 900), (2000, 1), (1, 4000)])
def test_rerotation_matches_transformers_rope(p, q):
    """Against the model's own float32 RoPE (whose angles round by ~position * 6e-8 rad)."""
    raw = torch.randn(1, HEADS, 7, DIM, generator=torch.Generator().manual_seed(q))
    moved = RopeRotator(_rotary()).rotate(_rope(raw, torch.arange(p, p + 7)), torch.full((7,), q - p))
    torch.testing.assert_close(moved, _rope(raw, torch.arange(q, q + 7)), rtol=0, atol=2e-4)


def _cache(strategy="window", gate=None, max_next_position=None, **kwargs):
    kwargs = {"budget_tokens": 64, "recent_chunks": 2, "chunk_tokens": 8, "summary_tokens": 2} | kwargs
    config = CacheConfig.from_flat({"strategy": strategy, **kwargs})
    storage = KVStorage(LAYERS, 1, HEADS, DIM, capacity=1 + 64 + FRAME + PROMPT, dtype=torch.float32, device="cpu")
    strategy = config.build_strategy(gate)
    return ChunkedCache(config, storage, RopeRotator(_rotary()), FRAME, strategy, max_next_position)


def _ordered_positions(cache):
    return cache.storage.positions[cache.token_slots()]


def _append(cache, n, generator):
    positions = cache.reserve_positions(n)
    for layer in range(LAYERS):
        keys = ROTATOR.rotate(torch.randn(1, HEADS, n, DIM, generator=generator), positions)  # RoPE from 0
        cache.storage.write(layer, keys, torch.randn(1, HEADS, n, DIM, generator=generator))
    return positions


def _tick(cache, tick, generator, attention=False):
    """What the runner does to the cache in one tick, with random keys and values."""
    if cache.length == 0:
        _append(cache, 1, generator)  # BOS
    _append(cache, FRAME, generator)
    assert cache.tick == tick
    cache.add_frame()
    frame_end = cache.length
    _append(cache, PROMPT, generator)
    if attention:
        cache.observe_attention(torch.rand(frame_end, generator=generator))
    cache.crop(frame_end - cache.length)
    return cache.end_tick()


def _small_gate():
    torch.manual_seed(0)
    return RecurrentGate(GateConfig.for_model("gru", 8, LAYERS, HEADS, DIM)).eval()


@pytest.mark.parametrize("rope_compact", [True, False])
@pytest.mark.parametrize("strategy", ["window", "sink_window", "attention", "random", "gated", "none"])
def test_budget_and_positions_hold_tick_after_tick(strategy, rope_compact):
    """10,000 ticks with rope_compact (the default), 2,000 without (compaction comes every ~15 ticks)."""
    gate = _small_gate() if strategy == "gated" else None
    ticks = 10_000 if rope_compact else 2_000
    # thresholds around the untrained gate's ~0.5 utilities so that it keeps, summarizes and drops
    max_next = 300
    cache = _cache(strategy, gate, max_next, keep_threshold=0.52, summary_threshold=0.48, rope_compact=rope_compact)
    capacity = cache.storage.capacity
    generator = torch.Generator().manual_seed(0)
    decisions = {"kept": 0, "summarized": 0, "dropped": 0}
    for tick in range(ticks):
        report = _tick(cache, tick, generator, attention=strategy == "attention")
        for k in decisions:
            decisions[k] += getattr(report, k)
        assert cache.history_tokens <= cache.config.budget_tokens
        assert cache.length == 1 + cache.history_tokens
        assert cache.next_position <= max_next  # the next tick's positions start at or below the limit
        slots, positions = cache.token_slots(), _ordered_positions(cache)
        assert torch.equal(slots.sort().values, torch.arange(cache.length))  # dense: every slot below length used
        assert bool((positions.diff() > 0).all())  # temporal order is position order
        if rope_compact:
            assert bool((positions.diff() == 1).all())  # gap-free
    assert cache.storage.capacity == capacity  # never reallocated: KV bytes are bounded
    assert decisions["dropped"] > 0
    if strategy == "none":
        assert cache.compactions == 0  # positions restart after BOS every tick
    else:
        assert 0 < cache.compactions < ticks / 5  # compacted when the limit nears, not every tick
    if strategy == "gated":
        assert decisions["summarized"] > 0 and decisions["kept"] > 0


def _tagged_tick(cache, tick, generator, raw_keys):
    """A tick whose tokens carry their serial number in value element 0; their un-rotated keys go to ``raw_keys``."""

    def append(n):
        positions = cache.reserve_positions(n)
        serial = torch.arange(len(raw_keys), len(raw_keys) + n, dtype=torch.float32)
        raw = torch.randn(LAYERS, 1, HEADS, n, DIM, generator=generator)
        values = torch.randn(LAYERS, 1, HEADS, n, DIM, generator=generator)
        values[..., 0] = serial
        for layer in range(LAYERS):
            cache.storage.write(layer, ROTATOR.rotate(raw[layer], positions), values[layer])
        raw_keys.extend(raw.unbind(3))

    if cache.length == 0:
        append(1)
    append(FRAME)
    cache.add_frame()
    frame_end = cache.length
    append(PROMPT)
    cache.crop(frame_end - cache.length)
    return cache.end_tick()


@pytest.mark.parametrize("rope_compact", [True, False])
@pytest.mark.parametrize("strategy", ["window", "random", "gated"])
def test_every_kept_token_keeps_its_value_and_its_key_at_its_position(strategy, rope_compact):
    """Slot reuse, re-rotation and compaction, token by token: each verbatim chunk still holds its own
    tokens, in order, and each key equals its raw key encoded at the position its slot records."""
    gate = _small_gate() if strategy == "gated" else None
    cache = _cache(strategy, gate, 120, keep_threshold=0.52, summary_threshold=0.48, rope_compact=rope_compact)
    generator = torch.Generator().manual_seed(5)
    raw_keys, serials = [], {}
    for tick in range(60):
        _tagged_tick(cache, tick, generator, raw_keys)
        buffer, positions = cache.storage.buffer, cache.storage.positions
        for chunk in cache.chunks:
            values = buffer[:, VALUES, :, :, chunk.slots, 0]
            serials.setdefault(chunk.id, values[0, 0, 0].clone())
            if chunk.summarized:
                continue
            assert torch.equal(values, serials[chunk.id].expand_as(values))
            raw = torch.stack([raw_keys[int(i)] for i in serials[chunk.id]], dim=3)
            torch.testing.assert_close(
                buffer[:, KEYS, :, :, chunk.slots], ROTATOR.rotate(raw, positions[chunk.slots]), rtol=0, atol=1e-5
            )
    assert cache.compactions > 0 and len(serials) > len(cache.chunks)  # compacted and evicted along the way


def test_positions_grow_without_rope_compact():
    cache = _cache("window", rope_compact=False)
    generator = torch.Generator().manual_seed(0)
    for tick in range(50):
        _tick(cache, tick, generator)
    assert cache.max_position == 50 * FRAME  # encode-time positions are kept
    assert cache.history_tokens <= 64
    assert cache.compactions == 0


@dataclass
class FixedDecisions(GatedStrategy):
    """The gated strategy with its decisions fixed by the test, to pin what each decision does."""

    plan: dict = field(default_factory=dict)

    def decide(self, candidates, utilities):
        return [self.plan.get(c.id, Decision.KEEP) for c in candidates]


@pytest.mark.parametrize("rope_compact", [False, True])
def test_summary_tokens_are_group_means_at_the_group_position(rope_compact):
    gate = _small_gate()
    cache = _cache("gated", gate, rope_compact=rope_compact, chunk_tokens=8, summary_tokens=3, budget_tokens=64)
    cache.strategy = FixedDecisions(gate=gate, plan={1: Decision.SUMMARIZE, 2: Decision.DROP})
    generator = torch.Generator().manual_seed(1)
    _tick(cache, 0, generator)  # chunks 0, 1
    before = cache.storage.live().clone()
    positions = cache.storage.positions[: cache.length].clone()
    _tick(cache, 1, generator)  # chunks 2, 3 arrive; chunk 1 is summarized, chunk 2 dropped... no: 2 is recent
    # chunks 2 and 3 are the recent window at tick 1, so only chunk 1 was judged
    assert [c.id for c in cache.chunks] == [0, 1, 2, 3] and cache.chunks[1].summarized

    rotator = RopeRotator(_rotary())
    chunk = slice(1 + 8, 1 + 16)  # chunk 1 followed BOS and chunk 0
    groups = [[0, 1], [2, 3, 4], [5, 6, 7]]  # floor(g * 8 / 3) boundaries
    summary = cache.chunks[1]
    assert summary.slots.tolist() == [9, 10, 11]  # the summary took its chunk's first slots
    for g, members in enumerate(groups):
        idx = torch.tensor(members) + chunk.start
        raw_keys = rotator.rotate(before[:, KEYS, :, :, idx], -positions[idx])
        position = int(positions[idx].sum()) // len(members)
        expected_key = rotator.rotate(raw_keys.mean(dim=3, keepdim=True), torch.tensor([position]))
        expected_value = before[:, VALUES, :, :, idx].mean(dim=3, keepdim=True)
        slot = int(summary.slots[g])
        got_position = int(cache.storage.positions[slot])
        got_key = cache.storage.buffer[:, KEYS, :, :, slot : slot + 1]
        if rope_compact:  # gap-free: the summary's tokens follow chunk 0's last token
            assert got_position == int(cache.storage.positions[cache.chunks[0].slots[-1]]) + 1 + g
            expected_key = rotator.rotate(expected_key, torch.tensor([got_position - position]))
        else:
            assert got_position == position
        torch.testing.assert_close(got_key, expected_key, rtol=0, atol=1e-5)
        torch.testing.assert_close(cache.storage.buffer[:, VALUES, :, :, slot : slot + 1], expected_value)
    assert cache.length == 1 + 8 + 3 + 16


def test_dropping_moves_only_the_tail_into_the_freed_slots():
    gate = _small_gate()
    cache = _cache("gated", gate, rope_compact=False)
    cache.strategy = FixedDecisions(gate=gate, plan={0: Decision.DROP})
    generator = torch.Generator().manual_seed(2)
    _tick(cache, 0, generator)
    before = cache.storage.buffer.clone()
    _tick(cache, 1, generator)  # chunk 0 (slots 1-8) is dropped; chunks 2 and 3 arrived at slots 17-32
    assert [c.id for c in cache.chunks] == [1, 2, 3]
    after = cache.storage.buffer
    assert torch.equal(after[..., :1, :], before[..., :1, :])  # BOS
    assert torch.equal(after[..., 9:17, :], before[..., 9:17, :])  # chunk 1 untouched
    assert [c.slots.tolist() for c in cache.chunks] == [list(range(9, 17)), list(range(17, 25)), list(range(1, 9))]
    assert cache.storage.positions[1:9].tolist() == list(range(FRAME + 9, FRAME + 17))  # chunk 3 moved, not re-rotated
    assert cache.length == 25


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match="budget_tokens"):
        CacheConfig(strategy="window", budget_tokens=100, recent_chunks=2).validate(256)
    with pytest.raises(ValueError, match="chunk_tokens"):
        CacheConfig(chunk_tokens=100).validate(256)
    with pytest.raises(ValueError, match="strategy"):
        CacheConfig(strategy="lru").validate(256)
    with pytest.raises(ValueError, match="summary_tokens=16"):
        CacheConfig(strategy="gated", chunk_tokens=16, summary_tokens=16).validate(256)
    CacheConfig(strategy="window", chunk_tokens=16, summary_tokens=16).validate(256)  # never summarizes
    with pytest.raises(ValueError, match="summary_threshold"):
        CacheConfig(options={"keep_threshold": 0.2, "summary_threshold": 0.5}).validate(256)


def test_crop_never_cuts_into_the_history():
    cache = _cache("window")
    _tick(cache, 0, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="crop"):
        cache.crop(-1)


def test_restore_after_a_failed_rebuild_starts_a_new_episode(caplog):
    class BrokenRotator:
        def rotate(self, keys, delta):
            raise RuntimeError("rotation failed")

    cache = _cache("window")
    generator = torch.Generator().manual_seed(4)
    for tick in range(6):
        _tick(cache, tick, generator)
    snapshot = cache.snapshot()
    cache.rotator = BrokenRotator()  # the next eviction re-rotates, and fails half-way through the rebuild
    with pytest.raises(RuntimeError, match="rotation failed"):
        _tick(cache, 6, generator)
    cache.restore(snapshot)
    assert cache.length == 0 and cache.chunks == [] and cache.tick == 0 and cache.next_chunk_id == 0
    assert "starting a new episode" in caplog.text
