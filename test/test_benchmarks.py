"""The benchmark commands run end to end (reduced) and write what they claim."""

import json

from kv_efficient_vla_ros.core.benchmarks import cache_policies, single_frame


def test_cache_benchmark_runs(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cache.json"
    cache_policies.main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--frames",
            "4",
            "--budget-tokens",
            "512",
            "--policies",
            "full",
            "window",
            "gated",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert set(result["policies"]) == {"full", "window", "gated"}
    window, full = result["policies"]["window"], result["policies"]["full"]
    assert window["kv_bytes_peak"] < full["kv_bytes_peak"]
    assert full["action_agreement"] == 1.0 and full["kv_peak_vs_full"] == 1.0
    assert "| window |" in out.with_suffix(".md").read_text()
    assert "| gated |" in capsys.readouterr().out


def test_single_frame_benchmark_runs(tiny_checkpoint, tmp_path):
    out = tmp_path / "single.json"
    single_frame.main(["--checkpoint", str(tiny_checkpoint), "--repeats", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    flops = result["output_layer_flops_per_token"]
    assert flops["full_vocab"] == 2 * 32064 * 256 and flops["action_ids"] == 2 * 256 * 256
