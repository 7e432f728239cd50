#!/usr/bin/env python3
"""Summarise a kosoku (Autobahn-format) report directory.

Usage: tally.py REPORT_DIR [--expect N]

Reads REPORT_DIR/index.json ({agent: {case_id: {behavior, behaviorClose,
remoteCloseCode, duration, reportfile}}}), prints per-agent counts of
`behavior` and `behaviorClose`, then lists every case that is not clean:
  - behavior other than OK (INFORMATIONAL is accepted for 7.1.6, 7.13.1,
    7.13.2, which Autobahn marks informational), or
  - behaviorClose other than OK / INFORMATIONAL.
With --expect N, an agent with fewer than N cases is also a failure.
Exit status: 0 clean, 1 some case not clean, 2 no/invalid report.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

INFORMATIONAL_OK = {"7.1.6", "7.13.1", "7.13.2"}
CLOSE_OK = {"OK", "INFORMATIONAL"}


def sort_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".") if p.isdigit()]


def is_clean(case_id: str, entry: dict) -> bool:
    behavior = entry.get("behavior")
    if behavior != "OK" and not (
        behavior == "INFORMATIONAL" and case_id in INFORMATIONAL_OK
    ):
        return False
    return entry.get("behaviorClose") in CLOSE_OK


def detail(report_dir: str, entry: dict) -> str:
    """One-line reason from the per-case report, if it is there."""
    try:
        with open(os.path.join(report_dir, entry["reportfile"])) as f:
            case = json.load(f)
    except (OSError, KeyError, ValueError):
        return ""
    parts = [case.get("result") or ""]
    if entry.get("behaviorClose") not in CLOSE_OK and case.get("resultClose") not in parts:
        parts.append(case.get("resultClose") or "")
    reason = case.get("remoteCloseReason")
    if reason:
        parts.append(f"peer reason: {reason!r}")
    return " | ".join(p for p in parts if p)[:200]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("report_dir")
    ap.add_argument("--expect", type=int, default=None, help="cases each agent must have")
    args = ap.parse_args()

    index_path = os.path.join(args.report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"conformance: no usable report at {index_path}: {e}", file=sys.stderr)
        return 2
    if not index:
        print(f"conformance: {index_path} has no results", file=sys.stderr)
        return 2

    bad_total = 0
    case_total = 0
    for agent in sorted(index):
        cases = index[agent]
        ids = sorted(cases, key=sort_key)
        behaviors = collections.Counter(cases[c].get("behavior") for c in ids)
        closes = collections.Counter(cases[c].get("behaviorClose") for c in ids)
        print(f"== agent {agent!r}: {len(ids)} cases")
        print("   behavior:      " + ", ".join(f"{k}={v}" for k, v in behaviors.most_common()))
        print("   behaviorClose: " + ", ".join(f"{k}={v}" for k, v in closes.most_common()))
        bad = [c for c in ids if not is_clean(c, cases[c])]
        for c in bad:
            e = cases[c]
            print(
                f"   NOT OK {c}: behavior={e.get('behavior')} "
                f"behaviorClose={e.get('behaviorClose')} "
                f"remoteCloseCode={e.get('remoteCloseCode')} -- {detail(args.report_dir, e)}"
            )
        if args.expect is not None and len(ids) < args.expect:
            print(f"   NOT OK: only {len(ids)} of {args.expect} cases were run")
            bad_total += 1
        bad_total += len(bad)
        case_total += len(ids)

    print(f"conformance: {'FAIL' if bad_total else 'PASS'} "
          f"({bad_total} problem(s)); reports in {args.report_dir}/index.html")
    clean = case_total - min(bad_total, case_total)
    print(f"autobahn: {clean} passed, {case_total - clean} failed")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
