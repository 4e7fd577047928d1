"""A django-debug-toolbar panel for SQLAlchemy: ``mingus_sessions.debug_toolbar.SQLAlchemyPanel``.

An optional extra (``pip install "mingus-sessions[debug-toolbar]"``); nothing
else in the package imports it, so a project without the toolbar never loads
it, and engines carry none of its listeners outside a request the toolbar
instruments. See docs/web.md, "The debug-toolbar panel".
"""

from __future__ import annotations

try:
    import debug_toolbar  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in the test suite
    raise ImportError(
        "mingus_sessions.debug_toolbar needs django-debug-toolbar: install "
        '"mingus-sessions[debug-toolbar]" (or django-debug-toolbar), or remove '
        '"mingus_sessions.debug_toolbar.SQLAlchemyPanel" from DEBUG_TOOLBAR_PANELS.'
    ) from exc

from .panel import SQLAlchemyPanel

__all__ = ["SQLAlchemyPanel"]
