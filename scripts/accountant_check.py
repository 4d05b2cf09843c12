#!/usr/bin/env python3
"""Compares `trainer federated epsilon` with Google's dp-accounting 0.6.0 over a grid of
(q, z, T, delta): RDP accountant, default orders, Poisson sampling, add/remove adjacency.

usage: accountant_check.py TRAINER_BINARY
Prints one row per point and the largest relative difference; exits 1 if any point differs by
more than 1e-4 relative (the bound the federated anchors set), 2 on a usage error.
"""
import itertools
import subprocess
import sys

from absl import logging
import dp_accounting

# dp-accounting warns for every fractional order whose series does not converge (it then skips
# that order, as the Rust accountant does); the table below is the output.
logging.set_verbosity(logging.ERROR)

TOLERANCE = 1e-4
QS = [0.001, 256 / 60000, 0.01, 0.05, 0.3, 1.0]
ZS = [0.6, 1.0, 1.1, 2.0, 5.0]
TS = [1, 100, 1000, 10000]
DELTAS = [1e-5, 1e-7]


def reference(q, z, steps, delta):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon_and_optimal_order(delta)


def ours(binary, q, z):
    """{(T, delta): (epsilon, order)} from one run of the CLI over every T and delta."""
    out = subprocess.run(
        [binary, "federated", "epsilon", "--q", repr(q), "--noise-multiplier", repr(z),
         "--steps", ",".join(map(str, TS)), "--delta", ",".join(map(repr, DELTAS))],
        check=True, capture_output=True, text=True).stdout.splitlines()
    # "epsilon E order A steps T delta D"
    rows = [line.split() for line in out]
    return {(int(r[5]), float(r[7])): (float(r[1]), float(r[3])) for r in rows}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    worst, failures, rows = 0.0, 0, 0
    print(f"{'q':>9} {'z':>4} {'T':>6} {'delta':>6} {'dp-accounting':>14} {'metarec':>14} {'rel diff':>9} order")
    cache = {}
    for q, z, steps, delta in itertools.product(QS, ZS, TS, DELTAS):
        eps_ref, order_ref = reference(q, z, steps, delta)
        if (q, z) not in cache:
            cache[(q, z)] = ours(binary, q, z)
        eps, order = cache[(q, z)][(steps, delta)]
        rel = abs(eps - eps_ref) / max(abs(eps_ref), 1e-12) if eps_ref != eps else 0.0
        worst = max(worst, rel)
        bad = rel > TOLERANCE or (order != order_ref and rel > 1e-9)
        failures += bad
        rows += 1
        print(f"{q:9.6f} {z:4.1f} {steps:6d} {delta:6.0e} {eps_ref:14.9f} {eps:14.9f} {rel:9.2e} "
              f"{order:g}{'' if order == order_ref else f' (dp-accounting {order_ref:g})'}{'  FAIL' if bad else ''}")
    print(f"accountant vs dp-accounting 0.6.0: {rows} points, {failures} over {TOLERANCE:g} relative, "
          f"largest relative difference {worst:.2e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
