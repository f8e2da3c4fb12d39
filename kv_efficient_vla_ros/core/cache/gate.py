"""The recurrent gate of KV-Efficient VLA: chunk descriptors in, a utility in [0, 1] per chunk out.

Each chunk gets a descriptor when it enters the cache (mean value vector at a few layers: cheap, and
independent of RoPE positions, so re-rotation never invalidates it). The RNN (GRU or LSTM cell)
consumes descriptors in temporal order and keeps its hidden state across ticks; the utility head
reads a candidate chunk's encoded descriptor, the current hidden state, and the chunk's age.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

GATE_FORMAT_VERSION = 1
GATE_TYPES = ("gru", "lstm")
EXTRA_FEATURES = 2  # age in ticks / AGE_SCALE, summarized flag
AGE_SCALE = 32.0


def descriptor_layers(num_layers: int) -> list[int]:
    """First, middle and last layer: early layers see pixels, late ones what the action head reads."""
    return sorted({0, num_layers // 2, num_layers - 1})


@dataclass(frozen=True)
class GateConfig:
    gate_type: str  # gru | lstm
    hidden: int
    descriptor_dim: int
    layers: tuple[int, ...]

    @classmethod
    def for_model(cls, gate_type: str, hidden: int, num_layers: int, kv_heads: int, head_dim: int) -> GateConfig:
        layers = tuple(descriptor_layers(num_layers))
        return cls(gate_type, hidden, len(layers) * kv_heads * head_dim, layers)


def extra_features(ages: list[float], summarized: list[bool]) -> torch.Tensor:
    """``[m, EXTRA_FEATURES]``: each candidate's age in ticks (scaled) and whether it is a summary."""
    return torch.tensor([[age / AGE_SCALE, float(s)] for age, s in zip(ages, summarized, strict=True)])


class GateCheckpointError(ValueError):
    """A gate file that does not fit the model it is loaded for."""


class RecurrentGate(nn.Module):
    def __init__(self, config: GateConfig):
        super().__init__()
        if config.gate_type not in GATE_TYPES:
            raise ValueError(f"gate_type {config.gate_type!r}: expected one of {GATE_TYPES}")
        self.config = config
        h = config.hidden
        self.encoder = nn.Sequential(
            nn.LayerNorm(config.descriptor_dim), nn.Linear(config.descriptor_dim, h), nn.GELU()
        )
        self.cell = nn.GRUCell(h, h) if config.gate_type == "gru" else nn.LSTMCell(h, h)
        self.head = nn.Sequential(nn.Linear(2 * h + EXTRA_FEATURES, h), nn.GELU(), nn.Linear(h, 1))
        self.state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None

    def reset_state(self) -> None:
        self.state = None

    def hidden_vector(self) -> torch.Tensor:
        if self.state is None:
            return torch.zeros(self.config.hidden, device=self.head[0].weight.device)
        h = self.state[0] if isinstance(self.state, tuple) else self.state
        return h[0]

    def observe(self, descriptors: torch.Tensor) -> None:
        """Advance the hidden state over new chunks' descriptors ``[n, descriptor_dim]``, oldest first."""
        encoded = self.encoder(descriptors)
        for row in encoded:
            self.state = self.cell(row[None], self.state)

    def utilities(self, descriptors: torch.Tensor, extras: torch.Tensor) -> torch.Tensor:
        """Utility in [0, 1] of each candidate chunk: ``[m, descriptor_dim]``, ``[m, 2]`` -> ``[m]``."""
        encoded = self.encoder(descriptors)
        hidden = self.hidden_vector().expand(len(encoded), -1)
        return torch.sigmoid(self.head(torch.cat([encoded, hidden, extras], dim=-1))).squeeze(-1)

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / "gate.safetensors"))
        meta = {"format_version": GATE_FORMAT_VERSION, **asdict(self.config)}
        (out / "gate.json").write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, expected: GateConfig | None = None) -> RecurrentGate:
        """Load a saved gate; with ``expected``, refuse one built for another model's dimensions."""
        path = Path(directory)
        try:
            meta = json.loads((path / "gate.json").read_text())
            weights = load_file(str(path / "gate.safetensors"))
        except (OSError, json.JSONDecodeError) as err:
            raise GateCheckpointError(f"{path}: not a gate checkpoint ({err})") from err
        if meta.pop("format_version", None) != GATE_FORMAT_VERSION:
            raise GateCheckpointError(f"{path}: gate format is not version {GATE_FORMAT_VERSION}")
        config = GateConfig(meta["gate_type"], meta["hidden"], meta["descriptor_dim"], tuple(meta["layers"]))
        if expected is not None and (config.descriptor_dim, config.layers) != (
            expected.descriptor_dim,
            expected.layers,
        ):
            raise GateCheckpointError(
                f"{path}: gate reads descriptors of {config.descriptor_dim} values from layers {list(config.layers)}, "
                f"this model gives {expected.descriptor_dim} from layers {list(expected.layers)}"
            )
        gate = cls(config)
        try:
            gate.load_state_dict(weights)
        except RuntimeError as err:
            raise GateCheckpointError(f"{path}: weights do not match gate.json ({err})") from err
        return gate.eval()


def gate_for_model(
    gate_type: str, hidden: int, checkpoint: str, seed: int, num_layers: int, kv_heads: int, head_dim: int
) -> RecurrentGate:
    """The gate saved in ``checkpoint`` (refused if built for other dimensions), or a seeded untrained one."""
    expected = GateConfig.for_model(gate_type, hidden, num_layers, kv_heads, head_dim)
    if checkpoint:
        return RecurrentGate.load(checkpoint, expected)
    torch.manual_seed(seed)
    return RecurrentGate(expected).eval()
