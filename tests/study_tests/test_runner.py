"""The runner's parts: the budget ledger (one count for budget, status and progress), give-back of asks past
the budget, and which model a local judge runs on. Real embedded model, real Optuna SQLite storage."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from steeropt.runner.study import Study

REPO = Path(__file__).resolve().parents[2]


def _setup(path, lm, **kw) -> Study:
    study = Study.from_spec(str(path), **kw)
    study.setup(lm=lm)
    return study


# ---- bug 7: status and the progress bar count like the budget ---------------------------------------------
def test_status_and_progress_bar_do_not_count_a_requeued_stale_trial(make_spec, embedded, tmp_path):
    from typer.testing import CliRunner

    from steeropt.cli import app
    from steeropt.runner.ledger import count

    path = make_spec(name="recount", budget={"trials": 3, "batch_size": 1, "prompts_per_trial": 2})
    crashed = _setup(path, embedded, track=False)
    [lost] = crashed.optimizer.ask(1)  # the process dies mid-trial: its trial stays RUNNING
    crashed.optimizer.close()
    study = _setup(path, embedded)
    try:
        df = study.run()  # sole runner: fails the lost trial as stale, re-queues it, spends the budget
    finally:
        study.close()
    trials = study.optimizer.study.get_trials()
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3, states  # 4 finished, 3 count
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == lost.number)
    assert retry.params == lost.params and retry.state.name == "COMPLETE"
    assert count(trials).done == 3 and count(trials).requeued == 1
    assert study.progress.done == 3
    assert df.loc[df["number"] == lost.number, "failed_reason"].str.startswith("stale").all()

    runner = CliRunner()
    res = runner.invoke(app, ["status", str(path)])
    assert res.exit_code == 0, res.output
    assert re.search(r"finished (\d+)", res.output).group(1) == "3", res.output
    # the progress bar of `run` starts from the same count (a finished study: nothing left to run)
    res = runner.invoke(app, ["run", str(path), "--trials", "0", "--no-track"])
    assert res.exit_code == 0, res.output
    bar = re.findall(r"recount trials\s.*?(\d+)/(\d+)", res.output)
    assert bar and bar[-1] == ("3", "3"), res.output


# ---- the ledger ---------------------------------------------------------------------------------------------
def test_ledger_gives_back_asks_past_the_budget_untouched(make_spec, embedded):
    """Two processes on one study, one slot left: the later ask is given back (WAITING, same params) and is
    handed out first by the next ask once there is room."""
    from steeropt.runner.ledger import Ledger

    path = make_spec(name="ledger", budget={"trials": 3, "batch_size": 2, "prompts_per_trial": 2})
    a, b = _setup(path, embedded, track=False), _setup(path, embedded, track=False)
    try:
        for c in a.optimizer.ask(2):
            a.optimizer.tell(c.number, {"keyword_rate": 0.5, "coherency": 0.5})
        ca, cb = a.optimizer.ask(1), b.optimizer.ask(1)  # both saw one slot left and asked
        assert a.ledger.keep(ca) == ca and b.ledger.keep(cb) == []
        waiting = b.optimizer.study.get_trials()[cb[0].number]
        assert waiting.state.name == "WAITING" and waiting.params == cb[0].params
        assert a.ledger.count().used == 3 and a.ledger.count().running == 1
        bigger = Ledger(b.optimizer, 4)  # room again: the given-back trial comes first, same params
        again = b.optimizer.ask(1)
        assert [(c.number, c.params) for c in again] == [(cb[0].number, cb[0].params)]
        assert bigger.keep(again) == again
    finally:
        a.close(), b.close()


# ---- bug 1: a local judge runs on the model its spec names ---------------------------------------------------
def _judge_spec(tmp_path: Path, model: str) -> Path:
    shutil.copy(REPO / "judges" / "rubrics.part.yaml", tmp_path / "rubrics.part.yaml")
    path = tmp_path / "my-judge.yaml"
    path.write_text(f"name: my-judge\ninclude: rubrics.part.yaml\nbackend: local\nmodel: '{model}'\n"
                    "batch_size: 4\ncache: null\n")
    return path


def _tiny_llama(embedded, where: Path) -> Path:
    """A different, small model directory loadable offline: 2 layers, width 64, the embedded tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**embedded.model.config.to_dict(), "hidden_size": 64, "intermediate_size": 128,
                         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32})
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(where)
    embedded.tokenizer.save_pretrained(where)
    return where


@pytest.mark.parametrize("named", ["another model", "the study's model by name", "the study's model by path"])
def test_local_judge_runs_on_the_model_its_spec_names(make_spec, embedded, tmp_path, named):
    from steeropt.engine.models import embedded_gguf_path

    ref = {"another model": lambda: str(_tiny_llama(embedded, tmp_path / "tiny-llama")),
           "the study's model by name": lambda: "smollm2-135m-instruct",
           "the study's model by path": lambda: str(embedded_gguf_path())}[named]()
    path = make_spec(name="judged", objective="tiered-default", judge=str(_judge_spec(tmp_path, ref)))
    study = _setup(path, embedded, track=False)
    try:
        if named == "another model":
            assert study.judge.lm is not study.lm
            assert study.judge.lm.adapter.n_layers == 2 and study.judge.lm.sha256 != embedded.sha256
            assert study.judge.identity.startswith("local:tiny-llama@")
        else:  # same weights (same sha256): the loaded study model is reused, not loaded twice
            assert study.judge.lm is study.lm
    finally:
        study.close()
