"""The busiest data-parallel attention group of a batch.

With data-parallel attention (tp < GPUs of a stage; DeepSeek's layout runs one group per
GPU) each group attends over its own rows, and the groups meet at every MoE layer's
dispatch, so a step waits for the busiest group. A row is never split between groups.
"""

from __future__ import annotations

import numpy as np


def group_candidates(batch, feats, g: int, decode_threshold: int = 1) -> list[tuple]:
    """The batch features (`features.py`) of the groups that can be the busiest of `g`
    attention groups: an average group, and the groups of the rows that could be the
    costliest alone (the most tokens fed, the longest context, the most query-key pairs).

    Even a perfect balancer (DeepSeek balances requests and attention load over the groups:
    DeepSeek-V3/R1 Inference System Overview, 2025-03-01) gives out whole rows: some group
    holds ceil(R / g) of them (average rows here, decode rows and their tokens whole), and
    each row's group holds it whole (alone here: a balancer gives a heavy row the fewest
    others). That is exact for equal rows and for one heavy row among light ones, and an
    estimate in between (a perfect balancer can pair a long row with short ones; a real
    placement, fixed at admission while rows grow and finish, does worse).
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
        out[0] = out[2] + out[7]  # the group's tokens: its prefill and decode tokens
    candidates = [tuple(out)]
    if rows <= 1 or batch.padded_len is not None:
        return candidates
    new, cached = batch.num_new_tokens, batch.num_cached_tokens
    context = new + cached
    pairs = new * (cached + 0.5) + 0.5 * new * new  # n c + n (n + 1) / 2
    heavy = {int(np.argmax(new)), int(np.argmax(context)), int(np.argmax(pairs))}
    for i in sorted(heavy):
        n, c = float(new[i]), float(cached[i])
        p = n * c + 0.5 * (n * n + n)
        if n > decode_threshold:  # a prefill (or chunk) row: its tokens, keys, pairs
            candidates.append((n, 1.0, n, c + n, p, 0.0, 0.0, 0.0, 0.0))
        else:  # a decode row (several tokens where drafts are verified)
            candidates.append((n, 1.0, 0.0, 0.0, 0.0, 1.0, c + n, n, p))
    return candidates


def busiest_group(batch, feats, g: int, cost, decode_threshold: int = 1) -> tuple:
    """(features of the busiest of `g` attention groups, tokens of the group that sends the
    most): of `group_candidates`, the one `cost` (features -> seconds of its ops) prices
    highest, taken whole (taking the larger of each feature instead would charge a long
    prompt's group with an average share of decode rows it does not hold; ties go to the
    average group); the tokens are the most any candidate holds, since the dispatch after
    attention waits for the group that sends the most, which may be another one."""
    candidates = group_candidates(batch, feats, g, decode_threshold)
    tokens = max(c[0] for c in candidates)
    if len(candidates) == 1:
        return candidates[0], tokens
    costs = [cost(c) for c in candidates]
    return candidates[costs.index(max(costs))], tokens
