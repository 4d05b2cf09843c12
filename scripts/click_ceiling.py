#!/usr/bin/env python3
"""How far a click model's pooled AUC is from what knowing each user's click rate would give.

Reads the file `trainer eval --run RUN --predictions P.csv` writes for a click run and prints,
for every row (method or baseline): its pooled AUC, its per-user AUC, and the pooled AUC of an
oracle that keeps the row's ranking within each user but replaces the user's level with the
user's true click rate on the evaluated entries (unknowable before the labels arrive). Pooled AUC
mixes the ranking between users with the ranking within them; the oracle shows how much of it a
model could gain by knowing each user's rate exactly, with its own ranking within users.

    python3 scripts/click_ceiling.py P.csv [P2.csv ...]   # several files: the means too

Standard library only.
"""
import csv
import math
import sys
from collections import defaultdict


def auc(labels, scores):
    """Mann-Whitney AUC with ties counted half; None without both labels."""
    order = sorted(range(len(scores)), key=lambda k: scores[k])
    ranks = [0.0] * len(scores)
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[k]]:
            j += 1
        for m in range(k, j + 1):
            ranks[order[m]] = (k + j) / 2 + 1
        k = j + 1
    pos = sum(1 for y in labels if y > 0.5)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    return (sum(r for r, y in zip(ranks, labels) if y > 0.5) - pos * (pos + 1) / 2) / (pos * neg)


def logit(p):
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def row_figures(entries):
    """entries: [(user, label, probability)] -> (pooled AUC, per-user AUC, oracle pooled AUC)."""
    by_user = defaultdict(list)
    for user, label, p in entries:
        by_user[user].append((label, logit(p)))
    per_user = [auc([y for y, _ in e], [z for _, z in e]) for e in by_user.values()]
    per_user = [a for a in per_user if a is not None]
    labels, oracle = [], []
    for e in by_user.values():
        rate = logit(sum(y for y, _ in e) / len(e))
        centre = sum(z for _, z in e) / len(e)
        labels += [y for y, _ in e]
        oracle += [rate + z - centre for _, z in e]
    pooled = auc([y for _, y, _ in entries], [p for _, _, p in entries])
    return pooled, sum(per_user) / len(per_user), auc(labels, oracle)


def main(paths):
    table = defaultdict(list)
    for path in paths:
        rows = defaultdict(list)
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows[r["method"]].append((r["user_id"], float(r["truth"]), float(r["prediction"])))
        for name, entries in rows.items():
            table[name].append(row_figures(entries))
    print(f"{'row':40s} {'AUC':>7s} {'userAUC':>8s} {'oracle-rate AUC':>16s}  ({len(paths)} file(s), means)")
    for name, figures in table.items():
        means = [sum(f[k] for f in figures) / len(figures) for k in range(3)]
        print(f"{name:40s} {means[0]:7.4f} {means[1]:8.4f} {means[2]:16.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
