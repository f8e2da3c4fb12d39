"""kv-vla-eval end to end, reduced: real sim, real checkpoint loading, JSON/Markdown/PNG written."""

import json

import pytest
import torch

from kv_efficient_vla_ros.cli.eval import main as eval_main
from kv_efficient_vla_ros.cli.eval import parse_gate_row
from kv_efficient_vla_ros.core.cache.strategies import Chunk, Decision, make_strategy
from kv_efficient_vla_ros.core.evaluation.closed_loop import EvalSetup, strategy_of, wilson_interval


def _eval(checkpoint, out, *args: str) -> dict:
    """kv-vla-eval reduced: one worker, held-out seeds from 500000; 1 episode of 4 steps unless ``args`` say
    otherwise (argparse keeps the last value given)."""
    defaults = ["--episodes", "1", "--seed-start", "500000", "--max-steps", "4", "--workers", "1", "--strips", "0"]
    eval_main(["--checkpoint", str(checkpoint), *defaults, *args, "--out", str(out)])
    return json.loads(out.read_text())


def test_wilson_interval_against_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(100, 100)
    assert lo == pytest.approx(0.9630, abs=1e-4) and hi == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_eval_runs_every_strategy_on_the_same_seeds(trained_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    data = _eval(trained_checkpoint, out, "--strategies", "expert,full,window", "--episodes", "2", "--max-steps", "30",
                 "--strips", "1", "--agreement")  # fmt: skip
    results = data["results"]
    assert list(results) == ["expert", "full", "window"]
    for r in results.values():
        assert r["episodes"] == 2 and [e["seed"] for e in r["per_episode"]] == [500000, 500001]
        lo, hi = r["wilson95"]
        assert lo <= r["success_rate"] <= hi
    assert results["expert"]["success_rate"] == 1.0
    assert results["expert"]["tick_ms_median"] is None and results["window"]["tick_ms_median"] > 0
    assert results["full"]["action_agreement_with_full"] is None  # not compared with itself
    assert 0.0 <= results["window"]["action_agreement_with_full"] <= 1.0
    assert out.with_suffix(".md").read_text().count("|") > 20
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert (tmp_path / "eval_strip_seed500000.png").exists()


def test_eval_gives_one_row_per_budget_for_bounded_strategies(trained_checkpoint, tmp_path):
    out = tmp_path / "budgets.json"
    results = _eval(trained_checkpoint, out, "--strategies", "none,window", "--budget-frames", "2,3")["results"]
    assert list(results) == ["none", "window@2", "window@3"]
    assert [results[k]["budget_frames"] for k in results] == [0, 2, 3]
    assert out.with_suffix(".png").stat().st_size > 10_000
    by_budget = out.with_suffix(".md").read_text().split("Success per budget")[1]
    rates = {k: f"{100 * r['success_rate']:.0f} %" for k, r in results.items()}
    assert f"| none | {rates['none']} | {rates['none']} |" in by_budget  # unbounded: the same at every budget
    assert f"| window | {rates['window@2']} | {rates['window@3']} |" in by_budget
    written = out.with_suffix(".md").read_text()
    out.with_suffix(".md").unlink()
    eval_main(["--render", str(out)])  # from the JSON alone, nothing run
    assert out.with_suffix(".md").read_text() == written


def test_extra_gates_get_their_own_rows_and_checkpoints():
    setup = EvalSetup(
        task="delayed_cue",
        checkpoint="ckpt",
        unnorm_key="",
        strategies=("full", "gated", "window"),
        budgets_frames=(2, 4),
        recent_chunks=2,
        image_size=0,
        max_steps=10,
        gate_checkpoint="gates/shipped",
        extra_gates=(
            ("lstm", "gates/lstm", ()),
            ("untrained", "", ()),
            ("keep_drop", "gates/shipped", (("summary_threshold", 0.5),)),
        ),
    )
    assert [label for label, _, _ in setup.rows()] == [
        "full",
        *("gated@2", "gated@4"),
        *("gated:lstm@2", "gated:lstm@4"),
        *("gated:untrained@2", "gated:untrained@4"),
        *("gated:keep_drop@2", "gated:keep_drop@4"),
        *("window@2", "window@4"),
    ]
    assert [setup.cache_options(s)["gate_checkpoint"] for s in ("gated", "gated:lstm", "gated:untrained")] == [
        "gates/shipped",
        "gates/lstm",
        "",
    ]
    assert strategy_of("gated:lstm") == "gated"
    # a row's option override reaches its strategy: a chunk the shipped thresholds summarize is dropped there
    utility = torch.tensor([0.3])
    decide = {
        row: make_strategy("gated", setup.cache_options(row)).decide([Chunk(0, 0, 64)], utility)
        for row in ("gated", "gated:keep_drop")
    }
    assert decide == {"gated": [Decision.SUMMARIZE], "gated:keep_drop": [Decision.DROP]}


def test_gate_rows_parse_their_option_overrides():
    assert parse_gate_row("kd=gates/g@summary_threshold=0.5@keep_threshold=0.6") == (
        "kd",
        "gates/g",
        (("summary_threshold", 0.5), ("keep_threshold", 0.6)),
    )
    assert parse_gate_row("untrained=") == ("untrained", "", ())
    for bad in ("kd=gates/g@no_such_option=1", "kd=gates/g@summary_threshold", "a:b=gates/g", "=gates/g"):
        with pytest.raises(ValueError, match=r"NAME=DIR|OPTION=VALUE"):
            parse_gate_row(bad)


def test_eval_compares_two_gates_in_one_run(trained_checkpoint, tmp_path):
    data = _eval(trained_checkpoint, tmp_path / "gates.json", "--strategies", "gated", "--gates", "untrained=")
    assert list(data["results"]) == ["gated", "gated:untrained"]
    assert data["results"]["gated:untrained"]["strategy"] == "gated:untrained"
    assert data["setup"]["extra_gates"] == [["untrained", "", []]]


def test_accelerator_rows_run_beside_the_plain_ones(trained_checkpoint, tmp_path):
    """Layer importance calibrated on a freshly recorded demo, then +select and +prune rows in closed loop."""
    from kv_efficient_vla_ros.cli import calibrate_layers, record_demos

    demos = tmp_path / "demos"
    record_demos.main(["--task", "delayed_cue", "--episodes", "1", "--out", str(demos), "--max-steps", "8"])
    importance = tmp_path / "importance.json"
    calibrate_layers.main(
        ["--checkpoint", str(trained_checkpoint), "--episodes-dir", str(demos / "delayed_cue"),
         "--frames", "4", "--out", str(importance)]
    )  # fmt: skip
    assert len(json.loads(importance.read_text())["importance"]) == 4
    out = tmp_path / "select.json"
    args = ["--strategies", "window,gated+select,window+prune,full+reuse", "--keep-tokens", "32"]
    data = _eval(trained_checkpoint, out, *args, "--layer-importance", str(importance))
    assert list(data["results"]) == ["window", "gated+select", "window+prune", "full+reuse"]
    assert data["results"]["full+reuse"]["reused_share"] > 0.0  # the sim's frames barely change tick to tick
    assert data["setup"]["keep_tokens"] == 32
    markdown = out.with_suffix(".md").read_text()
    assert "32 patch tokens per frame" in markdown and "1 LLM layer(s) dropped" in markdown
    assert "`+reuse` rows: VLA-Cache token reuse" in markdown
    assert all(r["tick_ms_median"] > 0 for r in data["results"].values())
    assert (tmp_path / "select_vs_latency.png").stat().st_size > 10_000
    assert strategy_of("gated:lstm+select") == "gated" and strategy_of("window+select") == "window"


def test_train_gate_runs_reduced_and_names_its_checkpoint_as_given(trained_checkpoint, tmp_path, monkeypatch):
    """kv-vla-train-gate end to end on 3 freshly recorded demos (attention teacher: one full pass each); the
    teacher cache is reused, and results name the checkpoint relative to the working directory."""
    from kv_efficient_vla_ros.cli import record_demos, train_gate

    record_demos.main(
        ["--task", "delayed_cue", "--episodes", "3", "--out", str(tmp_path / "demos"), "--max-steps", "40"]
    )
    monkeypatch.chdir(trained_checkpoint.parent)
    args = [
        "--checkpoint", trained_checkpoint.name, "--episodes-dir", str(tmp_path / "demos" / "delayed_cue"),
        "--episodes", "3", "--val-fraction", "0.34", "--teacher", "attention", "--epochs", "2",
        "--teacher-cache", str(tmp_path / "attention.pt"),
    ]  # fmt: skip
    train_gate.main([*args, "--out", str(tmp_path / "gate")])
    summary = json.loads((tmp_path / "gate" / "training.json").read_text())
    summary = summary.get("summary", summary)
    assert summary["checkpoint"] == trained_checkpoint.name and summary["teacher"] == "attention"
    train_gate.main([*args, "--gate-type", "lstm", "--out", str(tmp_path / "lstm")])  # from the cache
    assert (tmp_path / "lstm" / "training.json").exists()
