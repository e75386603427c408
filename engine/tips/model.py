"""The ``Tip`` value and the preset patch it carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.presets import Preset, diff, show_value


@dataclass(frozen=True)
class Tip:
    rule: str                 # "out_of_memory", "instability", "overfitting", "low_accuracy", "camera", ...
    title: str
    observed: str             # what the metrics show, with the numbers
    fix: str                  # the guide's fix, limited to what the patch changes
    why: str
    patch: dict[str, Any] = field(default_factory=dict)  # {"section.key": new value}


@dataclass(frozen=True)
class Change:
    """One wanted preset move: ``direction`` says which current values it improves on.

    "up": raise to ``value``; "down": lower to ``value``; "clip": set a gradient clip (0 = off counts
    as unlimited); "widen": widen a [low, high] range to include ``value``'s range; "set": a switch or a
    choice (true/false, a name) set to ``value``.
    """
    key: str
    value: Any
    direction: str


_VERBS = {"up": "raise", "down": "lower", "clip": "tighten", "widen": "widen", "set": "set"}


def build_patch(preset: Preset, changes: list[Change]) -> dict[str, Any]:
    """The entries of ``changes`` that move the preset in their direction (others are skipped)."""
    patch: dict[str, Any] = {}
    for change in changes:
        current = preset.get(change.key)
        new = change.value
        if change.direction == "widen":
            new = (min(current[0], new[0]), max(current[1], new[1]))
            moves = new != tuple(current)
        elif change.direction == "up":
            moves = current < new
        elif change.direction == "down":
            moves = current > new
        elif change.direction == "clip":
            moves = current == 0 or current > new
        elif change.direction == "set":
            moves = current != new
        else:
            raise ValueError(f"unknown direction {change.direction!r}")
        if moves and new != current:
            patch[change.key] = new
    return patch


def describe_fix(section_title: str, changes: list[Change], patch: dict[str, Any]) -> str:
    """``The guide's fix ("<section>"): raise dsr.x to 1; lower ...`` for the patched keys."""
    parts = [f"{_VERBS[c.direction]} {c.key} to {show_value(patch[c.key])}" for c in changes if c.key in patch]
    return f"The guide's fix (\"{section_title}\"): " + "; ".join(parts) + "."


def apply_tip(preset: Preset, tip: Tip) -> Preset:
    """``preset`` with the tip's patch applied and validated like a preset file's values."""
    return preset.with_changes(tip.patch, source=f"tip '{tip.rule}'")


def tip_changes(preset: Preset, tip: Tip) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` the tip makes to ``preset``: the diff to show before saving."""
    return diff(preset, apply_tip(preset, tip))
