"""Named failpoints: no-ops unless armed through the environment.

``STALWART_FAILPOINTS="after_intent_commit,mid_checkpoint=0.3"`` arms the named
points; a bare name fires every time it is reached, ``name=p`` fires with
probability ``p`` (from a generator seeded by ``STALWART_FAILPOINT_SEED``). A
fired failpoint SIGKILLs the process: the chaos harness uses them to kill the
trader at the worst moments (between an intent's commit and its send, between
a fill's arrival and its commit, ...). Ground level: imports nothing of ours.
"""

from __future__ import annotations

import logging
import os
import random
import signal

__all__ = ["FAILPOINTS", "arm", "failpoint"]

_log = logging.getLogger(__name__)

FAILPOINTS = (
    "after_intent_commit",
    "after_submit_before_ack",
    "after_fill_before_commit",
    "mid_checkpoint",
    "during_reconcile",
)

_armed: dict[str, float] = {}
_rng = random.Random()


def arm(spec: str, seed: int | None = None) -> None:
    """Arm failpoints from a spec like ``"a,b=0.5"``; raise ``ValueError`` on an unknown name."""
    _armed.clear()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, prob = part.partition("=")
        if name not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(FAILPOINTS)}")
        _armed[name] = float(prob) if prob else 1.0
    _rng.seed(seed)


def failpoint(name: str) -> None:
    """Kill the process here when ``name`` is armed (and its coin says so)."""
    if not _armed:
        return
    prob = _armed.get(name)
    if prob is None or _rng.random() >= prob:
        return
    _log.critical("failpoint %s fired: SIGKILL", name)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("STALWART_FAILPOINTS"):
    arm(
        os.environ["STALWART_FAILPOINTS"],
        int(os.environ.get("STALWART_FAILPOINT_SEED", "0")),
    )
