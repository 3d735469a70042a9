"""The real `steeropt` command line in a subprocess (stdout/stderr are pipes: not a terminal), and a concept
that is not shipped ("ocean") written the way a user fills in `steeropt new concept`'s template."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

OCEAN = {
    "description": "the ocean and the sea: waves, tides, beaches, ships, sailors, fish and whales",
    "keywords": ["ocean", "oceans", "sea", "seas", "wave", "waves", "tide", "tides", "beach", "beaches", "shore",
                 "ship", "ships", "sail*", "boat", "boats", "fish", "whale", "whales", "coral", "island", "islands",
                 "surf*", "harbo*"],
    "pairs": [
        ("We sailed across the ocean at dawn under a calm blue sky.",
         "We drove across the city at dawn under a calm blue sky."),
        ("The waves crashed against the rocks along the sandy beach.",
         "The cars rushed along the road beside the busy station."),
        ("A huge whale rose out of the sea next to our small boat.",
         "A huge truck pulled out of the lane next to our small house."),
        ("The fishermen pulled their nets onto the deck of the ship.",
         "The gardeners pulled their tools into the back of the shed."),
        ("At low tide the children collected shells on the shore.",
         "At lunch time the children collected books in the library."),
        ("Coral reefs full of bright fish grow in the warm sea.",
         "Flower beds full of bright tulips grow in the warm park."),
        ("The sailors watched the storm roll in over the open water.",
         "The workers watched the meeting drag on in the open office."),
        ("My brother swims in the ocean every summer near the harbour.",
         "My brother works in the office every summer near the station."),
    ],
}


def fill_concept(path: Path, c: dict = OCEAN) -> None:
    """Replace the template's TODO lines as a user would in an editor (comments stay)."""
    text = path.read_text()
    text = re.sub(r'^description: "TODO.*"$', f'description: "{c["description"]}"', text, flags=re.M)
    text = re.sub(r"^keywords: \[.*\]$", f"keywords: [{', '.join(c['keywords'])}]", text, flags=re.M)
    for i, (pos, neg) in enumerate(c["pairs"], 1):
        text = re.sub(rf'^  - "TODO pair {i}: a sentence about .*"$', f'  - "{pos}"', text, flags=re.M)
        text = re.sub(rf'^  - "TODO pair {i}: the same sentence .*"$', f'  - "{neg}"', text, flags=re.M)
    assert "TODO" not in text.replace("a TODO left in", "").replace("every TODO", ""), text
    path.write_text(text)


def cli_env(columns: int = 80) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", STEEROPT_NUM_THREADS=os.environ.get("STEEROPT_NUM_THREADS", "1"),
               HF_HUB_OFFLINE="1", COLUMNS=str(columns))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def steeropt(*args, cwd: Path, columns: int = 80, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steeropt", *map(str, args)], cwd=cwd, env=cli_env(columns),
                          capture_output=True, text=True, timeout=timeout)
