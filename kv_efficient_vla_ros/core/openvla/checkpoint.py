"""Load an OpenVLA-format checkpoint directory (sharded or single safetensors) into :class:`OpenVLAModel`.

Every tensor the config implies is checked by name and shape before anything is loaded, so a
checkpoint that does not match its config fails with the first offending key, not deep in a forward.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.initialization import no_init_weights

from .config import CheckpointError, OpenVLAConfig
from .modeling import OpenVLAModel
from .weight_map import UNUSED, TensorRule, official_rules

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def checkpoint_files(checkpoint_dir: Path) -> dict[str, Path]:
    """Official key -> the safetensors file holding it."""
    index = checkpoint_dir / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {key: checkpoint_dir / name for key, name in weight_map.items()}
        for path in sorted(set(files.values())):
            if not path.is_file():
                raise CheckpointError(f"{index.name} names shard {path.name}, which is missing")
        return files
    single = checkpoint_dir / SINGLE_FILE
    candidates = [single] if single.is_file() else sorted(checkpoint_dir.glob("*.safetensors"))
    if len(candidates) != 1:
        raise CheckpointError(
            f"{checkpoint_dir}: expected {INDEX_FILE} or exactly one *.safetensors file, found {len(candidates)}"
        )
    with safe_open(str(candidates[0]), framework="pt") as f:
        return {key: candidates[0] for key in f.keys()}


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def load_official_tensors(
    model: torch.nn.Module, rules: list[TensorRule], get_tensor: Callable[[str], torch.Tensor]
) -> set[str]:
    """Copy official tensors into ``model`` through ``rules``; returns the parameter names written."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for rule in rules:
        if rule.conversion is UNUSED:
            continue
        for target, value in zip(rule.targets, rule.conversion.to_model(get_tensor(rule.official)), strict=True):
            params[target].copy_(value)
            loaded.add(target)
    return loaded


def load_model(
    checkpoint_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> OpenVLAModel:
    checkpoint_dir = Path(checkpoint_dir)
    config = OpenVLAConfig.from_checkpoint(checkpoint_dir)
    files = checkpoint_files(checkpoint_dir)
    rules = official_rules(config)

    expected = {rule.official for rule in rules}
    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())}
        for rule in rules:
            if rule.official not in files:
                raise CheckpointError(f"checkpoint lacks tensor {rule.official!r} that the config implies")
            shape = tuple(handles[files[rule.official]].get_slice(rule.official).get_shape())
            if shape != rule.shape:
                raise CheckpointError(
                    f"tensor {rule.official!r} has shape {list(shape)} but config.json implies {list(rule.shape)}"
                )
        unexpected = sorted(set(files) - expected)
        if unexpected:
            raise CheckpointError(
                f"checkpoint holds tensor {unexpected[0]!r} that config.json does not imply "
                f"({len(unexpected)} unexpected in all)"
            )

        # Allocate without random init: every parameter below is overwritten from the file.
        with no_init_weights(), default_dtype(dtype), torch.device(device):
            model = OpenVLAModel(config, attn_implementation=attn_implementation)
        loaded = load_official_tensors(model, rules, lambda key: handles[files[key]].get_tensor(key))

    # DINOv2's mask_token only serves masked pre-training; zero it rather than leave memory uninitialized.
    for name, param in model.named_parameters():
        if name.endswith("embeddings.mask_token"):
            param.data.zero_()
            loaded.add(name)
    unloaded = sorted({name for name, _ in model.named_parameters()} - loaded)
    if unloaded:  # a gap in the weight map, not in the file
        raise RuntimeError(f"weight map leaves parameter {unloaded[0]!r} unloaded")
    return model.eval()
