"""Files for your own concept and a study of it (`steeropt new concept|study`), written so they run as is.

    concepts/<name>.yaml          a documented concept file with TODO placeholders (refused until edited)
    studies/<study>.yaml          a study of that concept (its sentences and keywords copied in)
    search_spaces/<study>.yaml    the strength range the study searches
    studies/data/*.jsonl          the three prompt families of the built-in studies (kept if already there)

Every name resolves from the folder they are written to (the spec index and the concept lookup search
./studies, ./search_spaces, ./concepts first), and every path inside is relative to its own file.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from steeropt.errors import SteeroptError
from steeropt.specs.concepts import FOLDER as CONCEPTS, PLACEHOLDER, Concept
from steeropt.specs.index import builtin_dir

EMBEDDED_MODEL = "smollm2-135m-instruct"
# Strength range per controller in normalised units (docs/specs.md, "What α means"); measured on the embedded model
# with the wedding concept (search_spaces/compare-*-l10.yaml): past the high end the text is broken.
ALPHA_RANGE = {"add": (0.0, 0.6), "clamp": (0.0, 1.2), "affine": (0.0, 1.0), "ablate": (0.0, 1.0)}
# What `new study --from-sweep` tries, per controller: up to past the usual break point.
SWEEP_ALPHAS = {"add": [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8], "clamp": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.6],
                "affine": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "ablate": [0.0, 0.25, 0.5, 0.75, 1.0]}
FAMILIES = ("open_ended", "advice", "descriptions")  # the built-in studies' prompt families
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Prompts on which most concepts are off topic (the concept must come from the steering, not the prompt).
PROMPTS = ["Tell me about your weekend.", "Give me some advice for a job interview.", "How can I organise my desk?",
           "Describe a busy city street.", "What makes a good friend?", "Explain how to plant a tree.",
           "What is your favourite season and why?", "How do I stay focused while studying?"]
PAIRS = 8

CONCEPT_TEMPLATE = """\
# Concept "{name}" for steeropt, written by `steeropt new concept {name}`.
# Replace every TODO (a TODO left in is refused, naming its field), then:
#   steeropt sweep --concept {ref}                          where the concept shows, where text breaks
#   steeropt new study {name} --concept {ref} --from-sweep  a study with a proposed layer and α range
# docs/concepts.md explains each field.

# A short label: the vector's name, the name `--concept` finds, the concept name in tables.
name: {name}

# One phrase a judge reads as "the concept", naming a few typical things (e.g. "the ocean: waves, tides,
# ships, beaches, fish"). Keep the quotes: a value with ": " in it needs them in YAML.
description: "{placeholder} describe {name} in one phrase"

# Words that make a sample count as on-concept (the cheap concept score). Case-insensitive.
#   - A plain keyword is a whole word or phrase: `wave` matches "wave" and "Wave", not "waves" or "waver";
#     list every form you mean (`wave, waves`). Spaces in a phrase match any run of whitespace.
#   - A `*` ends a stem: `ocean*` matches ocean, oceans, oceanic (and any other word starting so).
#   - `re:` takes a raw regular expression as written (add \\b yourself): "re:\\bsea(s|side)?\\b".
#   - A plain keyword with regex characters ( ? ( ) [ ] {{ }} | \\ + ^ $ ) is refused: use `*` or `re:`.
# List the everyday words a small model writes about the concept, not only its exact name.
keywords: [{name}]

# Contrast sentences. The steering vector is mean(positive) - mean(negative) of the model's activations,
# so negative[i] must be positive[i] with only the concept swapped out: same structure, length and tone
# ("We sailed across the ocean at dawn." / "We drove across the city at dawn."). Whatever else differs
# (tense, sentiment, length, a second topic) goes into the vector too. 8 or more pairs, same count in both.
positive:
{positive}
negative:
{negative}

# Optional: answers with and without the concept, matched the same way (same count), scored by teacher
# forcing for a cheap preference signal. Leave both empty if unsure.
positive_completions: []
negative_completions: []

