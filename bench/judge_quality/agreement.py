"""How well does a judge agree with hand labels? Spearman rank correlation per rubric.

    python bench/judge_quality/agreement.py                       # local backend (local-default)
    python bench/judge_quality/agreement.py --base-url http://127.0.0.1:8080/v1 --model smollm2
    python bench/judge_quality/agreement.py --judge openai-example  # any judge spec by name/path

labelled.jsonl: prompt/response pairs written for steeropt (fluent on-concept, fluent off-concept,
partly on-concept, repetitive, gibberish, rambling) with concept_band and coherence_band in 0..2.
Concept rubrics (concept, trait) are compared with concept_band; coherency rubrics (fluency,
coherence) with coherence_band. Missing scores are left out of the correlation and counted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABEL_OF = {"concept": "concept_band", "trait": "concept_band", "fluency": "coherence_band",
            "coherence": "coherence_band", "instruction": None}


def main(argv: list[str] | None = None) -> dict:
    from scipy.stats import spearmanr

    from steeropt.evaluation.judges import JudgeRequest, load_judge_spec, make_judge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="local-default", help="judge spec name or path (default local-default)")
    ap.add_argument("--base-url", help="use an OpenAI-compatible endpoint instead (openai backend)")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model name for --base-url")
    ap.add_argument("--api-key-env", default=None, help="env var holding the key for --base-url (none if unset)")
    ap.add_argument("--rubrics", default="concept,fluency,trait,coherence")
    ap.add_argument("--labels", default=str(HERE / "labelled.jsonl"))
    ap.add_argument("--cache", default=None, help="SQLite cache file (default: none, every run judges afresh)")
    ap.add_argument("--json", dest="json_out", help="also write the report as JSON here")
    args = ap.parse_args(argv)

    spec = load_judge_spec(args.judge if not args.base_url else "llama-server")
    if args.base_url:
        spec = spec.model_copy(update={"name": "agreement-endpoint", "base_url": args.base_url,
                                       "model": args.model, "api_key_env": args.api_key_env})
    rows = [json.loads(line) for line in Path(args.labels).read_text().splitlines() if line.strip()]
    rubrics = [r for r in args.rubrics.split(",") if r]
    judge = make_judge(spec, cache=args.cache)
    report = {"judge": judge.identity, "n_items": len(rows), "rubrics": {}}
    print(f"judge: {judge.identity}  items: {len(rows)}")
    for name in rubrics:
        label = LABEL_OF.get(name)
        reqs = [JudgeRequest(name, r["prompt"], r["response"], r["concept"]) for r in rows]
        t0 = time.perf_counter()
        res = judge.judge(reqs)
        dt = time.perf_counter() - t0
        pairs = [(x.score, r[label]) for x, r in zip(res, rows) if x.score is not None] if label else []
        rho = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic) if len(pairs) > 2 else None
        methods = sorted({x.method for x in res if x.method})
        missing = [x.missing for x in res if x.score is None]
        by_kind: dict[str, list[float]] = {}
        for x, r in zip(res, rows):
            if x.score is not None:
                by_kind.setdefault(r["kind"], []).append(x.score)
        report["rubrics"][name] = {
            "label": label, "spearman": rho, "n_scored": len(res) - len(missing), "n_missing": len(missing),
            "missing_examples": missing[:3], "methods": methods, "seconds": round(dt, 1),
            "mean_score_by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_kind.items())},
        }
        rho_s = f"{rho:+.3f}" if rho is not None else "n/a"
        print(f"{name:12s} vs {label or '-':15s} spearman {rho_s}  scored {len(res) - len(missing)}/{len(res)}"
              f"  via {','.join(methods) or '-'}  {dt:.1f}s")
        print("             mean score by kind: " + ", ".join(
            f"{k} {v}" for k, v in report["rubrics"][name]["mean_score_by_kind"].items()))
        if missing:
            print(f"             missing e.g.: {missing[0]}")
    report["stats"] = {k: v for k, v in vars(judge.stats).items()}
    judge.close()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing
    main()
