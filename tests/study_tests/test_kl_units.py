"""A study whose strength is given in KL units (search.dose_units), run for real on the embedded model."""
from __future__ import annotations


def test_a_study_in_kl_units_records_the_dose_it_asked_for(make_spec, embedded):
    from steeropt.runner.study import Study

    path = make_spec(name="kl-units", search_space={"name": "kl-units", "sites": [
        {"layer": 4, "vector": "wedding", "controller": "add", "alpha": {"low": 0.0, "high": 1.0, "unit": "kl"}}]},
        optimizer={"name": "grid", "settings": {"grid_size": 2}}, budget={"trials": 2, "batch_size": 2,
                                                                        "prompts_per_trial": 2})
    study = Study.from_spec(str(path))
    study.setup(lm=embedded)
    try:
        df = study.run()
    finally:
        study.close()
    row = df[df["params.alpha_l4_wedding"] == 1.0].iloc[0]
    # the α the dose maps to, normalised and raw, recorded beside the dose
    assert row["alpha.L4.add.wedding"] == study.space.materialize({"alpha_l4_wedding": 1.0}).alphas[0] > 0
    assert row["raw.L4.add.wedding"] > 0
    assert df[df["params.alpha_l4_wedding"] == 0.0].iloc[0]["alpha.L4.add.wedding"] == 0.0
    # the trial's measured KL on its own samples is of the order of the asked dose (other text, same α)
    assert 0.2 < row["value.kl"] < 5.0
