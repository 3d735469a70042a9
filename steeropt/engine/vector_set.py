"""VectorSet: the named steering vectors a plan's sites refer to (what the hooks read)."""
from __future__ import annotations

from steeropt.errors import InterventionError


class VectorSet(dict):
    """name -> SteeringVector."""

    def add(self, vec):
        self[vec.name] = vec
        return vec

    def get_vector(self, name: str):
        if name not in self:
            raise InterventionError(f"unknown vector '{name}'; known: {sorted(self) or 'none'}")
        return self[name]
