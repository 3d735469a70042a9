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
    """One candidate setting: a strength per site, in normalised units (see interventions.py).

    "Off" is not α = 0: clamp at α = 0 sets the projection to 0 (an ablation). A site is off only when it
    is inactive (`active[i]` False): the hooks skip it and the model is untouched there. `active` None
    means every site is active."""

    sites: list[Site]
    alphas: list[float]
    params: dict = field(default_factory=dict)  # the optimizer parameters this plan came from
    decoding: dict = field(default_factory=dict)  # per-candidate decoding overrides (temperature, ...)
    active: list[bool] | None = None  # per site; None = all active
    instruction: str | None = None  # asks for the concept after the user's prompt: the prompted arm (None = none)

    def is_active(self, i: int) -> bool:
        return self.active is None or bool(self.active[i])

    def changes_model(self, i: int) -> bool:
        """Whether site i steers at all: active, and α != 0 unless the controller acts at α = 0 (clamp)."""
        return self.is_active(i) and (self.sites[i].controller == "clamp" or abs(float(self.alphas[i])) > 1e-12)

    def steered_sites(self) -> list[int]:
        """Indices of the sites that change the model (the plan's dose in sites)."""
        return [i for i in range(len(self.sites)) if self.changes_model(i)]


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
    instruction: str | None = None  # the instruction the prompt was rendered with (the prompted arm)
    # the plan's strength in normalised units: a float for one site, a tuple for several, None without sites
    alpha: float | tuple[float, ...] | None = None


def site_names(plan: InterventionPlan) -> list[str]:
    """A stable name per site of a plan ("L14.add.wedding", "L10.head_add.v.h2-5"): how records key raw α."""
    return [f"L{s.layer}.{s.controller}.{s.vector}" + (f".h{'-'.join(map(str, s.heads))}" if s.heads else "")
            for s in plan.sites]
