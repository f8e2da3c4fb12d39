"""EfficientVLA's LLM layer pruning (arXiv 2506.10100): drop the layers that change the hidden state least.

A layer's importance is ``1 - cos(h_in, h_out)`` between the hidden state entering and leaving it,
averaged over the tokens of calibration ticks (``[BOS] [frame] [prompt]``, as a tick without history
feeds them) from recorded episodes of the task. ``kv-vla-calibrate-layers`` writes the importances; a
policy then runs without the ``prune_layers`` least important ones (:func:`pruned_policy`). Training-free:
the kept layers' weights are unchanged, and the KV cache shrinks with the layer count.

The pruned model is a view: it shares every module and weight with the full one and owns only its layer
list, its attention modules' cache indices and its config, so both can run in one process (a benchmark
row with pruning beside one without).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..openvla.generation import positions
from ..openvla.modeling import OpenVLAModel
from ..policy import OpenVLAPolicy


@torch.inference_mode()
def layer_importance(policy: OpenVLAPolicy, frames: Sequence[np.ndarray], instruction: str) -> list[float]:
    """``1 - cos(h_in, h_out)`` of every LLM layer, averaged over the tokens of each frame's tick."""
    model = policy.model
    layers = model.language_model.model.layers
    totals = torch.zeros(len(layers), dtype=torch.float64)
    tokens = 0

    def hook(index: int):
        def record(module, args, kwargs, output):
            entering = kwargs.get("hidden_states", args[0] if args else None)
            leaving = output[0] if isinstance(output, tuple) else output
            cosine = nn.functional.cosine_similarity(entering.float(), leaving.float(), dim=-1)
            totals[index] += float((1 - cosine).sum())

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        bos, prompt = policy.prompt_embeddings(instruction)
        for frame in tqdm(frames, desc="calibrating layers", leave=False):
            patches = model.embed_image(policy.image_processor(frame).to(model.device))
            embeds = torch.cat([bos, patches, prompt], dim=1)
            model.hidden_states(embeds, positions(0, embeds.shape[1], embeds.device), None)
            tokens += embeds.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return (totals / tokens).tolist()


def save_importance(path: str | Path, importance: list[float], checkpoint: str, source: str) -> None:
    order = sorted(range(len(importance)), key=importance.__getitem__)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": checkpoint, "calibration": source, "importance": importance, "least_important_first": order}
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def layers_to_drop(importance_file: str | Path, count: int, num_layers: int) -> list[int]:
    """The ``count`` least important layers by a calibration file written for a model of ``num_layers``."""
    record = json.loads(Path(importance_file).read_text())
    if len(record["importance"]) != num_layers:
        raise ValueError(
            f"layer_importance {importance_file} was calibrated for {len(record['importance'])} LLM layers, "
            f"the model has {num_layers}: run kv-vla-calibrate-layers for this checkpoint"
        )
    if not 0 <= count < num_layers:
        raise ValueError(f"prune_layers={count} must lie in [0, {num_layers - 1}]")
    return sorted(record["least_important_first"][:count])


def _own_children(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` with its own child table and hooks; parameters and buffers stay shared."""
    view = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, dict) and name not in ("_parameters", "_buffers"):
            setattr(view, name, type(value)(value))
    return view


def pruned_model(model: OpenVLAModel, drop: Sequence[int]) -> OpenVLAModel:
    """``model`` without the LLM layers ``drop``, sharing every weight with it (``model`` is left as it was)."""
    text = model.config.text_config
    keep = [i for i in range(text.num_hidden_layers) if i not in set(drop)]
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = len(keep)
    if getattr(config.text_config, "layer_types", None):
        config.text_config.layer_types = [config.text_config.layer_types[i] for i in keep]
    layers = []
    for index, old in enumerate(keep):
        layer = _own_children(model.language_model.model.layers[old])
        layer.self_attn = _own_children(layer.self_attn)
        layer.self_attn.layer_idx = index  # the cache layer it writes
        layers.append(layer)
    llm = _own_children(model.language_model.model)
    llm.layers, llm.config = nn.ModuleList(layers), config.text_config
    language_model = _own_children(model.language_model)
    language_model.model, language_model.config = llm, config.text_config
    view = _own_children(model)
    view.language_model, view.config = language_model, config
    return view


def pruned_policy(policy: OpenVLAPolicy, drop: Sequence[int]) -> OpenVLAPolicy:
    """``policy`` running :func:`pruned_model` (same tokenizers, processor and action statistics)."""
    return OpenVLAPolicy(pruned_model(policy.model, drop), policy.prompt_tokenizer, policy.action_stats)
