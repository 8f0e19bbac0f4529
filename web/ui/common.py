"""Small helpers the UI views share."""

from __future__ import annotations

from flask import abort, g, request

from fleet.errors import NotFound


def who() -> str:
    return g.identity.name


def int_arg(name: str) -> int | None:
    """A positive integer query argument, or None; anything else is a 400, not a 500."""
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        abort(400, description=f"{name} must be a positive whole number")
    return int(value)


def choice_arg(name: str, allowed) -> str | None:
    """A query argument from a fixed list; an unknown value is ignored like an empty one."""
    value = request.args.get(name, "").strip()
    return value if value in allowed else None


def or_404(read, *args):
    """Call a store read that raises NotFound; turn that into a 404 page."""
    try:
        return read(*args)
    except NotFound as exc:
        abort(404, description=str(exc))
