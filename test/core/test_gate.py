"""The recurrent gate: state across ticks, GRU and LSTM, save/load, refusal of a foreign gate file."""

import json

import pytest
import torch

from kv_efficient_vla_ros.core.cache.gate import GateCheckpointError, GateConfig, RecurrentGate

CONFIG = GateConfig.for_model("gru", hidden=16, num_layers=4, kv_heads=4, head_dim=64)


def _gate(gate_type="gru"):
    torch.manual_seed(0)
    return RecurrentGate(GateConfig.for_model(gate_type, 16, 4, 4, 64)).eval()


def test_descriptor_reads_first_middle_last_layer():
    assert CONFIG.layers == (0, 2, 3) and CONFIG.descriptor_dim == 3 * 4 * 64


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
@torch.inference_mode()
def test_hidden_state_carries_across_ticks(gate_type):
    gate = _gate(gate_type)
    chunks = torch.randn(3, CONFIG.descriptor_dim, generator=torch.Generator().manual_seed(1))
    extras = torch.zeros(3, 2)
    fresh = gate.utilities(chunks, extras)
    assert fresh.shape == (3,) and bool(((fresh > 0) & (fresh < 1)).all())
    gate.observe(chunks[:1])
    after_one = gate.utilities(chunks, extras)
    gate.observe(chunks[1:2])
    after_two = gate.utilities(chunks, extras)
    assert not torch.allclose(fresh, after_one) and not torch.allclose(after_one, after_two)
    gate.reset_state()
    torch.testing.assert_close(gate.utilities(chunks, extras), fresh)


@torch.inference_mode()
def test_save_and_load_round_trip(tmp_path):
    gate = _gate("lstm")
    chunks = torch.randn(4, CONFIG.descriptor_dim)
    extras = torch.rand(4, 2)
    gate.observe(chunks[:2])
    expected = gate.utilities(chunks, extras)
    loaded = RecurrentGate.load(gate.save(tmp_path / "gate"), GateConfig.for_model("gru", 64, 4, 4, 64))
    assert loaded.config.gate_type == "lstm"  # the file decides the architecture
    loaded.observe(chunks[:2])
    torch.testing.assert_close(loaded.utilities(chunks, extras), expected)


def test_gate_for_another_model_is_refused(tmp_path):
    path = _gate().save(tmp_path / "gate")
    with pytest.raises(GateCheckpointError, match=r"this model gives 1536 from layers \[0, 4, 7\]"):
        RecurrentGate.load(path, GateConfig.for_model("gru", 16, 8, 8, 64))
    meta = json.loads((path / "gate.json").read_text())
    meta["hidden"] = 32
    (path / "gate.json").write_text(json.dumps(meta))
    with pytest.raises(GateCheckpointError, match=r"do not match gate\.json"):
        RecurrentGate.load(path)
    with pytest.raises(GateCheckpointError, match="not a gate checkpoint"):
        RecurrentGate.load(tmp_path / "nowhere")
