"""What every browser test shares: Debian's chromium (never a downloaded build), and where screenshots go.

A browser test module skips itself without chromium (``skip_without_chromium()`` at its top); the
fixtures that launch it and keep screenshots are in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def skip_without_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
        )
