"""The exact cut from summaries: histograms of the selection order, narrowed pass by pass to one element.

    python -c "from corpusdb.distributed.radix import bin_of; import numpy as np; print(bin_of(np.array([0., .5, 1.]), np.zeros(3, np.int64), (0., 0, 1., 0), 4))"

Every cut policy keeps a prefix of its units in a total order: the order key `k` ascending (a
descending score is negated, exactly), then `unit_id` ascending for ties. Each unit has a weight `w`
(1 for a count, its bytes or tokens for a budget). The prefix ends where a running total of the
weights crosses a threshold `T`, by one of two rules:

- `before`: keep each unit whose weight *before* it is `< T` (`difference`: T = ceil(alpha * N) units;
  `difference_bytes`: T = alpha of the bytes; `difference_sampled`, `difference_by_source` alike);
- `through`: keep each unit whose weight *through* it is `<= T` (`quota`, `mixture`: the running
  total stays within the budget).

The driver never sees the units. It holds a window of the order (first and last (k, unit_id),
initially the whole group) and the weight before it; every task bins its units inside the window
(`bin_of`: a monotone function of the order, so each bin is an interval of it) and returns per
bin the count, the weight and its first and last (k, unit_id). Walking the merged bins in order
finds the one bin where the rule flips; it becomes the window. A window of at most `resolve_rows`
units is fetched whole and resolved here exactly. Each pass divides the window by up to `nbins`:
over distinct values by k, and where all of a window's units share one k (ties), by unit_id,
so any number of ties takes at most 64 / log2(nbins) more passes. The cut is the last kept unit
(k*, u*): every task then keeps exactly the units with (k, unit_id) <= (k*, u*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("before", "through")
U64 = 1 << 64


def bin_of(k: np.ndarray, u: np.ndarray, window: tuple, nbins: int) -> np.ndarray:
    """The bin (0..nbins-1) of each unit (k, u) inside `window` = (k_first, u_first, k_last, u_last): non-decreasing
    in (k, u), the same on every machine (IEEE arithmetic), and the window's first and last units in different
    bins whenever they differ."""
    klo, ulo, khi, uhi = window
    if klo < khi:
        width = khi * 0.5 - klo * 0.5  # halves: no overflow between the extremes of the doubles
        if not width > 0:
            return (k > klo).astype(np.int64)
        scaled = np.floor((k * 0.5 - klo * 0.5) / width * nbins)
        return np.clip(scaled, 0, nbins - 1).astype(np.int64)
    span = (int(uhi) - int(ulo)) % U64  # all k equal: split the unit ids
    shift = max(0, span.bit_length() - (nbins.bit_length() - 1))
    offset = u.astype(np.uint64) - np.uint64(int(ulo) % U64)  # wraps modulo 2**64: the true distance
    return (offset >> np.uint64(shift)).astype(np.int64)


def window_slice(k: np.ndarray, u: np.ndarray, window: tuple) -> slice:
    """The rows of sorted (k, u) inside the window (first and last included)."""
    klo, ulo, khi, uhi = window
    start = np.searchsorted(k, klo, "left")
    start += np.searchsorted(u[start:np.searchsorted(k, klo, "right")], ulo, "left")
    end_k = np.searchsorted(k, khi, "left")
    end = end_k + np.searchsorted(u[end_k:np.searchsorted(k, khi, "right")], uhi, "right")
    return slice(int(start), int(max(start, end)))


def histogram(k: np.ndarray, u: np.ndarray, w: np.ndarray, window: tuple, nbins: int) -> dict:
    """Per non-empty bin of the window: bin, count, weight, first (k, u) and last (k, u); k, u sorted."""
    rows = window_slice(k, u, window)
    k, u, w = k[rows], u[rows], w[rows]
    if not len(k):
        return {"bin": np.zeros(0, np.int64)}
    bins = bin_of(k, u, window, nbins)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(bins)] - 1
    return {"bin": bins[starts], "count": np.diff(np.r_[starts, len(bins)]), "weight": np.add.reduceat(w, starts),
            "k_first": k[starts], "u_first": u[starts], "k_last": k[ends], "u_last": u[ends]}


def merge(histograms: list[dict]) -> dict:
    """One histogram of the bins of many tasks' histograms of the same window."""
    parts = [h for h in histograms if len(h["bin"])]
    if not parts:
        return {"bin": np.zeros(0, np.int64)}
    cat = {key: np.concatenate([h[key] for h in parts]) for key in parts[0]}
    order = np.lexsort((cat["u_first"], cat["k_first"], cat["bin"]))
    cat = {key: value[order] for key, value in cat.items()}
    starts = np.flatnonzero(np.r_[True, cat["bin"][1:] != cat["bin"][:-1]])
    out = {"bin": cat["bin"][starts], "count": np.add.reduceat(cat["count"], starts),
           "weight": np.add.reduceat(cat["weight"], starts), "k_first": cat["k_first"][starts], "u_first": cat["u_first"][starts]}
    last = np.lexsort((cat["u_last"], cat["k_last"], cat["bin"]))  # the greatest last of each bin: the end of its run
    ends = np.r_[starts[1:], len(cat["bin"])] - 1
    out["k_last"], out["u_last"] = cat["k_last"][last][ends], cat["u_last"][last][ends]
    return out


