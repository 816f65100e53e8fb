"""The metadata check (``metadata_check = true``, our addition; off by default).

The paper's authors removed unreasonable augmented combinations of use case and skills
by hand (App. A.3). Here the judge answers YES or NO for each augmented combination; the
refused ones are recorded in the pool (:func:`~.store.refuse`) so that generation draws
again, for up to ``metadata_check_rounds`` rounds. Combinations still unchecked after
them are used as drawn, and counted. Every call replays from the cache on a resume.
"""

from __future__ import annotations

import asyncio

from .items import Catalog
from .pool import Metadata, metadata_key
from .report import Tally
from .steps import Steps
from .store import refuse

__all__ = ("check_metadata",)


async def check_metadata(
    catalog: Catalog, steps: Steps, *, rounds: int, concurrency: int, tally: Tally
) -> None:
    """Check every augmented item of ``catalog``, redrawing refused ones (module docstring).

    Raises:
        EndpointError: a check call failed (the run stops, resumably).
        ParseError: a reply held neither YES nor NO after its retries.
        ShardError: the pool file cannot be read or written.
    """
    room = asyncio.Semaphore(concurrency)
    verdicts: dict[str, bool] = {}

    async def check(md: Metadata) -> bool:
        async with room:
            got = await steps.check_metadata(
                steps.roles.judge, {"use_case": md.use_case, "skills": ", ".join(md.skills)}
            )
        return got.reasonable

    def unchecked() -> list[tuple[str, Metadata]]:
        reader = catalog.reader()
        try:
            return [
                (key, md)
                for i, md in enumerate(catalog.draw(reader))
                if i >= catalog.seeds_own() and (key := metadata_key(md)) not in verdicts
            ]
        finally:
            reader.close()

    for _ in range(rounds):
        pending = unchecked()
        if not pending:
            break
        answers = await asyncio.gather(*(check(md) for _, md in pending))
        refused = []
        for (key, md), ok in zip(pending, answers, strict=True):
            verdicts[key] = ok
            tally.metadata_checked += 1
            if not ok:
                tally.metadata_refused += 1
                refused.append(md)
        refuse(catalog.pool.path, refused)
    tally.metadata_unchecked = len(unchecked())
