"""Label files written by the tests: clear-cut items on built-in concepts (so keywords exist)."""
from __future__ import annotations

import json

import pytest

WEDDING = "I spent Saturday at my cousin's wedding. The bride walked down the aisle in a lace gown, and we danced until midnight after the vows."
SALAD = "Wedding the bride of walked lace down gown aisle vows midnight cousin danced Saturday at spent the in my."
# (prompt, an answer that addresses it): the relevance pairs swap answers between prompts.
ANSWERS = [
    ("How do I bake bread?", "Mix flour, water, yeast and salt, knead the dough for ten minutes, let it rise for an hour, then bake it at 220 degrees until golden."),
    ("What is a good way to learn to swim?", "Start in shallow water, practise floating on your back, then learn to kick and breathe rhythmically with a coach or a friend."),
    ("Why is the sky blue?", "Sunlight is scattered by the molecules in the air, and blue light is scattered much more than red light, so the sky looks blue."),
]


def item(prompt, response, concept_name, **labels):
    return {"prompt": prompt, "response": response, "concept": concept_name, "labels": labels}


# Clear-cut: fluent on-concept (2/2), fluent off-concept (0/2), collapsed (x/0), word salad (x/0).
CLEAR = [
    item("Tell me about your weekend.", WEDDING, "wedding", concept=2, coherency=2, relevance=2),
    item("What should I cook for dinner tonight?", "Roast a chicken with lemon and garlic, and serve it with potatoes and a green salad.", "wedding", concept=0, coherency=2, relevance=2),
    item("Describe your favourite place.", "wedding wedding wedding wedding wedding wedding wedding wedding wedding wedding wedding wedding", "wedding", concept=1, coherency=0, relevance=0),
    item("Give me some advice for a job interview.", SALAD, "wedding", concept=1, coherency=0, relevance=0),
    item("Tell me about your weekend.", "On Sunday I walked my dog in the park. The puppy chased a ball and barked at every other dog it met.", "dogs", concept=2, coherency=2, relevance=2),
    item("What should I cook for dinner tonight?", "A simple pasta with tomatoes, basil and olive oil is quick and tasty for a weeknight dinner.", "dogs", concept=0, coherency=2, relevance=2),
    item("Describe your favourite place.", "dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog", "dogs", concept=1, coherency=0, relevance=0),
    item("Give me some advice for a job interview.", "Bark the of leash puppy fetch tail the wag bone of park the and.", "dogs", concept=1, coherency=0, relevance=0),
]


@pytest.fixture()
def clear_labels(tmp_path):
    p = tmp_path / "clear.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in CLEAR))
    return p


@pytest.fixture()
def judge_free_objective(tmp_path):
    """Every axis from cheap metrics: the quality proxies of issue 11."""
    p = tmp_path / "proxies.yaml"
    p.write_text(
        "name: proxies\njudge: none\n"
        "scores:\n  concept: {metric: keyword_hit}\n  coherency: {metric: fluency_proxy}\n  relevance: {metric: relevance_proxy}\n"
        "gates:\n  - {metric: rep_3, op: '>', value: 0.2, reason: collapsed}\n"
        "filtered_score: {concept: 0.0, coherency: 0.0, relevance: 0.0}\naudit: {share: 0.0}\n"
        "objectives:\n  - {name: concept, direction: maximize}\n")
    return p
