"""The benchmark commands run end to end (reduced) and write what they claim."""

import json
import math

from kv_efficient_vla_ros.cli import bench_cache, bench_single_frame
from kv_efficient_vla_ros.core.accelerators.layer_pruning import save_importance


def test_cache_benchmark_runs(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cache.json"
    importance = tmp_path / "importance.json"
    save_importance(importance, [0.3, 0.1, 0.2, 0.4], "tiny", "made up: layer 1 goes")
    args = f"--checkpoint {tiny_checkpoint} --unnorm-key sim_panda_lift --horizons 2 4 --budget-tokens 512"
    args += f" --source synthetic --keep-tokens 64 --layer-importance {importance} --out {out}"
    rows = ["full", "window", "gated", "full+select", "gated+select", "window+select+prune", "gated+select+reuse"]
    bench_cache.main([*args.split(), "--strategies", *rows])
    result = json.loads(out.read_text())
    assert set(result["per_horizon"]) == {"2", "4"}
    at4 = result["per_horizon"]["4"]
    assert set(at4) == set(rows)
    assert at4["gated+select"]["flops_per_tick"] < at4["gated"]["flops_per_tick"]  # 64 of 256 tokens per frame
    assert at4["full+select"]["tokens_final"] == 1 + 4 * 64
    assert result["pruned_llm_layers"] == 3
    assert at4["window+select+prune"]["flops_per_tick"] < at4["full+select"]["flops_per_tick"]
    # the synthetic camera's table is static, but a random model's attention does not focus layer by layer
    # (its entropy does not drop), so VLA-Cache's per-layer schedule reuses nothing: gated+select's work
    reuse = at4["gated+select+reuse"]
    assert reuse["reused_share"] == 0.0 and reuse["flops_per_tick"] == at4["gated+select"]["flops_per_tick"]
    assert at4["window"]["kv_bytes_peak"] < at4["full"]["kv_bytes_peak"]
    assert at4["window"]["flops_per_tick"] < at4["full"]["flops_per_tick"]
    assert at4["full"]["action_agreement"] == 1.0 and at4["full"]["kv_reduction"] == 1.0
    assert all(s["page_faults_median"] >= 0 for s in at4.values())
    markdown = out.with_suffix(".md").read_text()
    table = markdown.split("**At 4 frames:**")[1].strip().split("\n\n")[0].splitlines()
    assert len(table) == 2 + 7 + 1 and len({row.count("|") for row in table}) == 1  # every row has every column
    assert "64 patch tokens per frame" in markdown and "cut to 3 layers" in markdown and "VLA-Cache" in markdown
    assert "| window |" in markdown and "paper (KV-Efficient VLA, reported)" in markdown and "targets" in markdown
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| gated |" in capsys.readouterr().out


def test_single_frame_benchmark_runs(tiny_checkpoint, tmp_path):
    out = tmp_path / "single.json"
    bench_single_frame.main(["--checkpoint", str(tiny_checkpoint), "--repeats", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    flops = result["output_layer_flops_per_token"]
    assert flops["full_vocab"] == 2 * 32064 * 256 and flops["action_ids"] == 2 * 256 * 256


def test_cache_benchmark_runs_at_openvla_7b_shapes_with_a_cut_llm(tmp_path):
    """The GPU benchmark's command on CPU: openvla-7b's exact shapes, random weights, the LLM cut to 1 layer."""
    out = tmp_path / "openvla_7b.json"
    args = "--shape openvla-7b --llm-layers 1 --horizons 2 --source synthetic --budget-tokens 512"
    bench_cache.main([*args.split(), "--strategies", "full", "window", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["llm"] == "4096 wide x 1 layers" and result["vision"] == "dinosiglip-vit-so-224px"
    assert result["checkpoint"] == "random weights, openvla-7b shapes, LLM cut to 1 layers"
    assert result["gpu_peak_bytes"] == {}  # measured on cuda only
    full = result["per_horizon"]["2"]["full"]
    assert full["tokens_final"] == 1 + 2 * 256  # BOS and two frames of 256 patches
    bytes_per_token = 2 * 32 * 128 * 4  # keys and values, 32 heads of 128, fp32, one layer
    assert full["kv_bytes_peak"] % bytes_per_token == 0 and full["kv_bytes_peak"] > 513 * bytes_per_token
    assert full["flops_per_tick"] > 3e11  # the two 7B-size vision towers alone
    assert math.isfinite(result["per_horizon"]["2"]["window"]["logit_mae"])  # random weights, finite logits


def test_reuse_rows_without_the_entropy_schedule_do_less_work(tiny_checkpoint, tmp_path):
    out = tmp_path / "reuse.json"
    args = f"--checkpoint {tiny_checkpoint} --unnorm-key sim_panda_lift --horizons 3 --source synthetic --out {out}"
    bench_cache.main([*args.split(), "--no-reuse-layer-adaptive", "--strategies", "full", "full+reuse"])
    at3 = json.loads(out.read_text())["per_horizon"]["3"]
    # ticks 1 and 2 reuse the capped 60 % of the frame (the table's patches) at every layer
    assert at3["full+reuse"]["reused_share"] > 0.3
    assert at3["full+reuse"]["flops_per_tick"] < 0.9 * at3["full"]["flops_per_tick"]
    assert at3["full+reuse"]["action_agreement"] < 1.0 or at3["full+reuse"]["logit_mae"] > 0.0  # an approximation
