"""Score labelled items with an objective's judge in chunks, filling the judge's cache (its spec's `cache` file in
the working directory) as it goes, so a stopped run loses at most one chunk and a later `steeropt judge check` or
`judge calibrate` of the same items asks the judge nothing again.

    cd WORKDIR && python bench/judge_quality/judge_labels.py LABELS.jsonl [...] --objective tiered-qwen-raw \
        --model qwen2.5-coder-1.5b-instruct
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", nargs="+")
    ap.add_argument("--objective", required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--chunk", type=int, default=24)
    args = ap.parse_args(argv)
    from steeropt.cli.judge import _setup
    from steeropt.evaluation.validation import read_labels, score_items

    items = [it for f in args.labels for it in read_labels(f)]
    spec, lm, judge = _setup(args.objective, None, args.model)
    t0 = time.time()
    for i in range(0, len(items), args.chunk):
        score_items(lm, spec, items[i:i + args.chunk], judge, judge_all=True)
        done = min(len(items), i + args.chunk)
        print(f"{done}/{len(items)} items, {time.time() - t0:.0f} s, judge calls {judge.stats.calls}", file=sys.stderr,
              flush=True)


if __name__ == "__main__":
    main()
