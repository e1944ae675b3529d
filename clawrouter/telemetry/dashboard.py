"""The dashboard page (``GET /-/dashboard``): one static HTML file, no build step.

The page polls ``GET /-/stats`` beside it and draws its charts itself (SVG); it holds no data.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["page"]


@cache
def page() -> bytes:
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()
