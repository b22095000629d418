"""The cyclic garbage collector around a boot: paused while the book loads, then frozen.

Why it is built this way: a boot builds the session's working set, some forty
container objects per symbol (the actor, its task and mailbox, its state, its
stop and intents, its strategy) that live as long as the session. The
collector can free none of it, yet every full collection traverses all of it,
and while the heap grows the collector's growth rule runs one full collection
each time the heap grew by a quarter: with 10,000 symbols four to six of them
during one boot, 0.1-0.3 s each, finding nothing (a boot run with the collector
off leaves a handful of cyclic garbage objects). So a boot runs with the
collector paused (refcounting still frees everything that is not a cycle);
once the session runs, what exists is moved to the permanent generation
(``gc.freeze``), where no later collection traverses it again, and the
collector resumes for everything made after. The session's end unfreezes it,
so whatever of it became cyclic garbage meanwhile is collected then.

Process-wide (the collector is): overlapping boots pause and resume it once,
and the last session to end unfreezes.
"""

from __future__ import annotations

import gc

__all__ = ["BootHeap"]

_paused = 0  # boots running now
_was_enabled = False  # whether the first of them found the collector enabled
_frozen = 0  # sessions whose boot froze the heap and that have not ended


class BootHeap:
    """One session's hold on the collector: ``pause`` at boot, ``settle`` once running,
    ``release`` when the session ends (also after a failed boot; safe to repeat).
    """

    def __init__(self) -> None:
        self._pausing = False
        self._freezing = False

    def pause(self) -> None:
        """Stop automatic collections until ``settle`` or ``release``."""
        global _paused, _was_enabled
        if self._pausing:
            return
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
        self._pausing = True

    def settle(self) -> None:
        """The boot is done: freeze what exists and let the collector run again."""
        global _frozen
        if not self._pausing:
            return
        if not self._freezing:
            gc.freeze()
            _frozen += 1
            self._freezing = True
        self._resume()

    def release(self) -> None:
        """The session ended: resume the collector if still paused, and unfreeze."""
        global _frozen
        self._resume()
        if self._freezing:
            self._freezing = False
            _frozen -= 1
            if _frozen == 0:
                gc.unfreeze()

    def _resume(self) -> None:
        global _paused
        if not self._pausing:
            return
        self._pausing = False
        _paused -= 1
        if _paused == 0 and _was_enabled:
            gc.enable()
