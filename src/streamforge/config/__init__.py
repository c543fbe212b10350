from __future__ import annotations

from streamforge.config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
