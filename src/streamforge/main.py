"""``uvicorn streamforge.main:app``: the app on settings from the environment.

Components (database engine, providers) are built in the lifespan, not at import.
"""

from __future__ import annotations

from streamforge.app import create_app

app = create_app()
