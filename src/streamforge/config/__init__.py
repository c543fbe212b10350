from __future__ import annotations

from streamforge.config.settings import Settings

__all__ = ["Settings"]
