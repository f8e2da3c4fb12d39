"""Loss and accuracy curves of a training run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _smooth(values: list[float], window: int = 50) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_training(history, path: Path, title: str) -> Path:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    smooth = _smooth(history.loss)
    ax_loss.plot(history.step[len(history.step) - len(smooth) :], smooth, label="train (moving mean)")
    ax_loss.plot(history.val_step, history.val_loss, "o-", label="held-out episodes")
    ax_loss.set(xlabel="optimizer step (one episode)", ylabel="cross-entropy of action tokens", yscale="log")
    ax_loss.legend()
    acc = _smooth(history.token_accuracy)
    ax_acc.plot(history.step[len(history.step) - len(acc) :], acc, label="train token accuracy")
    ax_acc.plot(history.val_step, history.val_token_accuracy, "o-", label="held-out token accuracy")
    ax_acc.plot(history.val_step, history.val_side_accuracy, "s-", label="held-out side sign at decision ticks")
    if history.val_cue_only_side_accuracy:
        ax_acc.plot(
            history.val_step, history.val_cue_only_side_accuracy, "^-", label="... history: cue frames + 2 newest"
        )
    if history.val_first_decision_side_accuracy:
        ax_acc.plot(
            history.val_step, history.val_first_decision_side_accuracy, "v-", label="... first decision tick only"
        )
    ax_acc.set(xlabel="optimizer step (one episode)", ylabel="accuracy", ylim=(0, 1.02))
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gate_training(history, path: Path, title: str) -> Path:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(history.epoch, history.train_loss, label="train")
    ax_loss.plot(history.epoch, history.val_loss, "o-", ms=3, label="held-out episodes")
    ax_loss.set(xlabel="epoch", ylabel="binary cross-entropy against the teacher")
    ax_loss.legend()
    ax_acc.plot(history.epoch, history.val_accuracy, "o-", ms=3, label="held-out keep decisions = teacher's")
    ax_acc.plot(history.epoch, history.val_cue_kept, "s-", ms=3, label="held-out episodes whose cue is kept")
    ax_acc.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1.02))
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
