"""What each attention head does, in four numbers, from attention probabilities P (L, B, H, Tq, Tk).

For query i (its position among the keys is i + Tk - Tq, as in the causal rule) and key j:

    entropy          -sum_j P[i, j] log P[i, j]           in nats: 0 when a head looks at one key, log(n) when it
                                                          spreads evenly over n keys
    distance         sum_j P[i, j] |i + Tk - Tq - j|      mean attended distance, in positions
    previous_token   P[i, i + Tk - Tq - 1]                the weight on the token just before
    first_token      P[i, 0]                              the weight on the first token

each averaged over the batch and over the queries that have a token before them (query 0 of a causal head can
only look at itself), leaving out query rows that attend to nothing and, given ``query_mask``, padding queries.
A head whose mean weight on the previous (first) token is at least ``threshold``, and the larger of the two, is a
previous-token (first-token) head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend

ROLES = ("previous-token", "first-token")


@dataclass
class HeadSummary:
    """Per head, each (L, H): entropy, distance, previous_token, first_token; role: (L, H) strings ("" for none)."""

    entropy: np.ndarray
    distance: np.ndarray
    previous_token: np.ndarray
    first_token: np.ndarray
    role: np.ndarray
    threshold: float

    def rows(self) -> list[dict]:
        """One dict per head: layer, head, entropy, distance, previous_token, first_token, role."""
        L, H = self.entropy.shape
        return [dict(layer=l, head=h, entropy=float(self.entropy[l, h]), distance=float(self.distance[l, h]),
                     previous_token=float(self.previous_token[l, h]), first_token=float(self.first_token[l, h]),
                     role=str(self.role[l, h])) for l in range(L) for h in range(H)]


def head_summary(maps, query_mask=None, threshold: float = 0.5) -> HeadSummary:
    """maps: (L, B, H, Tq, Tk) attention probabilities (as ``attention_maps`` returns them; device arrays come home).
    query_mask: None or boolean (B, Tq), True at real queries (an encoder's non-padding tokens)."""
    P = backend.to_numpy(maps).astype(np.float64)
    if P.ndim != 5:
        raise ValueError(f"head_summary: maps must be (L, B, H, Tq, Tk), got shape {P.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"head_summary: threshold must be in (0, 1], got {threshold}")
    L, B, H, Tq, Tk = P.shape
    offset = Tk - Tq
    pos = np.arange(Tq) + offset  # each query's position among the keys
    # queries counted: a token before them, something attended, and not padding
    counted = np.broadcast_to((pos >= 1)[None, None, None, :], (L, B, H, Tq)) & (P.sum(axis=-1) > 0.5)
    if query_mask is not None:
        query_mask = backend.to_numpy(query_mask).astype(bool)
        if query_mask.shape != (B, Tq):
            raise ValueError(f"head_summary: query_mask must be (B, Tq) = {(B, Tq)}, got {query_mask.shape}")
        counted = counted & query_mask[None, :, None, :]
    n = counted.sum(axis=(1, 3))  # (L, H)
    if (n == 0).any():
        raise ValueError("head_summary: no query has a token before it to average over (Tq + offset < 2, or "
                         "everything masked)")

    def mean(values):  # (L, B, H, Tq) -> (L, H), over the counted queries
        return np.where(counted, values, 0.0).sum(axis=(1, 3)) / n

    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
    entropy = mean(-plogp.sum(axis=-1))
    dist = np.abs(pos[:, None] - np.arange(Tk)[None, :])  # (Tq, Tk)
    distance = mean((P * dist).sum(axis=-1))
    prev_idx = np.clip(pos - 1, 0, Tk - 1)
    previous = mean(np.take_along_axis(P, np.broadcast_to(prev_idx[:, None], (Tq, 1))[None, None, None], -1)[..., 0])
    first = mean(P[..., 0])
    role = np.full((L, H), "", dtype=object)
    role[(previous >= threshold) & (previous >= first)] = "previous-token"
    role[(first >= threshold) & (first > previous)] = "first-token"  # (at query 1 the two are one key)
    return HeadSummary(entropy, distance, previous, first, role, threshold)


def format_head_table(summary: HeadSummary) -> str:
    """The summary as a text table, one line per head."""
    lines = [f"{'layer':>5} {'head':>4} {'entropy':>8} {'distance':>8} {'prev-tok':>8} {'first-tok':>9}  role",
             f"{'':>5} {'':>4} {'(nats)':>8} {'(tokens)':>8} {'weight':>8} {'weight':>9}"]
    for r in summary.rows():
        lines.append(f"{r['layer']:>5} {r['head']:>4} {r['entropy']:>8.3f} {r['distance']:>8.2f} "
                     f"{r['previous_token']:>8.3f} {r['first_token']:>9.3f}  {r['role']}")
    return "\n".join(lines)