# What `steeropt sweep` steers: prompts on which {name} is off topic (drop any that invite it).
prompts:
{prompts}

# Default layer for `sweep` and `new study`. The embedded model has layers 0..29; middle layers (~8-15)
# carry topics. `steeropt new study ... --from-sweep` compares a few layers.
layer: 10
"""


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise SteeroptError(f"{what} name {name!r}: use letters, digits, '-' and '_' (it becomes a file name)")
    return name


def _writable(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise SteeroptError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _items(values: list[str], indent: str = "  ") -> str:
    return "\n".join(f"{indent}- {json.dumps(v, ensure_ascii=False)}" for v in values)  # JSON strings are YAML


def write_concept(name: str, folder: str | Path = ".", *, force: bool = False) -> Path:
    """<folder>/concepts/<name>.yaml, every field commented, placeholders the loader refuses until edited."""
    check_name(name, "concept")
    path = _writable(Path(folder) / CONCEPTS / f"{name}.yaml", force)
    ref = name if Path(folder).resolve() == Path.cwd().resolve() else str(path)
    pos = [f"{PLACEHOLDER} pair {i}: a sentence about {name}" for i in range(1, PAIRS + 1)]
    neg = [f"{PLACEHOLDER} pair {i}: the same sentence with {name} swapped out" for i in range(1, PAIRS + 1)]
    path.write_text(CONCEPT_TEMPLATE.format(name=name, ref=ref, placeholder=PLACEHOLDER, positive=_items(pos),
                                            negative=_items(neg), prompts=_items(PROMPTS)), encoding="utf-8")
    return path


@dataclass
class StudyPlan:
    """What `new study` writes; every field has the default a newcomer can run on 2 CPU cores."""

    name: str
    concept: Concept
    concept_source: str
    controller: str = "add"
    layer: int | None = None  # None: the concept's layer, else 10
    alpha: tuple[float, float] | None = None  # None: ALPHA_RANGE[controller]
    model: str = EMBEDDED_MODEL
    objective: str = "quickstart"  # calibrated cheap tier: three axes, no judge
    optimizer: str = "tpe"
    trials: int = 24
    batch_size: int = 4
    prompts_per_trial: int = 9
    max_new_tokens: int = 40
    storage: str = "sqlite:///steeropt.db"
    tracking_uri: str = "sqlite:///mlflow.db"
    notes: list[str] = field(default_factory=list)  # e.g. why --from-sweep chose the layer and range
    concept_prompts: bool = False  # also a family of the concept file's own prompts

    def resolved(self) -> StudyPlan:
        if self.controller not in ALPHA_RANGE:
            raise SteeroptError(f"--controller {self.controller!r}: new study writes one of {', '.join(ALPHA_RANGE)} "
                                "(head_add needs heads chosen: see studies/compare-head-add.yaml)")
        if self.layer is None:
            self.layer = self.concept.layer if self.concept.layer is not None else 10
        if self.alpha is None:
            self.alpha = ALPHA_RANGE[self.controller]
        if not self.alpha[0] < self.alpha[1]:
            raise SteeroptError(f"--alpha: need LOW < HIGH, got {self.alpha[0]:g},{self.alpha[1]:g}")
        return self


def study_text(p: StudyPlan) -> str:
    c = p.concept
    notes = "".join(f"#   {n}\n" for n in p.notes)
    comp = ""
    if c.positive_completions:
        comp = (f"  positive_completions:\n{_items(c.positive_completions, '    ')}\n"
                f"  negative_completions:\n{_items(c.negative_completions, '    ')}\n")
    settings = ", settings: {n_startup_trials: 6}" if p.optimizer == "tpe" and p.trials > 6 else ""
    return f"""\
