"""Typed option dataclasses: each parameter defined once, with the description ROS and ``--help`` show."""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any


def option(default: Any, help: str) -> Any:
    """A dataclass field carrying its description."""
    return field(default=default, metadata={"help": help})


def described_fields(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, description) of every field of an option dataclass, in declaration order."""
    return [(f.name, f.default, f.metadata.get("help", "")) for f in fields(cls)]
