"""The nemesis: seeded schedules of random, overlapping faults on a 4-box passel, each checked for
lost, duplicated, stale and backwards answers, convergence and leaks.

Each seed runs tests/nemesis.py: four boxes in network namespaces (box 2's node is a real NodeODM
in test mode, the others the simulated node), an ODM-like split-merge job of 4 submodels through
box 1 (a follower), and 2 to 4 faults drawn from the seed (kill -9 and restart of an agent, SIGSTOP
of a box, one box cut off, the passel split in halves, a NodeODM killed or rebooted, a full disk, a
wall-clock jump). tests/history_check.py then reads the recorded history.

The baseline is the same job on the same passel with no fault, measured in the same run: the job
time ratio says what the faults cost. A failing seed's history is kept in
bench/results/nemesis/seed-N.json, and the seed is added to tests/nemesis_seeds.txt, which CI runs
with the fixed seeds (tests/test_nemesis.py). Replay one seed with `--seed N`.

    cd /work/main && .venv/bin/python bench/nemesis.py [--seeds 200] [--first 1] [--seed N ...]
                                   [--budget-minutes 0] [--no-record] [--results NAME]

Needs root, iproute2 and the NodeODM kit (../shared/nodeodm). Results go to bench/results/nemesis.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402
from tests.history_check import check  # noqa: E402
from tests.nemesis import BOXES, SEEDS_FILE, make_schedule, recorded_seeds, run_seed  # noqa: E402

FAILURES_DIR = common.RESULTS_DIR / "nemesis"
CONVERGENCE_TARGET_SECONDS = 10.0


def category(violation: str) -> str:
    """'lost', 'duplicated', 'stale COMPLETED', ...: the words before the first colon."""
    return violation.split(":", 1)[0]


def one(seed: int | None, scratch: Path, keep: bool) -> dict[str, Any]:
    """Run and check one seed (None: the no-fault baseline)."""
    workdir = scratch / ("baseline" if seed is None else f"seed-{seed}")
    started = time.monotonic()
    history = run_seed(seed or 0, workdir, schedule=[] if seed is None else None)
    verdict = check(history)
    if not keep and verdict.ok:  # a failing seed's box logs stay: its replay may take another path
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"seed": seed, "ok": verdict.ok, "violations": verdict.violations, "report": verdict.report,
              "wall_seconds": round(time.monotonic() - started, 1)}
    if seed is not None and not verdict.ok:
        FAILURES_DIR.mkdir(parents=True, exist_ok=True)
        (FAILURES_DIR / f"seed-{seed}.json").write_text(json.dumps({"result": result, "history": history}) + "\n")
    return result


def record_failed(seeds: list[int]) -> None:
    known = set(recorded_seeds())
    new = [s for s in seeds if s not in known]
    if new:
        with SEEDS_FILE.open("a") as out:
            out.writelines(f"{s}  # found by bench/nemesis.py: say here what it was once it is fixed\n" for s in new)


def summarize(results: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    counts = Counter(category(v) for r in results for v in r["violations"])
    reports = [r["report"] for r in results]
    convergence = sorted(c for c in (p.get("convergence_seconds") for p in reports) if c is not None)
    jobs = [p["job_seconds"] for p in reports if p.get("job_seconds")]
    base_job = baseline["report"].get("job_seconds")
    return {
        "seeds": len(results), "failed_seeds": [r["seed"] for r in results if not r["ok"]],
        "violations": dict(counts),
        "lost": counts["lost"] + counts["stuck"], "duplicated": counts["duplicated"] + counts["undone removal"],
        "stale_completed": counts["stale COMPLETED"], "backwards": counts["backwards"],
        "false_not_found": counts["false not-found"], "leaked": counts["leaked"],
        "no_convergence": counts["no convergence"],
        "convergence_seconds": {"median": statistics.median(convergence) if convergence else None,
                                "p90": common.percentile(convergence, 90) if convergence else None,
                                "max": convergence[-1] if convergence else None},
        "resubmissions_per_job": {"median": statistics.median(p["resubmissions"] for p in reports) if reports else None,
                                  "max": max((p["resubmissions"] for p in reports), default=None)},
        "error_replies_median": statistics.median(p["error_replies"] for p in reports) if reports else None,
        "slowest_reply_seconds": max((p["slowest_reply"]["seconds"] for p in reports if p.get("slowest_reply")),
                                     default=None),
        "orphan_runs": sum(p.get("orphan_runs", 0) for p in reports),
        "job_seconds": {"median": statistics.median(jobs) if jobs else None, "baseline": base_job,
                        "ratio": round(statistics.median(jobs) / base_job, 2) if jobs and base_job else None},
    }


def print_summary(s: dict[str, Any]) -> None:
    conv = s["convergence_seconds"]
    print(f"\n{s['seeds']} seeds on {BOXES} boxes: {len(s['failed_seeds'])} failed {s['failed_seeds'][:20]}")
    print(f"  lost {s['lost']}, duplicated {s['duplicated']}, stale COMPLETED {s['stale_completed']}, "
          f"backwards {s['backwards']}, false not-found {s['false_not_found']}, leaked {s['leaked']}, "
          f"no convergence {s['no_convergence']}   (target: all 0)")
    print(f"  convergence after the last heal: median {conv['median']} s, p90 {conv['p90']} s, max {conv['max']} s "
          f"(target: median <= {CONVERGENCE_TARGET_SECONDS:g} s)")
    print(f"  resubmissions per job: median {s['resubmissions_per_job']['median']}, max "
          f"{s['resubmissions_per_job']['max']} (target: median <= 1); error replies per job: median "
          f"{s['error_replies_median']}; slowest reply {s['slowest_reply_seconds']} s; "
          f"copies of removed tasks run during a partition: {s['orphan_runs']}")
    job = s["job_seconds"]
    print(f"  job time: median {job['median']} s with faults, {job['baseline']} s without: ratio {job['ratio']}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds, from --first on")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--seed", type=int, action="append", help="run only this seed (repeatable): a replay")
    parser.add_argument("--budget-minutes", type=float, default=0, help="stop starting seeds after this long (0: none)")
    parser.add_argument("--no-record", action="store_true", help="do not add failing seeds to tests/nemesis_seeds.txt")
    parser.add_argument("--keep", action="store_true", help="keep every seed's logs and history")
    parser.add_argument("--results", default="nemesis", metavar="NAME",
                        help="write bench/results/NAME.json (two streams run side by side need two names)")
    args = parser.parse_args()
    seeds = args.seed or list(range(args.first, args.first + args.seeds))
    started = time.monotonic()
    digest = common.sources_digest()
    scratch = Path(tempfile.mkdtemp(prefix="passel-nemesis-"))
    print(f"Scratch: {scratch}")
    baseline = one(None, scratch, args.keep)
    print(f"baseline (no fault): job {baseline['report']['job_seconds']} s, ok={baseline['ok']} {baseline['violations']}")
    results = []
    for seed in seeds:
        if args.budget_minutes and time.monotonic() - started > args.budget_minutes * 60:
            print(f"Budget of {args.budget_minutes:g} min spent: stopping after {len(results)} seeds")
            break
        result = one(seed, scratch, args.keep)
        results.append(result)
        faults = ", ".join(result["report"].get("faults", []))
        print(f"seed {seed:4d} {'ok  ' if result['ok'] else 'FAIL'} {result['wall_seconds']:5.0f} s  "
              f"conv {result['report'].get('convergence_seconds')} s  resub {result['report'].get('resubmissions')}  "
              f"[{faults}] {'; '.join(result['violations'][:3])}"
              + "".join(f" (fault not made: {f})" for f in result["report"].get("faults_not_made", [])), flush=True)
    summary = summarize(results, baseline)
    print_summary(summary)
    if not args.no_record:
        record_failed(summary["failed_seeds"])
    if common.sources_digest() != digest:
        print("The code changed while this ran: the figures mix two versions")
    schedules = {r["seed"]: [str(f) for f in make_schedule(r["seed"])] for r in results}
    path = common.write_results(args.results, {"machine": common.machine(), "sources": digest, "summary": summary,
                                               "baseline": baseline, "results": results, "schedules": schedules})
    print(f"Results: {path}")
    if summary["failed_seeds"] or not baseline["ok"]:
        print(f"The failing runs' box logs are in {scratch}")
    elif not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if not summary["failed_seeds"] else 1


if __name__ == "__main__":
    sys.exit(main())
