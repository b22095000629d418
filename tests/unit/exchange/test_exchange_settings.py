"""``stalwart exchange``'s options (``brokers.exchange.settings``): parsed, checked, named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from brokers.exchange import add_arguments, settings_from_args

_ENV = {"APCA_API_KEY_ID": "local", "APCA_API_SECRET_KEY": "local-secret"}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--state", "book", *argv])


def test_fills_come_whole_unless_a_part_size_is_given() -> None:
    assert settings_from_args(_parse(), _ENV).venue_config().max_fill_qty is None

    settings = settings_from_args(_parse("--max-fill-qty", "40"), _ENV)

    assert settings.max_fill_qty == 40.0
    config = settings.venue_config()
    assert (config.max_fill_qty, config.book_path) == (40.0, Path("book"))


@pytest.mark.parametrize("qty", ["0", "-5", "nan", "inf"])
def test_a_part_size_that_is_not_a_positive_number_is_refused_by_name(qty: str) -> None:
    with pytest.raises(ValueError, match="max_fill_qty: must be > 0"):
        settings_from_args(_parse("--max-fill-qty", qty), _ENV)


def test_credentials_come_from_the_environment_or_are_refused() -> None:
    assert settings_from_args(_parse(), _ENV).key == "local"

    with pytest.raises(ValueError, match="credentials"):
        settings_from_args(_parse(), {})
