"""Can the gate's inputs tell the cue frames apart at all? A linear probe on the chunk descriptors.

    python tools/probe_cue_descriptors.py [--teacher-cache data/teacher/hindsight.pt] > results/probe_cue_descriptors.md

The teacher cache (``make gate``) holds, per recorded demo, every chunk's descriptor (the gate's input:
mean value vectors at 3 layers) and which chunks show the cue. A logistic regression on standardized
descriptors is fitted on the gate's training episodes and scored on its held-out ones: if even a linear
read-out of a single chunk's descriptor cannot find the cue, no gate on these inputs can keep it by
content, and the inputs (not the teacher) are the next thing to change.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

VALIDATION_SEEDS = {2, 4, 8, 10, 16, 20, 27, 34, 42, 51, 52, 57}  # the gates' held-out demos (train_gate_*.json)


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random cue chunk scores above a random other chunk."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-cache", default="data/teacher/hindsight.pt")
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    args = parser.parse_args()
    episodes = torch.load(args.teacher_cache, weights_only=False)["episodes"]

    def table(split):
        rows = [(e.seed, c, d, c in e.cue_chunks) for e in split for c, d in sorted(e.descriptors.items())]
        return rows, torch.stack([r[2] for r in rows]).double(), torch.tensor([float(r[3]) for r in rows]).double()

    train = [e for e in episodes if e.seed not in VALIDATION_SEEDS]
    held = [e for e in episodes if e.seed in VALIDATION_SEEDS]
    (train_rows, x, y), (held_rows, xh, yh) = table(train), table(held)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    x, xh = (x - mean) / std, (xh - mean) / std
    torch.manual_seed(0)
    w, b = (
        torch.zeros(x.shape[1], dtype=torch.double, requires_grad=True),
        torch.zeros(1, dtype=torch.double, requires_grad=True),
    )
    optimizer = torch.optim.LBFGS([w, b], max_iter=500)
    pos_weight = (y == 0).sum() / (y == 1).sum()  # the cue is 2 chunks of ~25

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, pos_weight=pos_weight)
        loss = loss + args.weight_decay * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        train_scores, held_scores = (x @ w + b).numpy(), (xh @ w + b).numpy()

    def top2_hits(rows, scores) -> float:
        hits = []
        for seed in sorted({r[0] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r[0] == seed]
            top = sorted(idx, key=lambda i: -scores[i])[:2]
            hits.append(sum(rows[i][3] for i in top) / 2)
        return float(np.mean(hits))

    print(f"`python tools/probe_cue_descriptors.py --teacher-cache {args.teacher_cache}`\n")
    print(
        f"Descriptors: {x.shape[1]} dims per chunk (one chunk = one frame); {len(train)} training demos "
        f"({len(train_rows)} chunks, {int(y.sum())} cue), {len(held)} held-out demos ({len(held_rows)} chunks, "
        f"{int(yh.sum())} cue). Logistic regression, standardized inputs, L2 {args.weight_decay}, cue class weighted.\n"
    )
    print("| split | AUC (cue vs other chunks) | cue chunks among each episode's top 2 |")
    print("|---|---:|---:|")
    print(f"| training | {rank_auc(train_scores, y.numpy()):.3f} | {top2_hits(train_rows, train_scores):.2f} |")
    print(f"| held-out | {rank_auc(held_scores, yh.numpy()):.3f} | {top2_hits(held_rows, held_scores):.2f} |")
    print(f"| chance | 0.500 | {2 / np.mean([len(e.descriptors) for e in held]):.2f} |")


if __name__ == "__main__":
    main()
