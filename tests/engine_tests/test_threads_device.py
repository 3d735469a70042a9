"""Thread setting and device placement (issue 10, tasks A and E): real torch, real CLI, real model."""
from __future__ import annotations

import os

import pytest
import torch

from steeropt.engine.interventions import build_op, Positions, steer
from steeropt.engine.models import ArchAdapter, LoadedModel, load_model
from steeropt.engine.threads import ENV, configure_threads, default_threads
from steeropt.errors import ModelError, SteeroptError
from steeropt.types import InterventionPlan, Site


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_thread_setting_from_argument_environment_and_default(monkeypatch, restore_threads):
    monkeypatch.delenv(ENV, raising=False)
    assert configure_threads() == default_threads() == max(1, min(2, os.cpu_count() or 1))
    assert torch.get_num_threads() == default_threads()
    monkeypatch.setenv(ENV, "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2  # an explicit value wins
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(SteeroptError, match=f"{ENV} must be a whole number.*{bad}"):
            configure_threads()


def test_load_model_applies_the_process_setting(monkeypatch, restore_threads, embedded):
    torch.set_num_threads(2)
    monkeypatch.setenv(ENV, "1")
    assert load_model("smollm2-135m-instruct") is embedded  # cached, and still configures the threads
    assert torch.get_num_threads() == 1


def test_cli_threads_option(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from steeropt.cli import app

    monkeypatch.setenv(ENV, "2")  # monkeypatch restores it after the CLI overwrote it
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["--threads", "1", "list"])
    assert res.exit_code == 0, res.output
    assert os.environ[ENV] == "1"  # what load_model (configure_threads) reads in this process
    res = CliRunner().invoke(app, ["--threads", "0", "list"])
    assert res.exit_code == 2 and "--threads" in res.output


def test_unusable_devices_are_refused_by_name():
    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        load_model(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device 'cuda:0' is not available"):
            load_model(device="cuda:0")


@pytest.fixture(scope="module")
def meta_lm(embedded):
    """The embedded architecture on the meta device in bfloat16: no weights, no memory, but every tensor
    the hooks see lives on 'meta' — a CPU tensor mixed into it raises, as it would on a GPU."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(embedded.model.config, dtype=torch.bfloat16)
    return LoadedModel(model, embedded.tokenizer, "meta-copy", embedded.sha256, ArchAdapter.for_model(model))


@pytest.mark.parametrize("controller, vector, heads", [
    ("add", "wedding", None), ("clamp", "wedding", None), ("ablate", "wedding", None),
    ("affine", "wedding", None), ("head_add", "wedding_heads", (1, 2)),
])
def test_ops_are_built_on_the_device_and_dtype_of_the_module_they_steer(meta_lm, wedding_vectors,
                                                                         controller, vector, heads):
    op = build_op(meta_lm, wedding_vectors, Site(4, controller, vector, heads), torch.tensor([0.3, 0.0]),
                   torch.ones(2))
    x = torch.zeros(2, 3, 576, device="meta", dtype=torch.bfloat16)
    y = op.fn(x)
    assert (y.device.type, y.dtype, tuple(y.shape)) == ("meta", torch.bfloat16, (2, 3, 576))


def test_position_masks_follow_the_hidden_states_device():
    pos = Positions(4)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # row 0 has one pad
    pos.pre_hook(None, (), {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask})
    for positions in ("prompt", "all"):
        m = pos.mask(positions, torch.device("meta"))
        assert m.device.type == "meta" and tuple(m.shape) == (2, 4, 1)


def test_steered_layer_runs_on_the_model_device(meta_lm, wedding_vectors):
    # A whole-model forward on 'meta' stops inside transformers' mask code (.item()); one decoder layer
    # runs, with both hook points (the layer output and its o_proj input) steered.
    plans = [InterventionPlan([Site(4, "add", "wedding"), Site(4, "head_add", "wedding_heads", (0,))], [0.2, 0.3]),
             InterventionPlan([Site(4, "clamp", "wedding")], [0.1])]
    x = torch.zeros(2, 5, 576, device="meta", dtype=torch.bfloat16)
    pos = torch.arange(5, device="meta")[None].expand(2, -1)
    rope = meta_lm.model.model.rotary_emb(x, pos)
    with torch.no_grad(), steer(meta_lm, wedding_vectors, plans):
        out = meta_lm.adapter.layer(4)(x, attention_mask=None, position_ids=pos, position_embeddings=rope)
    out = out[0] if isinstance(out, tuple) else out
    assert (out.device.type, out.dtype, tuple(out.shape)) == ("meta", torch.bfloat16, (2, 5, 576))
