"""One episode as a single training sequence, laid out exactly as the runner presents it with ``full``.

At inference, tick t sees ``[BOS] [frame 0] ... [frame t] [prompt] [action tokens]``; the prompt and
action tokens are cut off after the tick, and the next frame takes their positions. So one forward over

    [BOS] [frame 0] [prompt] [a0..a5]  [frame 1] [prompt] [a0..a5]  ...

with a block mask (frames see BOS and every earlier frame, causally within their own; a tick's prompt
and action tokens see the frames up to their own and their own tick's text, and nothing later sees
them) and the runner's positions gives, at every tick, the logits the runner computes with ``full``.
The 7th action token is predicted but never fed, as in decoding.

A bounded cache shows each tick a subset of the earlier frames. Without ``rope_compact`` the kept tokens
keep the positions they had when written, so a gapped history is the same forward with frames hidden
from the ticks after their eviction (``drop_tick``): training on such masks teaches the policy to act on
whatever a strategy kept, and the runner reproduces those logits exactly. Token selection keeps a subset
of each frame's patches at their places in the whole frame (the prompt still follows the whole frame, the
next frame the last kept patch), so a frame of fewer tokens is the same forward with the other patches
hidden from every query and those positions (``dropped``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..openvla.action_tokenizer import ACTION_DIM
from ..openvla.modeling import OpenVLAModel

BOS, FRAME, TEXT = 0, 1, 2


@dataclass(frozen=True)
class HistoryLayout:
    ticks: int
    frame_tokens: int
    prompt_tokens: int  # after BOS, the empty piece included

    @property
    def tick_tokens(self) -> int:
        return self.frame_tokens + self.prompt_tokens + ACTION_DIM - 1

    @property
    def length(self) -> int:
        return 1 + self.ticks * self.tick_tokens

    def token_table(self, dropped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence slot: (tick, kind, RoPE position); ``dropped`` as in :meth:`visible`."""
        f = self.frame_tokens
        ticks = torch.arange(self.ticks).repeat_interleave(self.tick_tokens)
        within = torch.arange(self.tick_tokens).repeat(self.ticks)
        kind = torch.where(within < f, FRAME, TEXT)
        # frame t starts right after frame t-1's last patch (the previous tick's text was cut off), BOS at 0
        span = torch.full((self.ticks,), f)
        if dropped is not None:
            span = f - (~dropped).flip(1).int().argmax(dim=1)  # 1 + the last kept patch
        start = 1 + torch.cumsum(span, 0) - span
        position = start[ticks] + within
        tick = torch.cat([torch.tensor([-1]), ticks])
        kind = torch.cat([torch.tensor([BOS]), kind])
        position = torch.cat([torch.tensor([0]), position])
        return tick, kind, position

    def visible(self, drop_tick: torch.Tensor | None = None, dropped: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, n]`` bool: may the query in row i attend to the key in column j.

        ``drop_tick`` ``[ticks]``: frame f is evicted before tick ``drop_tick[f]`` (hidden from that tick on).
        ``dropped`` ``[ticks, frame_tokens]`` bool: patches that never entered the LLM (hidden from all).
        """
        tick, kind, _ = self.token_table()
        causal = torch.ones(self.length, self.length, dtype=torch.bool).tril()
        key_tick, key_kind, query_tick = tick[None, :], kind[None, :], tick[:, None]
        sees = (key_kind == BOS) | ((key_kind == FRAME) & (key_tick <= query_tick))
        sees |= (key_kind == TEXT) & (key_tick == query_tick)
        if drop_tick is not None:
            evicted_at = torch.cat([torch.tensor([self.ticks]), drop_tick.long()])[(tick + 1).clamp(min=0)]
            evicted_at = torch.where(kind == FRAME, evicted_at, self.ticks)
            sees &= query_tick < evicted_at[None, :]
        if dropped is not None:
            sees[:, self._frame_slots()[dropped]] = False
        return causal & sees

    def _frame_slots(self) -> torch.Tensor:
        """``[ticks, frame_tokens]`` sequence slot of each frame's patches."""
        starts = 1 + torch.arange(self.ticks) * self.tick_tokens
        return starts[:, None] + torch.arange(self.frame_tokens)[None, :]

    def additive_mask(
        self,
        dtype: torch.dtype = torch.float32,
        drop_tick: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[1, 1, n, n]`` additive attention mask (0 visible, dtype min hidden)."""
        mask = torch.zeros(self.length, self.length, dtype=dtype)
        mask.masked_fill_(~self.visible(drop_tick, dropped), torch.finfo(dtype).min)
        return mask[None, None]

    def predicting_slots(self) -> torch.Tensor:
        """``[ticks, 7]`` sequence slots whose output predicts action token k of tick t."""
        last_prompt = 1 + torch.arange(self.ticks) * self.tick_tokens + self.frame_tokens + self.prompt_tokens - 1
        return last_prompt[:, None] + torch.arange(ACTION_DIM)[None, :]


def episode_hidden(
    model: OpenVLAModel,
    layout: HistoryLayout,
    patches: torch.Tensor,
    prompt_embeds: torch.Tensor,
    action_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final hidden states ``[ticks, 7, D]`` at the slots that predict each tick's action tokens.

    ``patches`` ``[T, F, D]`` projected patch embeddings; ``prompt_embeds`` ``[1 + P, D]`` (BOS first);
    ``action_ids`` ``[T, 7]`` the action tokens (the first 6 are fed, as in decoding); ``dropped`` the
    patches left out (their positions; ``mask`` must hide them, as ``additive_mask(dropped=...)`` does).
    """
    ticks = layout.ticks
    actions = model.embed_tokens(action_ids[:, : ACTION_DIM - 1])
    prompt = prompt_embeds[1:].expand(ticks, -1, -1)
    body = torch.cat([patches, prompt, actions], dim=1).reshape(ticks * layout.tick_tokens, -1)
    embeds = torch.cat([prompt_embeds[:1], body])[None]
    _, _, position = layout.token_table(dropped)
    if mask is None:
        mask = layout.additive_mask(embeds.dtype, dropped=dropped)
    hidden = model.hidden_states(embeds, position[None].to(embeds.device), None, mask.to(embeds.device))
    return hidden[0, layout.predicting_slots().to(embeds.device)]
