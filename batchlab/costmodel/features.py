"""Batch features: the nine totals a step's cost depends on, from a Batch in closed form.

A row feeding n new tokens on top of c cached ones attends, for its j-th new token, over
c + j + 1 keys, so it computes n*c + n(n+1)/2 query-key pairs and reads c + n keys. Summing
these over rows needs a handful of numpy reductions, whatever the batch size, and no Python
loop over rows or tokens.

Rows feeding at most `decode_threshold` tokens are decode rows (the attention kernels' decode
path; MLA's absorbed form), the others prefill rows. With the default of 1 a decode row feeds
one token; an engine that verifies drafts (DeepSeek's MTP: one draft token, so 2) has decode
rows of several tokens.

Padding (`Batch.padded_len = P`, static-shape backends with length buckets): every row is
padded to P tokens of context, so it reads P keys; a prefill row (n > 1) feeds P - c tokens
(its prompt padded out to P); a decode row still feeds one token but attends over P keys
(with padding, rows feeding more than one token are prefill rows whatever the threshold).
"""

from __future__ import annotations

import numpy as np

from batchlab.core import Batch
from batchlab.core.fastnp import ONE

# Prompts in a mixed step up to which their sums are taken in Python: cheaper than three
# numpy calls for the one or two a continuous-batching step usually admits.
_FEW_PROMPTS = 8
_INT64 = np.dtype(np.int64)


def batch_features(batch, decode_threshold: int = 1) -> tuple:
    """(T, R, TP, CP, AP, RD, CD, TD, QD): tokens fed, rows, prefill tokens, prefill context
    keys, prefill query-key pairs, decode rows, decode context keys, decode tokens, decode
    query-key pairs (padding included). Every row feeds at least one token (engines check
    it); a row of 0 would count as a decode. For one-token decode rows TD = RD and QD = CD."""
    new, cached = batch.num_new_tokens, batch.num_cached_tokens
    rows = len(new)
    if rows == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    padded = batch.padded_len
    if padded is None:
        if isinstance(batch, Batch):  # its sums are taken once, at construction: exact ints
            s_new = batch.num_tokens
            s_cached = batch.num_context_tokens - s_new
        else:
            s_new, s_cached = int(new.sum()), int(cached.sum())
        if s_new == rows:  # every row feeds exactly one token (n >= 1): a pure decode batch
            r, cd = float(rows), float(s_cached + rows)
            return r, r, 0.0, 0.0, 0.0, r, cd, r, cd
        if decode_threshold > 1:
            return _features_with_threshold(new, cached, int(decode_threshold))
        pre = (new > ONE).nonzero()[0]  # ONE: an int64 0-d array (see core.fastnp)
        n_pre = pre.size
        if n_pre == rows:  # pure prefill (or chunked prefill) batch
            tp = float(s_new)
            cp = float(s_cached) + tp
            ap = float(new @ cached) + 0.5 * (float(new @ new) + tp)
            return tp, float(rows), tp, cp, ap, 0.0, 0.0, 0.0, 0.0
        rd = rows - n_pre
        tp = float(s_new - rd)  # decode rows feed one token each
        if n_pre <= _FEW_PROMPTS and new.dtype == _INT64 and cached.dtype == _INT64:
            # The usual mixed step (a Batch's arrays are int64): sums of Python ints, the
            # same integers as numpy's; other arrays keep numpy's sums.
            n, c = new[pre].tolist(), cached[pre].tolist()
            c_sum = float(sum(c))
            nc, nn = sum([a * b for a, b in zip(n, c)]), sum([a * a for a in n])
        else:
            n, c = new[pre], cached[pre]
            c_sum = float(c.sum())
            nc, nn = n @ c, n @ n
        cp = c_sum + tp
        ap = float(nc) + 0.5 * (float(nn) + tp)
        cd = float(s_cached) - c_sum + rd
        return tp + rd, float(rows), tp, cp, ap, float(rd), cd, float(rd), cd
    pre = new > 1
    n_pre = int(np.count_nonzero(pre))
    c = cached[pre]
    n = padded - c  # a padded prefill row feeds its whole padded length past the cache
    tp = float(n.sum())
    ap = float(n @ c) + 0.5 * (float(n @ n) + tp)
    rd = rows - n_pre
    return (tp + rd, float(rows), tp, float(padded * n_pre), ap, float(rd), float(padded * rd),
            float(rd), float(padded * rd))


def _features_with_threshold(new, cached, threshold: int) -> tuple:
    """`batch_features` of an unpadded batch whose decode rows may feed several tokens."""
    new = np.asarray(new, dtype=np.int64)
    cached = np.asarray(cached, dtype=np.int64)
    dec = new <= threshold
    n, c = new[~dec], cached[~dec]
    tp = float(n.sum())
    cp = float(c.sum()) + tp
    ap = float(n @ c) + 0.5 * (float(n @ n) + tp)
    n, c = new[dec], cached[dec]
    td = float(n.sum())
    cd = float(c.sum()) + td
    qd = float(n @ c) + 0.5 * (float(n @ n) + td)
    return tp + td, float(len(new)), tp, cp, ap, float(n.size), cd, td, qd
