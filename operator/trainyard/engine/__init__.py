"""The engine: pure decisions from (job, observed workers, now) to a Plan, the environment
contract every worker gets, and the backend contract both drivers implement."""

from .backend import Applied, Backend, reconcile
from .decide import decide
from .plan import NORMAL, WARNING, Event, Launch, Plan
from .workers import State, Worker

__all__ = ["NORMAL", "WARNING", "Applied", "Backend", "Event", "Launch", "Plan", "State", "Worker", "decide", "reconcile"]
