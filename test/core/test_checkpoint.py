"""The tiny checkpoint: official layout, exact round trip, and loud failures on mismatches."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kv_efficient_vla_ros.core.openvla.checkpoint import checkpoint_files, load_model
from kv_efficient_vla_ros.core.openvla.config import CheckpointError, OpenVLAConfig
from kv_efficient_vla_ros.core.openvla.processor import PromptTokenizer, check_tokenizer_fits
from kv_efficient_vla_ros.core.openvla.tiny import TinySpec, build_tokenizer, write_tiny_checkpoint
from kv_efficient_vla_ros.core.openvla.weight_map import UNUSED, official_rules
from kv_efficient_vla_ros.core.policy import OpenVLAPolicy
from kv_efficient_vla_ros.core.synthetic import synthetic_frames

OFFICIAL_KEY = re.compile(
    r"^(vision_backbone\.(featurizer|fused_featurizer)\."
    r"(cls_token|reg_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|blocks\.\d+\.ls[12]\.scale_factor|attn_pool\.[a-z0-9_.]+)"
    r"|projector\.fc[123]\.(weight|bias)"
    r"|language_model\.(lm_head\.weight|model\.(embed_tokens|norm)\.weight"
    r"|model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj|input_layernorm"
    r"|post_attention_layernorm)\.weight))$"
)


def _file_tensors(checkpoint):
    return {key: load_file(str(path))[key] for key, path in checkpoint_files(checkpoint).items()}


def _copy_with_tensors(src, dst, tensors):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_keys_follow_the_official_pattern(tiny_checkpoint):
    keys = set(checkpoint_files(tiny_checkpoint))
    bad = sorted(k for k in keys if not OFFICIAL_KEY.match(k))
    assert not bad, bad[:5]
    assert not any("gamma" in k for k in keys)  # LayerScale is stored as scale_factor
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in keys
    assert "vision_backbone.featurizer.reg_token" in keys
    assert "vision_backbone.fused_featurizer.attn_pool.latent" in keys
    assert "language_model.lm_head.weight" in keys
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    for field in (
        "vision_backbone_id",
        "llm_backbone_id",
        "arch_specifier",
        "use_fused_vision_backbone",
        "image_resize_strategy",
        "text_config",
        "n_action_bins",
        "norm_stats",
        "pad_to_multiple_of",
    ):
        assert field in config
    assert len(config["norm_stats"]) >= 2


def test_round_trip_is_exact(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    params = dict(model.named_parameters())
    file_tensors = _file_tensors(tiny_checkpoint)
    for rule in official_rules(model.config):
        if rule.conversion is UNUSED:
            continue
        back = rule.conversion.to_official(tuple(params[t].detach() for t in rule.targets))
        assert torch.equal(back, file_tensors[rule.official]), rule.official
    # the fused qkv really is split q, k, v in that order
    qkv = file_tensors["vision_backbone.featurizer.blocks.0.attn.qkv.weight"]
    d = qkv.shape[1]
    assert torch.equal(params["vision_backbone.featurizer.encoder.layer.0.attention.k_proj.weight"], qkv[d : 2 * d])


def test_same_seed_writes_same_bytes(tiny_checkpoint, tmp_path):
    again = write_tiny_checkpoint(tmp_path / "again")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        a = hashlib.sha256((tiny_checkpoint / name).read_bytes()).hexdigest()
        b = hashlib.sha256((again / name).read_bytes()).hexdigest()
        assert a == b, name


def test_sharded_checkpoint_loads_the_same_model(tiny_checkpoint, tmp_path):
    sharded = write_tiny_checkpoint(tmp_path / "sharded", shard_bytes=8 * 2**20)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    a, b = load_model(tiny_checkpoint), load_model(sharded)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_loaded_policy_is_deterministic(tiny_checkpoint, tiny_policy):
    other = OpenVLAPolicy.from_checkpoint(tiny_checkpoint, unnorm_key="sim_panda_lift")
    frames = synthetic_frames(3)
    for frame in frames:
        a = tiny_policy.predict(frame, "lift the red cube")
        b = other.predict(frame, "lift the red cube")
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
    # and the actions depend on the input (a degenerate random model would not be worth testing on)
    outputs = {tuple(tiny_policy.predict(f, "lift the red cube").token_ids) for f in synthetic_frames(6, seed=3)}
    assert len(outputs) > 1


def test_shape_mismatch_names_the_first_key(tiny_checkpoint, tmp_path):
    tensors = _file_tensors(tiny_checkpoint)
    tensors["projector.fc2.weight"] = tensors["projector.fc2.weight"][:, :-1].contiguous()
    tensors["language_model.model.norm.weight"] = tensors["language_model.model.norm.weight"][:-1].contiguous()
    bad = _copy_with_tensors(tiny_checkpoint, tmp_path / "bad", tensors)
    with pytest.raises(CheckpointError, match=r"'projector\.fc2\.weight' has shape \[256, 511\]"):
        load_model(bad)


def test_config_that_does_not_match_the_tensors(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 5
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"lacks tensor 'language_model\.model\.layers\.4\."):
        load_model(bad)

    config["text_config"]["num_hidden_layers"] = 4
    config["text_config"]["hidden_size"] = 128
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'projector\.fc2\.weight' has shape \[256, 512\] but config"):
        load_model(bad)


def test_missing_and_unexpected_tensors(tiny_checkpoint, tmp_path):
    tensors = _file_tensors(tiny_checkpoint)
    extra = dict(tensors, **{"language_model.model.layers.0.self_attn.rotary.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"rotary\.bias"):
        load_model(_copy_with_tensors(tiny_checkpoint, tmp_path / "extra", extra))
    del tensors["vision_backbone.fused_featurizer.pos_embed"]
    with pytest.raises(CheckpointError, match=r"lacks tensor 'vision_backbone\.fused_featurizer\.pos_embed'"):
        load_model(_copy_with_tensors(tiny_checkpoint, tmp_path / "missing", tensors))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_model(tmp_path)


def test_tokenizer_from_another_checkpoint_is_refused(tiny_checkpoint):
    config = OpenVLAConfig.from_checkpoint(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="different checkpoints"):
        check_tokenizer_fits(build_tokenizer(1024, seed=0), config)


# openvla-7b's config.json names its remote code; transformers' Auto classes then ask on stdin whether to run it.
OPENVLA_AUTO_MAP = {
    "AutoConfig": "configuration_prismatic.OpenVLAConfig",
    "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
}
LOAD_TOKENIZER = """
import sys
from kv_efficient_vla_ros.core.openvla.processor import PromptTokenizer
print("prompt ids:", PromptTokenizer.from_checkpoint(sys.argv[1])("lift the red cube"), flush=True)
"""


def _tokenizer_only(tiny_checkpoint, dst):
    shutil.copytree(tiny_checkpoint, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    return dst


def test_tokenizer_loads_offline_without_asking_to_run_remote_code(tiny_checkpoint, tiny_policy, tmp_path):
    checkpoint = _tokenizer_only(tiny_checkpoint, tmp_path / "with_auto_map")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(dict(config, auto_map=OPENVLA_AUTO_MAP)))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    log = tmp_path / "output.txt"
    # stdin stays an open pipe nobody writes to (as under a launcher): a question asked there waits forever.
    with (
        log.open("w") as out,
        subprocess.Popen(
            [sys.executable, "-c", LOAD_TOKENIZER, str(checkpoint)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        ) as child,
    ):
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    output = log.read_text()
    assert child.returncode == 0, output
    assert "custom code" not in output and "trust_remote_code" not in output, output
    assert f"prompt ids: {tiny_policy.prompt_tokenizer('lift the red cube')}" in output


def test_missing_tokenizer_files_are_a_checkpoint_error(tiny_checkpoint, tmp_path):
    checkpoint = _tokenizer_only(tiny_checkpoint, tmp_path / "no_tokenizer")
    for path in checkpoint.iterdir():
        if path.name != "config.json":
            path.unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        PromptTokenizer.from_checkpoint(checkpoint)


def test_single_backbone_variant(tmp_path):
    spec = TinySpec(
        vision_backbone_id="tiny-siglip-224px",
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        text_vocab_size=1024,
    )
    checkpoint = write_tiny_checkpoint(tmp_path / "single", spec)
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("vision_backbone.fused_featurizer") for k in keys)
    assert "projector.fc3.weight" not in keys
    policy = OpenVLAPolicy.from_checkpoint(checkpoint, unnorm_key="sim_panda_lift")
    out = policy.predict(synthetic_frames(1)[0], "lift the red cube")
    assert out.action.shape == (7,)
    assert np.all((out.token_ids >= 1024 - 256) & (out.token_ids < 1024))
