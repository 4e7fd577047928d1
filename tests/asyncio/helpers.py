"""What the async tests share: reading and writing notes, and the async pool's gauges."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mingus_sessions import asession_scope, get_async_engine


async def ainsert(session: AsyncSession, title: str) -> None:
    await session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
    )


async def atitles(pool: str | None = None) -> list[str]:
    """Every committed title, read in a fresh async scope."""
    async with asession_scope(pool) as session:
        found = await session.execute(text("SELECT title FROM testapp_note ORDER BY title"))
        return list(found.scalars())


def achecked_out(pool: str | None = None) -> int:
    """Connections of the running loop's async engine of ``pool`` checked out now."""
    return int(get_async_engine(pool).sync_engine.pool.checkedout())  # type: ignore[attr-defined]
