"""The benchmark harness end to end, at its quick sizes: the results file keeps its shape.

Runs the cheapest benchmarks in-process through ``python -m bench``'s ``main``
(real actors, a real SQLite store in a temporary directory) and checks the
JSON that tools read. Numbers are not asserted: this machine is shared.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main

_TOP = {"when", "machine", "versions", "benchmarks"}
_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "metric": (str,),
    "unit": (str,),
    "value": (float, int),
    "baseline": (str,),
    "baseline_value": (float, int, type(None)),
    "ratio": (float, int, type(None)),
    "target": (str,),
    "met": (bool,),
    "runs": (int,),
    "min": (float, int),
    "max": (float, int),
}


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in report["benchmarks"]}


def test_quick_run_writes_the_stable_results_shape(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["--quick", "--out", str(out), "--workdir", str(tmp_path)]
    argv += ["--only", "fill_durability", "--only", "checkpoint", "--only", "rest_loop_lag"]

    code = main(argv)

    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) == _TOP
    assert datetime.fromisoformat(report["when"]).tzinfo is not None
    assert {"python", "sqlite", "stalwart", "msgspec", "uvloop"} <= set(report["versions"])
    assert report["machine"]["cores"] >= 1
    for bench in report["benchmarks"]:
        assert set(bench) == set(_FIELDS), bench["name"]
        for key, types in _FIELDS.items():
            assert isinstance(bench[key], types), (bench["name"], key)
        assert not isinstance(bench["runs"], bool)
        for key in ("value", "min", "max"):
            assert math.isfinite(bench[key]), (bench["name"], key)
    results = _by_name(report)
    assert set(results) == {
        "fill_durability_p50",
        "fill_durability_p99",
        "checkpoint_stall",
        "checkpoint_cost",
        "rest_loop_lag",
        "rest_loop_lag_shared_cores",
    }
    for name in ("fill_durability_p50", "fill_durability_p99", "checkpoint_cost", "rest_loop_lag"):
        measured = results[name]
        assert measured["runs"] >= 2
        assert measured["min"] <= measured["value"] <= measured["max"]
        assert measured["baseline_value"] > 0
        assert measured["ratio"] > 0
    assert results["checkpoint_stall"]["ratio"] is None  # no baseline: an absolute target


def test_a_missing_workdir_is_refused_by_name_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    missing = tmp_path / "nowhere"

    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--only", "memory", "--out", str(out), "--workdir", str(missing)])

    assert exc.value.code == 2
    assert f"--workdir {missing}: not a directory" in capsys.readouterr().err
    assert not out.exists()
    assert not missing.exists()