@dataclass
class Search:
    """The search for one group's cut: the window holding it, the weight before the window, and the result."""

    rule: str
    threshold: object  # int, Decimal or float: compared exactly with integer running weights
    window: tuple  # (k_first, u_first, k_last, u_last)
    count: int  # units in the window
    before: int = 0  # weight of the group's units before the window
    last_before: tuple | None = None  # the last unit before the window (the cut, if none of the window is kept)
    cut: tuple | None = None
    done: bool = False

    def finish(self, cut: tuple | None) -> None:
        self.cut, self.done = cut, True

    def narrow(self, merged: dict) -> None:
        """Move the window to the bin where the rule flips (or finish: no unit of the window is kept, or all are)."""
        running, chosen = self.before, None
        for i in range(len(merged["bin"])):
            weight = int(merged["weight"][i])
            if self.rule == "before":
                if running < self.threshold:
                    chosen = (i, running)
                else:
                    break
            elif running + weight > self.threshold:
                chosen = (i, running)
                break
            running += weight
        if chosen is None:
            if self.rule == "before":  # not even the window's first unit is kept
                self.finish(self.last_before)
            else:  # every unit of the window is kept
                self.finish((float(merged["k_last"][-1]), int(merged["u_last"][-1])) if len(merged["bin"]) else self.last_before)
            return
        i, self.before = chosen
        if i > 0:
            self.last_before = (float(merged["k_last"][i - 1]), int(merged["u_last"][i - 1]))
        self.window = (float(merged["k_first"][i]), int(merged["u_first"][i]), float(merged["k_last"][i]), int(merged["u_last"][i]))
        self.count = int(merged["count"][i])

    def resolve(self, k: np.ndarray, u: np.ndarray, w: np.ndarray) -> None:
        """Find the cut among every unit of the window (k, u, w from all tasks, in any order)."""
        order = np.lexsort((u, k))
        k, u, w = k[order], u[order], w[order]
        cut, running = self.last_before, self.before
        for i in range(len(k)):
            weight = int(w[i])
            kept = running < self.threshold if self.rule == "before" else running + weight <= self.threshold
            if not kept:
                break
            cut, running = (float(k[i]), int(u[i])), running + weight
        self.finish(cut)


def kept_mask(k: np.ndarray, u: np.ndarray, cut: tuple | None) -> np.ndarray:
    """Which units (k, u) are at or before the cut in the order."""
    if cut is None:
        return np.zeros(len(k), bool)
    return (k < cut[0]) | ((k == cut[0]) & (u <= cut[1]))
