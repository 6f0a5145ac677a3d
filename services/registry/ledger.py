"""The promotion ledger: the champion changes only by compare-and-set.

A promotion names the champion it expects to replace (for a candidate: the parent it was
evaluated against). The change is one ``UPDATE ... WHERE version = expected`` on the single
champion row, so of any number of concurrent promotions exactly one wins and the others get
``PromotionConflict``; the ledger row is written in the same transaction. The MLflow alias
follows the ledger afterwards (``controller.reconcile_champion``).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.store.models import Champion, Promotion, utcnow

CHAMPION_ROW = 1


class PromotionConflict(Exception):
    """The champion is no longer the one the promotion expected to replace."""


def lock_champion(*, session: Session) -> str | None:
    """Take the champion row's lock for this transaction (PostgreSQL: SELECT ... FOR UPDATE;
    SQLite writers are already serialised by BEGIN IMMEDIATE) and return the champion.

    Every rollout transition takes it first, so two controllers or two fleet managers
    starting rollouts at once act one after the other, each seeing the other's result.
    """
    return session.scalar(
        select(Champion.version).where(Champion.id == CHAMPION_ROW).with_for_update()
    )


def champion_of(*, session: Session) -> str | None:
    return session.scalar(select(Champion.version).where(Champion.id == CHAMPION_ROW))


def promote(
    *,
    session: Session,
    expected: str | None,
    new: str | None,
    candidate_id: str | None,
    actor: str,
    reason: str,
    kind: str = "promote",
) -> Promotion:
    """Make ``new`` champion if ``expected`` still is; raise PromotionConflict if not."""
    changed = session.execute(
        update(Champion)
        .where(Champion.id == CHAMPION_ROW, Champion.version.is_not_distinct_from(expected))
        .values(version=new, generation=Champion.generation + 1, updated_at=utcnow())
        .returning(Champion.generation)
    ).scalar_one_or_none()
    if changed is None:
        current = champion_of(session=session)
        raise PromotionConflict(
            f"the champion is {current}, not {expected} as expected: evaluate against the "
            "current champion before promoting"
        )
    promotion = Promotion(
        generation=changed,
        candidate_id=candidate_id,
        from_version=expected,
        to_version=new,
        kind=kind,
        actor=actor,
        reason=reason,
    )
    session.add(promotion)
    return promotion
