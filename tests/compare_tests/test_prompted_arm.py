"""The prompt baseline beside the steered trials (runner.arms, report.arms): every study scores the unsteered and
the prompted model on its trial prompts; compare and pick put the steered settings beside them with paired
intervals. On the tiny add/clamp studies of conftest (real embedded model, real storage)."""
from __future__ import annotations

import json

import optuna
import pytest

from steeropt.records import ARMS_KEY
from steeropt.report.arms import paired_arm_difference
from steeropt.report.compare import compare
from steeropt.specs import build


def test_paired_arm_difference_pairs_by_prompt():
    same = paired_arm_difference([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert same["diff"] == 0 and same["ci"] == [0, 0] and not same["clear"]
    up = paired_arm_difference([0.9, 0.8, 1.0, 0.7], [0.1, 0.2, 0.3, 0.2])
    assert up["clear"] and up["ci"][0] > 0 and up["diff"] == pytest.approx(0.65)
    # a prompt scored in one arm only is left out of the pairs
    assert paired_arm_difference([0.9, None, 1.0], [0.1, 0.5, 0.3])["n"] == 2
    assert paired_arm_difference([0.9], [0.1]) is None


def test_every_study_stores_its_unsteered_and_prompted_arms(tiny_studies):
    spec = build("study", str(tiny_studies["add"]))
    arms = optuna.load_study(study_name=spec.name, storage=spec.storage).user_attrs[ARMS_KEY]
    assert set(arms) == {"unsteered", "prompted"}
    for a in arms.values():
        assert set(a["families"]) == {"open_ended", "advice"} and a["values"]["coherency"] is not None
        assert len(a["prompt_scores"]["prompt"]) == spec.budget.prompts_per_trial
    runs = tiny_studies["dir"] / "runs" / spec.name
    unst = [json.loads(x) for x in (runs / "arm_unsteered.jsonl").read_text().splitlines()]
    prom = [json.loads(x) for x in (runs / "arm_prompted.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in unst] == [r["prompt"] for r in prom]  # the same prompts, paired
    assert [r["token_ids"] for r in unst] != [r["token_ids"] for r in prom]  # the instruction changed the answers


def test_compare_and_pick_report_the_prompted_arm(tiny_studies, picked):
    cmp = compare([str(tiny_studies["add"]), str(tiny_studies["clamp"])], track=False,
                  out_dir=tiny_studies["dir"] / "cmp-prompted", taus=(0.3,), n_boot=20)
    d = cmp.to_dict()["prompted"]
    assert set(d) == {"tiny-add", "tiny-clamp"}
    for fams in d.values():
        for row in fams.values():
            assert {"prompted", "unsteered", "best_trial"} <= set(row)
            if row["best_trial"] is not None:
                for diff in row["trial_vs_prompted"].values():  # every axis: maximised, coherency, constraints
                    assert diff is None or diff["ci"][0] <= diff["diff"] <= diff["ci"][1]
    assert "trial − prompted" in cmp.markdown()
    res, out = picked
    fams = json.loads((out / "pick.json").read_text())["families"]
    chosen = [f for f, p in res.families.items() if p.chosen is not None]
    assert chosen
    for f in chosen:
        assert "prompted_held_out" in fams[f] and "coherency" in fams[f]["prompted_held_out"]
        texts = fams[f]["held_out_texts"]
        assert len(texts) == len(res.families[f].held_out_prompts)
        assert all({"prompt", "steered", "unsteered", "prompted"} <= set(t) for t in texts)
        d = fams[f]["versus"]["prompted"]["coherency"]  # paired steered − prompted over the held-out prompts
        assert d["n"] == len(texts) and d["ci"][0] <= d["diff"] <= d["ci"][1]
