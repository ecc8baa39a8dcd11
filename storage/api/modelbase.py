"""The base of every API model: Kubernetes wire names, unknown fields kept."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["WireModel", "dump"]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields round-trip unchanged.

    Every optional field defaults to ``None`` so that ``dump`` (which drops
    ``None``) gives back exactly what was sent.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        # Keep enum-like strings as plain strings: validation reports bad values
        # with Kubernetes' wording instead of a pydantic type error.
        use_enum_values=True,
        ser_json_inf_nan="constants",
    )


def dump(model: BaseModel) -> dict[str, Any]:
    """The wire form of a model (camelCase, no ``None`` fields, JSON types)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")
