"""The collector across a session: paused at boot, the boot frozen while running, then freed.

See ``runtime.heap``: the objects a boot builds live as long as the session, so
no collection traverses them while it runs; when it ends, they are collectable.
"""

from __future__ import annotations

import gc
from pathlib import Path

from runtime.clock import VirtualClock
from tests.integration.recovery_kit import SYMBOL, Trader, open_venue, write_profile


async def test_a_session_runs_with_its_boot_frozen_and_ends_with_nothing_frozen(
    tmp_path: Path,
) -> None:
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    _, config = write_profile(tmp_path)
    state = tmp_path / "state"
    venue = await open_venue(config, state, VirtualClock())

    async with Trader(config, state, venue) as trader:
        actor = trader.app.actors[SYMBOL]
        assert gc.isenabled(), "the collector runs again once the session runs"
        assert gc.get_freeze_count() > 0
        assert not any(obj is actor for obj in gc.get_objects()), "built at boot: frozen"

    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert any(obj is actor for obj in gc.get_objects())
