"""``get`` tables: the columns come from ``storage.api.printing`` (shared with the API server's Table
responses); this module lays them out as kubectl does."""
from __future__ import annotations

from storage.api.printing import (
    DEFAULT_CLASS_ANNOTATIONS,
    Columns,
    Row,
    access_modes,
    columns_for,
    event_time,
    is_default_class,
    node_status,
    pod_status,
    register,
    table_rows,
)

__all__ = [
    "DEFAULT_CLASS_ANNOTATIONS", "Columns", "Row", "access_modes", "columns_for",
    "event_time", "is_default_class", "node_status", "pod_status", "register", "render",
    "table_rows",
]


def render(headers: list[str], rows: list[Row], no_headers: bool = False) -> str:
    """Go tabwriter as kubectl configures it: padding 3, minimum cell width 6, last column unpadded."""
    lines = rows if no_headers else [headers, *rows]
    if not lines:
        return ""
    width = max(len(line) for line in lines)
    sizes = [0] * width
    for line in lines:
        for i, cell in enumerate(line[:-1]):
            sizes[i] = max(sizes[i], len(cell))
    out = []
    for line in lines:
        cells = [cell.ljust(max(sizes[i] + 3, 6)) for i, cell in enumerate(line[:-1])]
        cells.append(line[-1] if line else "")
        out.append("".join(cells).rstrip())
    return "\n".join(out) + "\n"
