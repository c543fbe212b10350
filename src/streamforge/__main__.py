from __future__ import annotations

from streamforge.cli import main

main()
