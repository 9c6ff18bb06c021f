"""Upper bounds that say why: ``Annotated[int, AtMost(4096, "why")]`` refuses a larger value
with a message naming the value, the limit and the reason, and shows the limit in the JSON
schema (``maximum``, or ``maxItems`` with ``items=True``, where the length of a list is bound)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


@dataclass(frozen=True)
class AtMost:
    """A value (or, with ``items``, a list's length) above ``limit`` is refused, naming ``why``."""

    limit: int | float
    why: str
    items: bool = False

    def check(self, value: Any) -> Any:
        size = len(value) if self.items else value
        if size > self.limit:
            what = f"{size} items, more than" if self.items else f"{value!r} is above"
            raise ValueError(f"{what} the limit of {self.limit:,}: {self.why}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        out = handler(schema)
        out["maxItems" if self.items else "maximum"] = self.limit
        return out
