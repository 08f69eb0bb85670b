"""What an apiserver's refusal to create a child means for the job: which reason, whether it can
heal, and when to try again."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..api import reasons as R
from .workers import Refusal

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


def reason(refusal: Refusal, kind: str) -> str:
    if refusal.permanent:
        return R.INVALID_CHECKPOINT_CLAIM if kind == "PersistentVolumeClaim" else R.INVALID_POD_TEMPLATE
    if refusal.code == 403 and "exceeded quota" in refusal.message:
        return R.QUOTA_EXCEEDED
    return R.CREATE_REFUSED


def retry_at(refusal: Refusal) -> datetime:
    """1 s after the first refusal, doubling, at most a minute apart."""
    delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, refusal.count - 1))
    return refusal.last_at + timedelta(seconds=delay)
