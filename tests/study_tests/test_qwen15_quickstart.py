"""The quickstart's real parts on Qwen2.5-Coder-1.5B-Instruct, loaded once: the enthusiasm persona added at layer 14,
the 1.5B judging its own outputs from the same loaded copy, the prompted arm beside the trials, and pick's held-out
verdict with the unsteered and prompted answers. A small budget (3 strengths, 3 selection + 3 held-out prompts,
32 tokens); everything else is studies/quickstart.yaml as shipped."""
from __future__ import annotations

import json

import yaml

from steeropt.records import ARMS_KEY
from steeropt.deploy.pick import pick
from steeropt.runner.study import Study
from steeropt.specs import build
from tests.study_tests.conftest import REPO


PROMPTS = ["Describe a quiet beach in winter.", "Describe an old wooden boat.", "How do I plan a budget for a holiday?",
           "Write a short story about a dog.", "Describe a busy city street.", "How can I sleep better at night?"]


def spec_file(tmp_path) -> str:
    spec = build("study", REPO / "studies" / "quickstart.yaml").model_dump(mode="json")  # includes applied
    spec |= {"name": "qs15",
             # split_seed 6: beach, boat and budget are the selection prompts (the trials' and arms')
             "prompts": {"families": [{"name": "advice", "prompts": PROMPTS}], "split_seed": 6},
             "decoding": {"max_new_tokens": 32},
             "optimizer": {"name": "grid", "settings": {"grid_size": 3}},
             "budget": {"trials": 3, "batch_size": 3, "prompts_per_trial": 3},
             "storage": f"sqlite:///{tmp_path / 'study.db'}", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
             "traces": 0.0}
    path = tmp_path / "qs15.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_quickstart_parts_on_the_1p5b(qwen15, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = spec_file(tmp_path)
    study = Study.from_spec(path)
    study.setup(lm=qwen15)
    try:
        assert study.judge.lm is qwen15  # the judge grades with the steered model's own loaded copy
        df = study.run()
        arms = study.optimizer.study.user_attrs[ARMS_KEY]
    finally:
        study.close()
    assert set(df["state"]) == {"COMPLETE"} and len(df) == 3
    # the teacher-forced passes are skipped: the objective reads only text gates and judged scores
    assert study.stack.tier1.teacher_forced is False and df["value.kl"].isna().all()
    assert set(arms) == {"unsteered", "prompted"}
    # asked for the voice after the prompt, the unsteered 1.5B uses it (more of the persona's words, a higher
    # judged concept); unasked, less so
    assert arms["prompted"]["values"]["keyword_hits"] > arms["unsteered"]["values"]["keyword_hits"]
    assert arms["prompted"]["values"]["concept"] > arms["unsteered"]["values"]["concept"]
    texts = [json.loads(x)["text"] for x in (tmp_path / "runs" / "qs15" / "arm_prompted.jsonl").read_text().splitlines()]
    assert len(texts) == 3 and all(texts)

    res = pick(path, lm=qwen15)  # no profile export: one family gives the router nothing to route
    fam = res.to_dict()["families"]["advice"]
    assert fam["status"] in ("ok", "no_deployable_setting")
    if res.families["advice"].chosen is not None:
        # the held-out verdict stands beside the unsteered and the prompted model, with paired differences
        assert {"held_out", "unsteered_held_out", "prompted_held_out", "versus", "held_out_texts"} <= set(fam)
        assert len(fam["held_out_texts"]) == 3 and {"steered", "unsteered", "prompted"} <= set(fam["held_out_texts"][0])
        d = fam["versus"]["prompted"]["concept"]
        assert d["n"] == 3 and d["ci"][0] <= d["diff"] <= d["ci"][1]
        assert fam["verdict"]["versus_prompt"].split(":")[0] in ("steering wins", "prompt wins", "no clear difference")
