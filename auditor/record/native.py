"""The recorder's optional C fast paths, where ``setup.py`` built them (a C compiler was
there at install): ``_capture_c`` (the per-request capture: ``middleware.Exchange`` and
``Watch``, ``rows.to_portable``, ``Writer.submit``), ``_targets_c``
(``targets.RecentTargets``' checks and notes) and ``_rows_c`` (``RowBuilder.build_row``).
Each does what its Python counterpart does, for the common case, and hands anything
else to it; ``REDIRECT_AUDITOR_PURE_PYTHON`` (set to anything) turns them all off.
"""

from __future__ import annotations

import os
from types import ModuleType

PURE_PYTHON_ENV = "REDIRECT_AUDITOR_PURE_PYTHON"

try:
    from auditor.record import _capture_c as _capture
except ImportError:
    _capture = None  # type: ignore[assignment]
try:
    from auditor.record import _rows_c as _rows
except ImportError:
    _rows = None  # type: ignore[assignment]
try:
    from auditor.record import _targets_c as _targets
except ImportError:
    _targets = None  # type: ignore[assignment]


def wanted() -> bool:
    """False when REDIRECT_AUDITOR_PURE_PYTHON asks for Python only (read each call)."""
    return not os.environ.get(PURE_PYTHON_ENV)


def capture_c() -> ModuleType | None:
    """``_capture_c``, unless it was not built or Python only is asked for."""
    return _capture if wanted() else None


def rows_c() -> ModuleType | None:
    """``_rows_c``, unless it was not built or Python only is asked for."""
    return _rows if wanted() else None


def targets_c() -> ModuleType | None:
    """``_targets_c``, unless it was not built or Python only is asked for."""
    return _targets if wanted() else None


def built() -> bool:
    """Every fast path was built (whether or not they are turned off)."""
    return _capture is not None and _rows is not None and _targets is not None
