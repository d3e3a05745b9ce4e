"""The busiest data-parallel attention group of a batch.

With data-parallel attention (tp < GPUs of a stage; DeepSeek's layout runs one group per
GPU) each group attends over its own rows, and the groups meet at every MoE layer's
dispatch, so a step waits for the busiest group. A row is never split between groups.
"""

from __future__ import annotations

import numpy as np


def busiest_group(batch, feats, g: int, decode_threshold: int = 1) -> tuple:
    """The batch features (`features.py`) of the busiest of `g` attention groups.

    Even a perfect balancer (DeepSeek balances requests and attention load over the groups:
    DeepSeek-V3/R1 Inference System Overview, 2025-03-01) gives out whole rows: some group
    holds ceil(R / g) of them, and one holds the longest row whole. So the busiest group
    gets the larger of an average row times ceil(R / g) and the longest row, feature by
    feature. That is exact for equal rows and for one long prompt among short ones, and an
    estimate in between (a perfect balancer can pair a long row with short ones; a real
    placement, fixed at admission while rows grow and finish, does worse). Rows of both kinds
    (prefill and decode) overcount: the longest row's features come with an average share of
    the other kind's, even where that row's group holds it alone (docs/costmodel.md, "What the
    model leaves out").
    decode_threshold: rows feeding at most this many tokens are decode rows (features.py).
    """
    rows = feats[1]
    whole = -(-int(rows) // g)
    share = whole / rows
    out = [x * share for x in feats]
    out[1] = float(whole)
    if feats[5]:
        out[5] = min(float(whole), feats[5])  # decode rows: whole rows too
        out[7] = out[5] * (feats[7] / feats[5])  # and their tokens (x 1.0 for one a row)
    if rows > 1 and batch.padded_len is None:
        new, cached = batch.num_new_tokens, batch.num_cached_tokens
        i = int(np.argmax(new + cached))
        n, c = float(new[i]), float(cached[i])
        pairs = n * c + 0.5 * (n * n + n)
        if n > decode_threshold:  # a prefill (or chunk) row: its tokens, keys, query-key pairs
            longest = (n, 1.0, n, c + n, pairs, 0.0, 0.0, 0.0, 0.0)
        else:  # a decode row (several tokens where drafts are verified)
            longest = (n, 1.0, 0.0, 0.0, 0.0, 1.0, c + n, n, pairs)
        out = [max(a, b) for a, b in zip(out, longest)]
    return tuple(out)
