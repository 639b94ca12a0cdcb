"""Regions come from the config in a small safe language; the analysis config is validated when read."""

from __future__ import annotations

import numpy as np
import pytest

from eventlm.analysis.config import AnalysisConfigError, load_analysis_config, parse_config
from eventlm.analysis.features import VARIABLES
from eventlm.analysis.regions import Region, SelectionError, region_from_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
VALUES = {
    "n_jets": np.array([3, 4, 5, 6, 7, 8]),
    "n_bjets": np.array([0, 1, 2, 2, 1, 3]),
    "met": np.array([10.0, 50.0, 120.0, 300.0, 80.0, 0.0]),
    "ht": np.array([100.0, 500.0, 600.0, 900.0, 0.0, 1000.0]),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4 <= n_jets <= 5", [0, 1, 1, 0, 0, 0]),
        ("n_jets >= 6 and n_bjets >= 2", [0, 0, 0, 1, 0, 1]),
        ("n_bjets == 0 or met > 250", [1, 0, 0, 1, 0, 0]),
        ("not (n_jets > 4)", [1, 1, 0, 0, 0, 0]),
        ("met / ht > 0.2", [0, 0, 0, 1, 1, 0]),  # ht = 0 gives inf, no warning
        ("n_jets - n_bjets >= 5", [0, 0, 0, 0, 1, 1]),
    ],
)
def test_selection_language(text, expected):
    region = Region("R", text)
    region.validate(set(VARIABLES))
    np.testing.assert_array_equal(region.mask(VALUES), np.array(expected, dtype=bool))


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "n_jets.real > 1", "VALUES['n_jets'] > 1", "lambda: 1",
     "n_jets > 'a'", "n_jets if met else ht", "open('x')", "n_jets > True"],
)
def test_selection_language_rejects_anything_else(text):
    with pytest.raises(SelectionError):
        Region("R", text).validate(set(VARIABLES))


def test_unknown_variable_is_named():
    with pytest.raises(SelectionError, match="unknown variable 'njets'"):
        Region("R", "njets >= 4").validate(set(VARIABLES))


def test_per_variable_bounds_are_inclusive():
    region = region_from_config("B", {"min": {"n_jets": 4}, "max": {"n_jets": 6, "met": 200}})
    np.testing.assert_array_equal(region.mask(VALUES), [False, True, True, False, False, False])
    assert "n_jets >= 4" in region.describe()


def _minimal(**extra):
    data = {"inputs": {"background": ["b.root"], "signals": {"sig": ["s.root"]}},
            "regions": {"CR": {"selection": "n_jets <= 5"}, "SR": {"selection": "n_jets >= 6"}}}
    data.update(extra)
    return data


def test_config_errors_name_the_problem():
    parse_config(_minimal())
    with pytest.raises(AnalysisConfigError, match="unknown keys"):
        parse_config(_minimal(threshold={"methd": "youden"}))
    with pytest.raises(AnalysisConfigError, match="not a region"):
        parse_config(_minimal(threshold={"signal_region": "VR"}))
    with pytest.raises(AnalysisConfigError, match="not allowed"):
        parse_config({**_minimal(), "regions": {"CR": {"selection": "exec('1')"}, "SR": {}}})
    with pytest.raises(AnalysisConfigError, match="method"):
        parse_config(_minimal(threshold={"method": "max_sic"}))


@pytest.mark.parametrize("study", ["tttt_H500", "gluino_1000"])
def test_bundled_study_configs_load(study):
    config = load_analysis_config(ROOT / "analysis" / f"{study}.toml")
    assert config.study.name == study
    assert list(config.inputs.signals) == [study]
    assert config.inputs.background[0] == ROOT / "data" / "background.csv.gz"
    assert {r.name for r in config.regions} >= {"CR", "SR"}
