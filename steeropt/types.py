"""The small data types that move forward through a trial (see DESIGN: the flow of one trial)."""
from __future__ import annotations

from dataclasses import dataclass, field

CONTROLLERS = ("add", "clamp", "affine", "head_add", "ablate")
POSITIONS = ("prompt", "generated", "all")


@dataclass(frozen=True)
class Site:
    """Where and how to steer: one controller with one vector at one layer."""

    layer: int  # decoder layer index; residual sites act on that layer's output
    controller: str  # one of CONTROLLERS
    vector: str  # name of a vector in the study's VectorSet
    heads: tuple[int, ...] | None = None  # head_add only: heads to steer
    positions: str = "all"  # one of POSITIONS


@dataclass
class InterventionPlan:
    """One candidate setting: a strength per site, in normalised units (see interventions.py)."""

    sites: list[Site]
    alphas: list[float]
    params: dict = field(default_factory=dict)  # the optimizer parameters this plan came from
    decoding: dict = field(default_factory=dict)  # per-candidate decoding overrides (temperature, ...)


@dataclass
class Sample:
    """One generated completion of one prompt under one candidate plan."""

    prompt: str  # user prompt text, before the chat template
    family: str  # prompt family name
    prompt_ids: list[int]  # rendered prompt token ids, no padding
    token_ids: list[int]  # generated ids, no padding (EOS kept if produced)
    text: str  # decoded generated text, special tokens skipped
    logprobs: list[float]  # log p(token) of each generated token under the generating (steered) model
    finished: bool  # True if the model emitted EOS, False if cut at max_new_tokens
    candidate: int  # index of the plan in the generate call
    seed: int
    meta: dict = field(default_factory=dict)
