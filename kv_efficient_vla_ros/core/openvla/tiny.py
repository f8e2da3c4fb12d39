"""Write a tiny OpenVLA checkpoint: the official files, field names and key names, with small dimensions.

A 7B checkpoint cannot be fetched here, so the tiny one is what every default path loads; it goes
through exactly the loader a real checkpoint does. Same seed, same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .config import VISION_BACKBONES, OpenVLAConfig
from .modeling import OpenVLAModel
from .weight_map import UNUSED, official_rules

logger = logging.getLogger(__name__)

TINY_FORMAT_VERSION = 1  # bump when the bytes a given seed writes change


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of a tiny checkpoint; defaults give the project's embedded default model."""

    vision_backbone_id: str = "tiny-dinosiglip-224px"
    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    text_vocab_size: int = 32000  # Llama 2's, so the output layer weighs what it does in OpenVLA
    max_position_embeddings: int = 32768
    # With Llama's usual 0.02, a random LM emits one token whatever it sees; 0.1 keeps a random model's
    # actions input-dependent, which the cache comparisons need. Models to be trained start from 0.02.
    initializer_range: float = 0.1
    seed: int = 0


# Two datasets' statistics (the official norm_stats layout), so that choosing an unnorm_key matters.
TINY_NORM_STATS = {
    "sim_panda_lift": {
        "action": {
            "q01": [-0.5, -0.5, -0.5, -0.25, -0.25, -0.25, -1.0],
            "q99": [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
    "sim_panda_cued_place": {
        "action": {
            "q01": [-0.75, -0.75, -0.5, -0.2, -0.2, -0.4, -1.0],
            "q99": [0.75, 0.75, 0.5, 0.2, 0.2, 0.4, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
}

_WORDS = (
    "pick up place put the a red green blue yellow cube block bowl plate drawer open close lift push "
    "move left right top bottom of on in into onto and then robot gripper object table cup mug stack "
    "first second where cue was shown black white small large near far front back slowly carefully"
).split()


def _tokenizer_corpus(rng: random.Random) -> list[str]:
    lines = [
        f"In: What action should the robot take to {' '.join(rng.choices(_WORDS, k=rng.randint(2, 9)))}?\nOut:"
        for _ in range(4000)
    ]
    letters = "abcdefghijklmnopqrstuvwxyz"
    # Pseudo-words give the BPE trainer enough distinct merges to fill a Llama-sized vocabulary.
    filler = ["".join(rng.choices(letters, k=rng.randint(2, 12))) for _ in range(60000)]
    return lines + [" ".join(filler[i : i + 500]) for i in range(0, len(filler), 500)]


def build_tokenizer(text_vocab_size: int, seed: int) -> PreTrainedTokenizerFast:
    """A Llama-style BPE (SentencePiece word marks, byte fallback, BOS prepended, <PAD> after the vocab)."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first")]
    )
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=text_vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(random.Random(seed)), trainer)
    if tokenizer.get_vocab_size() != text_vocab_size:
        raise RuntimeError(f"tokenizer training gave {tokenizer.get_vocab_size()} tokens, wanted {text_vocab_size}")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<PAD>"
    )
    if wrapped.pad_token_id != text_vocab_size:
        raise RuntimeError(f"<PAD> got id {wrapped.pad_token_id}, expected {text_vocab_size}")
    return wrapped


def tiny_config_dict(spec: TinySpec) -> dict:
    specs = VISION_BACKBONES[spec.vision_backbone_id]
    fused = len(specs) == 2
    pad_to = 64
    vocab = -(-(spec.text_vocab_size + 1) // pad_to) * pad_to  # text + <PAD>, rounded up like the official
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": spec.vision_backbone_id,
        "llm_backbone_id": "tiny-llama",
        "arch_specifier": "no-align+fused-gelu-mlp" if fused else "no-align+gelu-mlp",
        "use_fused_vision_backbone": fused,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [s.image_size for s in specs],
        "timm_model_ids": [f"tiny_vit_{s.family}" for s in specs],
        "timm_override_act_layers": [None] * len(specs),
        "n_action_bins": 256,
        "pad_to_multiple_of": pad_to,
        "pad_token_id": spec.text_vocab_size,
        "llm_max_length": spec.max_position_embeddings,
        "output_projector_states": False,
        "norm_stats": TINY_NORM_STATS,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "llama",
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_layers,
            "num_attention_heads": spec.num_heads,
            "num_key_value_heads": spec.num_kv_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rms_norm_eps": 1e-6,
            "initializer_range": spec.initializer_range,
            "vocab_size": vocab,
            "pad_token_id": spec.text_vocab_size,
            "torch_dtype": "float32",
        },
    }


def official_state_dict(model: OpenVLAModel) -> dict[str, torch.Tensor]:
    """The model's weights under official key names; tensors the model never reads are seeded noise."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1234)
    state = {}
    for rule in official_rules(model.config):
        if rule.conversion is UNUSED:
            tensor = 0.02 * torch.randn(rule.shape, generator=generator)
        else:
            tensor = rule.conversion.to_official(tuple(params[t].detach() for t in rule.targets))
        state[rule.official] = tensor.contiguous().clone()
    return state


def _save_shards(state: dict[str, torch.Tensor], out: Path, shard_bytes: int | None) -> None:
    if shard_bytes is None:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def save_checkpoint(
    out_dir: str | Path,
    model: OpenVLAModel,
    tokenizer: PreTrainedTokenizerFast,
    raw_config: dict,
    shard_bytes: int | None = None,
) -> Path:
    """Write ``model`` in the official layout (safetensors with official keys, tokenizer, config.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a checkpoint")
    _save_shards(official_state_dict(model), out, shard_bytes)
    tokenizer.save_pretrained(str(out))
    (out / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n")
    return out


def build_tiny_model(spec: TinySpec = TinySpec()) -> tuple[OpenVLAModel, PreTrainedTokenizerFast, dict]:
    """A seeded tiny model, its tokenizer and its official config dict."""
    raw = tiny_config_dict(spec)
    torch.manual_seed(spec.seed)
    return OpenVLAModel(OpenVLAConfig.from_dict(raw)), build_tokenizer(spec.text_vocab_size, spec.seed), raw


def write_tiny_checkpoint(out_dir: str | Path, spec: TinySpec = TinySpec(), shard_bytes: int | None = None) -> Path:
    """Write the checkpoint into ``out_dir`` (created; must not hold a checkpoint already)."""
    if (Path(out_dir) / "config.json").exists():
        raise FileExistsError(f"{out_dir} already holds a checkpoint")
    return save_checkpoint(out_dir, *build_tiny_model(spec), shard_bytes)


def default_checkpoint_dir() -> Path:
    """Where the embedded default lives: ``$KV_VLA_TINY_CHECKPOINT`` or the user cache."""
    env = os.environ.get("KV_VLA_TINY_CHECKPOINT")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kv_efficient_vla_ros" / f"tiny-openvla-v{TINY_FORMAT_VERSION}-seed{TinySpec().seed}"


def ensure_default_checkpoint() -> Path:
    """The embedded default checkpoint, written on first use (atomically: nodes may start together)."""
    target = default_checkpoint_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("writing the embedded tiny checkpoint to %s (first use)", target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        write_tiny_checkpoint(staging)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
