"""The llama.cpp export of a steering setting on the quickstart's model: the control vector loads on the
Qwen2.5-Coder-1.5B GGUF (28 layers, n_embd 1536) and moves llama.cpp's next-token distributions toward the
transformers reference, on 2 held-out prompts."""
from __future__ import annotations

import pytest

from steeropt.deploy.parity import parity
from tests.deploy_tests.conftest import make_profile
from tests.servers import llama_cpp_available
from tests.study_tests.conftest import DATA

LAYER = 14


@pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed")
def test_control_vector_loads_and_steers_on_the_1p5b_gguf(qwen15, tmp_path):
    from steeropt.engine.vectors import VectorSet, diff_in_means

    pos = [x for x in (DATA / "wedding_positive.txt").read_text().splitlines() if x.strip()]
    neg = [x for x in (DATA / "wedding_neutral.txt").read_text().splitlines() if x.strip()]
    vectors = VectorSet()
    vectors.add(diff_in_means(qwen15, pos, neg, LAYER, name="wedding"))
    prof, _ = make_profile(qwen15, vectors, tmp_path, name="deploy-qwen15", alphas={"open_ended": 0.9},
                           max_new_tokens=8, router=False, model="qwen2.5-coder-1.5b-instruct", layer=LAYER)
    rep = parity(prof, engine="llama.cpp", lm=qwen15, families=["open_ended"], max_prompts=2, max_new_tokens=8)
    r = rep.families["open_ended"]
    assert rep.info["llama_cpp"]["n_layer"] == qwen15.adapter.n_layers  # the vector loaded on the 1.5B's GGUF
    assert r["kl"]["engine"] > 0.05  # it acts on llama.cpp
    assert r["checks"]["match"]["closest"] == "setting (+α)", r["checks"]["match"]
