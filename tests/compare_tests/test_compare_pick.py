"""compare / pick / profiles on two tiny real studies; GGUF control vectors read back with the gguf package."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml

from steeropt.report.compare import ComparisonError, compare, front_hypervolume, hypervolume_band
from steeropt.errors import SteeroptError
from steeropt.deploy.profiles import ProfileError, apply_profile, load_profile, read_control_vector

OBJ = [("concept", "maximize"), ("coherency", "maximize")]


def _frame(points, width=0.1):
    return pd.DataFrame([{"number": i, "state": "COMPLETE", "concept": c, "coherency": k, "feasible": True,
                          "concept.ci_low": c - width, "concept.ci_high": c + width,
                          "coherency.ci_low": k - width, "coherency.ci_high": k + width}
                         for i, (c, k) in enumerate(points)])


def test_dominating_front_has_larger_hypervolume():
    weak = _frame([(0.2, 0.8), (0.5, 0.5), (0.7, 0.2)])
    strong = _frame([(0.3, 0.9), (0.6, 0.6), (0.8, 0.3)])  # every point dominates one of `weak`
    unit = ["concept", "coherency"]  # scores in [0, 1]: the fixed reference (0, 0), shared by both frames
    assert front_hypervolume(strong, OBJ, unit=unit) > front_hypervolume(weak, OBJ, unit=unit) > 0
    lo, hi = hypervolume_band(weak, OBJ, n=200, unit=unit)
    assert lo <= front_hypervolume(weak, OBJ, unit=unit) <= hi and hi > lo
    # infeasible and failed trials add nothing
    extra = pd.concat([weak, _frame([(0.9, 0.9)]).assign(feasible=False, number=9)], ignore_index=True)
    assert front_hypervolume(extra, OBJ, unit=unit) == pytest.approx(front_hypervolume(weak, OBJ, unit=unit))


def test_hypervolume_of_an_unbounded_objective_is_not_dropped():
    # Bug 9: KL is allowed as an objective; the old [0, 1] reference (KL <= 1) silently gave every trial
    # with KL > 1 no volume. The reference now comes from the trials, for the front and for the band.
    df = pd.DataFrame([{"number": i, "state": "COMPLETE", "concept": c, "kl": k, "feasible": True,
                        "concept.ci_low": c - 0.05, "concept.ci_high": c + 0.05, "kl.ci_low": k - 0.3,
                        "kl.ci_high": k + 0.3} for i, (c, k) in enumerate([(0.3, 1.5), (0.6, 3.0), (0.9, 6.0)])])
    objs = [("concept", "maximize"), ("kl", "minimize")]
    # reference (0, 6.45) with concept a [0, 1] score: three slabs 0.3 * 4.95 + 0.3 * 3.45 + 0.3 * 0.45
    assert front_hypervolume(df, objs, unit=["concept"]) == pytest.approx(2.655)
    assert front_hypervolume(df, objs) > 0  # concept not declared a score: its reference is derived too
    lo, hi = hypervolume_band(df, objs, n=100, unit=["concept"])
    assert 0 < lo < hi


def test_compare_two_controllers(tiny_studies):
    out = tiny_studies["dir"] / "cmp"
    cmp = compare([str(tiny_studies["add"]), str(tiny_studies["clamp"])], out_dir=out, taus=(0.3, 0.5), n_boot=50)
    assert list(cmp.table["controller"]) == ["add", "clamp"]
    assert (cmp.table["complete"] == 3).all() and (cmp.table["hypervolume"] >= 0).all()
    assert {"best@0.3", "best@0.5", "hv_low", "hv_high"} <= set(cmp.table.columns)
    for f in ("compare.png", "compare.html", "dose.png", "table.md", "table.csv"):
        assert (out / f).stat().st_size > 0
    # logged to MLflow as a comparison run
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_studies['dir'] / 'mlflow.db'}")
    run = client.get_run(cmp.run_id)
    assert run.data.tags["steeropt.kind"] == "comparison"
    assert "tiny-add.hypervolume" in run.data.metrics
    assert {a.path for a in client.list_artifacts(cmp.run_id, "comparison")} >= {"comparison/compare.png",
                                                                                 "comparison/table.md"}


def test_compare_refuses_mismatched_studies(tiny_studies):
    from tests.study_tests.conftest import tiny_spec

    base = tiny_studies["dir"]
    other = tiny_spec(base, name="tiny-other", objective="tiered-default",
                      prompts={"families": [{"name": "open_ended",
                                             "path": str(Path(yaml.safe_load(tiny_studies["add"].read_text())
                                                              ["prompts"]["families"][0]["path"]))}]},
                      budget={"trials": 4, "batch_size": 4, "prompts_per_trial": 4})
    optuna.create_study(study_name="tiny-other", storage=f"sqlite:///{base / 'study.db'}",
                        directions=["maximize", "maximize"], load_if_exists=True)
    with pytest.raises(ComparisonError) as err:
        compare([str(tiny_studies["add"]), str(other)], out_dir=base / "cmp2", track=False)
    msg = str(err.value)
    assert "prompts differ" in msg and "objective differs" in msg and "judge differs" in msg and "--force" in msg
    assert not (base / "cmp2").exists()  # nothing written


def test_pick_selects_on_selection_and_reports_held_out(tiny_studies, picked, embedded):
    from steeropt.deploy.pick import pick
    from steeropt.specs import build
    from steeropt.specs.prompts import trial_prompts

    res, out = picked
    spec = build("study", str(tiny_studies["add"]))
    splits = spec.splits()
    scored = {t for _, t in trial_prompts(spec)}
    for fam, p in res.families.items():
        assert p.status == "ok"
        assert set(p.selection_prompts) <= scored
        assert set(p.held_out_prompts) == set(splits[fam].held_out)
        assert not set(p.selection_prompts) & set(p.held_out_prompts)  # no prompt in both
        assert not scored & set(p.held_out_prompts)  # the trials never saw a held-out prompt
        assert p.held_out_counts["prompts"] == len(splits[fam].held_out)
        assert p.held_out["kl"][0] > 0 and p.unsteered_held_out["coherency"][0] is not None
        # 1-D space: chosen from the fitted curves, the sweet spot too (KL >= the target wherever coherency >= 0)
        assert p.source.startswith("fit") and p.fit is not None and p.sweet_spot["interval"] is not None
        assert p.verdict["beats_unsteered"] and p.verdict["meets_constraints"]
    prof = load_profile(out)
    assert prof.model["sha256"] == embedded.sha256
    fam = prof.families["open_ended"]
    assert fam["held_out"]["coherency"]["ci"] is not None and fam["selection"]["prompts"] >= 1
    # a constraint nobody meets: a clear "no deployable setting" with the closest candidates
    res2 = pick(str(tiny_studies["add"]), min_coherency=1.01, held_out=False)
    for p in res2.families.values():
        assert p.status == "no_deployable_setting" and p.closest and "coherency" in p.reason


def _regenerate(lm, prompts, decoding, model=None, tokenizer=None):
    tok = lm.tokenizer
    enc = tok([lm.render(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = (model or lm.model).generate(**enc, **decoding.generate_kwargs(), pad_token_id=tok.pad_token_id)
    eos = {tok.eos_token_id} | set(np.atleast_1d(lm.model.generation_config.eos_token_id or []).tolist())
    ids = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        ids.append(row if stop is None else row[:stop + 1])
    return ids


def test_profile_reproduces_the_chosen_setting(tiny_studies, picked, embedded):
    from steeropt.engine.generation import Generator
    from steeropt.runner.harness import build_vectors
    from steeropt.specs import build

    res, out = picked
    prof = load_profile(out)
    spec = build("study", str(tiny_studies["add"]))
    space, vectors = spec.part("search_space"), build_vectors(embedded, spec)
    checked = 0
    for fam, p in res.families.items():
        assert p.sites and p.sites[0]["alpha"] > 0  # a steered setting
        prompts = [t for t in p.held_out_prompts[:2]]
        # the study's engine at the chosen α (what the held-out numbers were measured with) ...
        ref = Generator(embedded, vectors).run([(fam, t) for t in prompts], [space.materialize(p.chosen.params)],
                                               prof.decoding())
        # ... gives the same tokens as the exported profile applied to the model
        with apply_profile(embedded, prof, fam):
            ids = _regenerate(embedded, prompts, prof.decoding())
        assert ids == [r.token_ids for r in ref]
        # also on a raw transformers model + tokenizer (identified by its weights fingerprint); once is enough
        if checked == 0:
            with apply_profile(embedded.model, prof, fam, tokenizer=embedded.tokenizer):
                assert _regenerate(embedded, prompts, prof.decoding()) == ids
        checked += 1
    assert checked == len(res.families)
    # the hooks are gone after the block
    assert not embedded.adapter.layer(4)._forward_hooks and not embedded.model.model._forward_pre_hooks


def test_profile_errors(picked, embedded, tmp_path):
    import shutil

    from steeropt.cli import main

    src = picked[1]
    with pytest.raises(ProfileError, match="no family 'poetry'"):
        apply_profile(embedded, src, "poetry")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = yaml.safe_load((bad / "profile.yaml").read_text())
    data["model"]["sha256"] = "0" * 64
    data["model"]["fingerprint"] = "f" * 64
    (bad / "profile.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="made for model"):
        apply_profile(embedded, bad, "open_ended")
    with pytest.raises(ProfileError, match="weights fingerprint"):
        apply_profile(embedded.model, bad, "open_ended", tokenizer=embedded.tokenizer)
    assert issubclass(ProfileError, SteeroptError)
    for args in (["generate", "--profile", str(src), "--family", "poetry", "hi"],
                 ["generate", "--profile", str(tmp_path / "nope"), "--family", "advice", "hi"]):
        with pytest.raises(SystemExit) as ex:
            main(args)
        assert ex.value.code == 2


def test_gguf_control_vector_reads_back(picked):
    import gguf

    res, out = picked
    prof = load_profile(out)
    vec = prof.vectors()["wedding"]
    for fam, p in res.families.items():
        f = prof.families[fam]
        path = out / f["llama_cpp"]["control_vector"]
        reader = gguf.GGUFReader(str(path))
        assert [t.name for t in reader.tensors] == ["direction.4"]
        t = reader.tensors[0]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [576]
        meta, dirs = read_control_vector(path)
        assert meta["general.architecture"] == "controlvector" and meta["controlvector.layer_count"] == 1
        assert meta["controlvector.model_hint"] == "llama"
        raw = p.sites[0]["raw_alpha"]
        np.testing.assert_allclose(dirs[4], raw * vec.vector.numpy(), rtol=1e-6, atol=1e-6)
        # = α · m · v̂ : what our add controller adds to layer 4's output
        np.testing.assert_allclose(np.linalg.norm(dirs[4]), p.sites[0]["alpha"] * vec.mean_norm, rtol=1e-4)


def test_pick_counts_a_clamp_at_alpha_zero_as_a_dose():
    # Bug 4: clamp at α=0 ablates. A tent of clamp-to-0 over 7 layers is a bigger intervention than a
    # 3-layer clamp tent at α=0.5, and tied trials must be decided that way (fewest steering sites first).
    from optuna.trial import TrialState, create_trial

    from steeropt.report.pick import choose, family_candidates
    from steeropt.search.optimizers import distributions
    from steeropt.search.spaces import SearchSpaceSpec

    space = SearchSpaceSpec.model_validate({"name": "clamp-tent", "kernels": [{
        "vector": "wedding", "layers": [2, 8], "controller": "clamp", "peak_layer": {"low": 2, "high": 8},
        "peak_alpha": {"low": 0.0, "high": 1.0}, "width": {"low": 1, "high": 3}}]})
    fam = {"values": {"concept": 0.6, "coherency": 0.8}, "intervals": {"concept": [0.5, 0.7], "coherency": [0.7, 0.9]}}
    settings = [{"tent_peak_layer": 5, "tent_peak_alpha": 0.0, "tent_width": 3.0, "tent_floor": 1.0},
                {"tent_peak_layer": 5, "tent_peak_alpha": 0.5, "tent_width": 1.0, "tent_floor": 1.0}]
    trials = [create_trial(state=TrialState.COMPLETE, params=p, distributions=distributions(space), values=[0.6, 0.8],
                           user_attrs={"families": {"advice": fam}}) for p in settings]
    for i, t in enumerate(trials):
        t.number = i
    cands = family_candidates(trials, "advice", "concept", "coherency", space)
    assert [c.n_sites for c in cands] == [7, 3]
    assert cands[0].n_sites > 0  # a clamp at α=0 is not zero dose
    assert choose(cands, tau=0.5).chosen.trial == 1