# Study "{p.name}": {p.controller} a diff-in-means "{c.name}" vector at layer {p.layer} of {p.model}, one free
# strength in [{p.alpha[0]:g}, {p.alpha[1]:g}]. Written by `steeropt new study` from {p.concept_source};
# the concept's sentences and keywords are copied below (after editing the concept, write it again with --force).
{notes}#   steeropt validate {p.name}    check it without loading weights (lists the held-out prompts)
#   steeropt run {p.name}         run or resume it;  steeropt status {p.name}: the front so far
#   steeropt pick {p.name}        a deployable α per prompt family, confirmed on held-out prompts
name: {p.name}
description: {json.dumps(f"{p.controller} '{c.name}' at layer {p.layer}, {p.optimizer} over one strength", ensure_ascii=False)}
model: {p.model}
vectors:
  - name: {c.name}
    method: diff_in_means     # mean activation of the positive minus the negative sentences
    layer: {p.layer}
    positive:
{_items(c.positive, '      ')}
    negative:
{_items(c.negative, '      ')}
concept:                      # what the objective looks for (keywords: the concept score; description: a judge)
  name: {c.name}
  description: {json.dumps(c.description or c.name, ensure_ascii=False)}
  keywords: {json.dumps(c.keywords, ensure_ascii=False)}
{comp}prompts:                      # α is chosen per family on half of its prompts and reported on the other half
  families:
{chr(10).join(f"    - {{name: {f}, path: data/{f}.jsonl}}" for f in FAMILIES)}{_concept_family(p)}
  selection_fraction: 0.5
decoding: {{max_new_tokens: {p.max_new_tokens}}}
search_space: ../search_spaces/{p.name}.yaml   # the strength range
objective: {p.objective}           # quickstart: calibrated cheap tier, no judge (docs/scores.md)
optimizer: {{name: {p.optimizer}{settings}}}
# re-evaluation: the front and each family's choice raced on fresh selection prompts before they are reported
budget: {{trials: {p.trials}, batch_size: {p.batch_size}, prompts_per_trial: {p.prompts_per_trial},
         reevaluation: {{prompts: 3, rounds: 2, keep: 0.5, max_candidates: 5}}}}
seed: 0
storage: {p.storage}       # Optuna storage: relative to the folder you run steeropt in
tracking_uri: {p.tracking_uri}     # MLflow: mlflow ui --backend-store-uri {p.tracking_uri}
"""


def _concept_family(p: StudyPlan) -> str:
    """The concept file's own prompts as one more family (`new study --concept-prompts`), inline."""
    if not p.concept_prompts:
        return ""
    if len(p.concept.prompts) < 4:
        raise SteeroptError(f"--concept-prompts: concept '{p.concept.name}' has {len(p.concept.prompts)} prompts; a family "
                            "needs at least 4 (half are held out)")
    return f"\n    - {{name: {p.concept.name}_prompts, prompts: {json.dumps(list(p.concept.prompts), ensure_ascii=False)}}}"


def space_text(p: StudyPlan) -> str:
    return f"""\
# Strength range of study "{p.name}" (normalised units: docs/specs.md, "What α means").
name: {p.name}
description: {json.dumps(f"{p.controller} '{p.concept.name}' at layer {p.layer}, α in [{p.alpha[0]:g}, {p.alpha[1]:g}]", ensure_ascii=False)}
sites:
  - layer: {p.layer}
    vector: {p.concept.name}
    controller: {p.controller}
    positions: all
    alpha: {{low: {p.alpha[0]:g}, high: {p.alpha[1]:g}}}
"""


def write_study(plan: StudyPlan, folder: str | Path = ".", *, force: bool = False) -> list[Path]:
    """Write the study, its search space and (when missing) the prompt families; returns the files written."""
    p = plan.resolved()
    check_name(p.name, "study")
    root = Path(folder)
    study = _writable(root / "studies" / f"{p.name}.yaml", force)
    space = _writable(root / "search_spaces" / f"{p.name}.yaml", force)
    written = []
    for fam in FAMILIES:  # never overwritten: you may have edited them
        target = root / "studies" / "data" / f"{fam}.jsonl"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(builtin_dir("studies") / "data" / f"{fam}.jsonl", target)
            written.append(target)
    study.write_text(study_text(p), encoding="utf-8")
    space.write_text(space_text(p), encoding="utf-8")
    return [study, space, *written]
