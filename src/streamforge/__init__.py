"""StreamForge: a self-hostable streaming chat backend."""

from __future__ import annotations

__version__ = "0.1.0"
SERVICE_NAME = "StreamForge"

__all__ = ["SERVICE_NAME", "__version__"]
