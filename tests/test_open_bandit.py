"""Tests of the Open Bandit Dataset loader on the real sample and on broken files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from simulators.data.errors import DataFormatError, DataNotFoundError
from simulators.data.open_bandit import OpenBanditData, load_open_bandit

# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def random_log(data_root: Path) -> OpenBanditData:
    return load_open_bandit(data_root, policy="random")


@pytest.fixture(scope="module")
def bts_log(data_root: Path) -> OpenBanditData:
    return load_open_bandit(data_root, policy="bts")


@pytest.mark.parametrize(("policy", "clicks"), [("random", 38), ("bts", 42)])
def test_real_sample_shapes(data_root: Path, policy: str, clicks: int) -> None:
    data = load_open_bandit(data_root, policy=policy, campaign="all")
    n = 10_000
    assert (data.policy, data.campaign) == (policy, "all")
    assert data.n_rows == n
    assert data.n_items == 80
    assert data.n_positions == 3
    assert int(data.click.sum()) == clicks
    assert data.click.dtype == bool
    assert data.timestamp.dtype == np.float64 and data.timestamp.shape == (n,)
    assert data.item.dtype == np.int64 and data.item.min() >= 0 and data.item.max() <= 79
    assert data.position.dtype == np.int64
    assert set(np.unique(data.position).tolist()) == {0, 1, 2}
    assert data.propensity.dtype == np.float64
    assert ((data.propensity > 0) & (data.propensity <= 1)).all()
    assert data.user_features.shape == (n, 4) and data.user_features.dtype == np.int64
    assert len(data.user_feature_vocab) == 4
    for k, vocab in enumerate(data.user_feature_vocab):
        assert list(vocab) == sorted(vocab)
        assert data.user_features[:, k].max() == len(vocab) - 1
        assert data.user_features[:, k].min() == 0
    assert data.affinity.shape == (n, 80) and data.affinity.dtype == np.float32
    assert data.item_numeric.shape == (80,) and data.item_numeric.dtype == np.float32
    assert data.item_categories.shape == (80, 3) and data.item_categories.dtype == np.int64
    assert len(data.item_category_vocab) == 3
    assert [p.name for p in data.files] == ["all.csv", "item_context.csv"]
    assert all(p.parent.parent.name == policy for p in data.files)
    # The sample covers 2019-11-24 (UTC).
    first = datetime.fromtimestamp(float(data.timestamp.min()), tz=timezone.utc)
    assert (first.year, first.month, first.day) == (2019, 11, 24)


def test_real_sample_first_row(random_log: OpenBanditData) -> None:
    # ,2019-11-24 00:00:34.762830+00:00,14,3,0,0.0125,... (line 2 of random/all/all.csv)
    expected = datetime(2019, 11, 24, 0, 0, 34, 762830, tzinfo=timezone.utc).timestamp()
    assert random_log.timestamp[0] == pytest.approx(expected, abs=1e-6)
    assert random_log.item[0] == 14
    assert random_log.position[0] == 2  # file value 3, 0-based here
    assert not random_log.click[0]
    assert random_log.propensity[0] == 0.0125
    assert random_log.user_feature_vocab[0][random_log.user_features[0, 0]] == (
        "81ce123cbb5bd8ce818f60fb3586bba5"
    )
    # item 0: 0,0,-0.49917162609493676,aed790911d0344f149be2fb9470d6f0a,...
    assert random_log.item_numeric[0] == pytest.approx(-0.49917162609493676)
    assert random_log.item_category_vocab[0][random_log.item_categories[0, 0]] == (
        "aed790911d0344f149be2fb9470d6f0a"
    )


def test_random_policy_propensity_is_constant(random_log: OpenBanditData) -> None:
    assert np.unique(random_log.propensity).size == 1
    # Uniform over 80 items at each position.
    assert random_log.propensity[0] == pytest.approx(1 / 80)


def test_bts_propensity_varies(bts_log: OpenBanditData) -> None:
    assert np.unique(bts_log.propensity).size > 1


def test_each_policy_reads_its_own_item_context(
    random_log: OpenBanditData, bts_log: OpenBanditData
) -> None:
    # Same numeric feature, different hashes for the categorical ones.
    np.testing.assert_array_equal(random_log.item_numeric, bts_log.item_numeric)
    assert random_log.item_category_vocab != bts_log.item_category_vocab


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_position_ctr_sums_to_totals(data_root: Path, policy: str) -> None:
    data = load_open_bandit(data_root, policy=policy)
    clicks, impressions = data.position_ctr()
    assert clicks.shape == impressions.shape == (data.n_positions,)
    assert clicks.dtype == impressions.dtype == np.int64
    assert int(clicks.sum()) == int(data.click.sum())
    assert int(impressions.sum()) == data.n_rows
    assert (clicks <= impressions).all()
    for pos in range(data.n_positions):
        assert impressions[pos] == int((data.position == pos).sum())
        assert clicks[pos] == int(data.click[data.position == pos].sum())


def test_data_dir_may_be_the_open_bandit_folder(
    data_root: Path, random_log: OpenBanditData
) -> None:
    data = load_open_bandit(data_root / "open-bandit")
    assert data.policy == "random" and data.campaign == "all"
    np.testing.assert_array_equal(data.item, random_log.item)
    np.testing.assert_array_equal(data.click, random_log.click)


def test_missing_policy_lists_available(data_root: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_open_bandit(data_root, policy="no-such-policy")
    message = str(err.value)
    assert "no-such-policy" in message
    assert "'bts'" in message and "'random'" in message


def test_missing_campaign_lists_available(data_root: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_open_bandit(data_root, policy="bts", campaign="men")
    assert "'men'" in str(err.value) and "'all'" in str(err.value)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="open-bandit"):
        load_open_bandit(tmp_path)


# -------------------------------------------------------------------------- small files

HEADER = (
    ",timestamp,item_id,position,click,propensity_score,"
    "user_feature_0,user_feature_1,user_feature_2,user_feature_3,"
    "user-item_affinity_0,user-item_affinity_1,user-item_affinity_2"
)
ROWS = [  # file lines 2..5
    "0,2019-11-24 00:00:01.000000+00:00,0,1,0,0.3333333333333333,ua,ub,uc,ud,0.0,1.0,0.0",
    "1,2019-11-24 00:00:01.000000+00:00,2,2,1,0.3333333333333333,ua,ub,uc,ud,0.0,1.0,0.0",
    "2,2019-11-24 00:00:01.000000+00:00,1,3,0,0.3333333333333333,ub,ub,uc,ud,0.5,0.0,2.0",
    "3,2019-11-24 00:01:00.500000+00:00,1,1,1,0.5,ua,ua,uc,ud,0.0,0.0,3.0",
]
ITEM_HEADER = ",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3"
ITEMS = [  # file lines 2..4
    "0,0,-0.5,h1,h2,h3",
    "1,1,0.25,h1,h4,h3",
    "2,2,1.5,h5,h2,h3",
]


def _lines(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def _write(
    root: Path,
    campaign: str | None = None,
    items: str | None = None,
    *,
    policy: str = "random",
    name: str = "all",
) -> Path:
    folder = root / "open-bandit" / policy / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(_lines(HEADER, ROWS) if campaign is None else campaign)
    (folder / "item_context.csv").write_text(_lines(ITEM_HEADER, ITEMS) if items is None else items)
    return root / "open-bandit"


def test_small_valid_files_load(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    data = load_open_bandit(folder)
    assert data.n_rows == 4 and data.n_items == 3 and data.n_positions == 3
    np.testing.assert_array_equal(data.item, [0, 2, 1, 1])
    np.testing.assert_array_equal(data.position, [0, 1, 2, 0])
    np.testing.assert_array_equal(data.click, [False, True, False, True])
    np.testing.assert_allclose(data.propensity, [1 / 3, 1 / 3, 1 / 3, 0.5])
    t0 = datetime(2019, 11, 24, 0, 0, 1, tzinfo=timezone.utc).timestamp()
    np.testing.assert_allclose(data.timestamp, [t0, t0, t0, t0 + 59.5])
    assert data.user_feature_vocab == (("ua", "ub"), ("ua", "ub"), ("uc",), ("ud",))
    np.testing.assert_array_equal(
        data.user_features, [[0, 1, 0, 0]] * 2 + [[1, 1, 0, 0]] + [[0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        data.affinity, np.array([[0, 1, 0], [0, 1, 0], [0.5, 0, 2], [0, 0, 3]], np.float32)
    )
    np.testing.assert_array_equal(data.item_numeric, np.array([-0.5, 0.25, 1.5], np.float32))
    assert data.item_category_vocab == (("h1", "h5"), ("h2", "h4"), ("h3",))
    np.testing.assert_array_equal(data.item_categories, [[0, 0, 0], [0, 1, 0], [1, 0, 0]])
    clicks, impressions = data.position_ctr()
    np.testing.assert_array_equal(clicks, [1, 1, 0])
    np.testing.assert_array_equal(impressions, [2, 1, 1])
    # A data root holding open-bandit/ works as well.
    assert load_open_bandit(tmp_path).n_rows == 4


def test_item_context_rows_may_be_in_any_order(tmp_path: Path) -> None:
    folder = _write(tmp_path, items=_lines(ITEM_HEADER, ITEMS[::-1]))
    data = load_open_bandit(folder)
    np.testing.assert_array_equal(data.item_numeric, np.array([-0.5, 0.25, 1.5], np.float32))


def test_decreasing_timestamps_are_accepted(tmp_path: Path) -> None:
    folder = _write(tmp_path, campaign=_lines(HEADER, ROWS[::-1]))
    data = load_open_bandit(folder)
    assert data.timestamp[0] > data.timestamp[-1]


def test_other_campaign_and_policy_names(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    _write(tmp_path, policy="bts", name="men")
    data = load_open_bandit(folder, policy="bts", campaign="men")
    assert (data.policy, data.campaign) == ("bts", "men")
    assert data.files[0].name == "men.csv"


def test_missing_item_context_file(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    (folder / "random" / "all" / "item_context.csv").unlink()
    with pytest.raises(DataNotFoundError, match="item_context.csv"):
        load_open_bandit(folder)


def _replace_row(rows: list[str], index: int, column: int, value: str) -> list[str]:
    rows = list(rows)
    fields = rows[index].split(",")
    fields[column] = value
    rows[index] = ",".join(fields)
    return rows


Edit = Callable[[], tuple[str, str]]
CAMPAIGN_OK = _lines(HEADER, ROWS)
ITEMS_OK = _lines(ITEM_HEADER, ITEMS)

BROKEN: dict[str, tuple[Edit, str, int, str]] = {
    # name: (files builder, file named in the message, line, text in the message)
    "wrong header column": (
        lambda: (_lines(HEADER.replace(",click,", ",clicked,"), ROWS), ITEMS_OK),
        "all.csv",
        1,
        "'clicked', expected 'click'",
    ),
    "semicolon separator": (
        lambda: (CAMPAIGN_OK.replace(",", ";"), ITEMS_OK),
        "all.csv",
        1,
        "separator",
    ),
    "non-numeric click": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 1, 4, "yes")), ITEMS_OK),
        "all.csv",
        3,
        "'click' must be an integer",
    ),
    "click 2": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 1, 4, "2")), ITEMS_OK),
        "all.csv",
        3,
        "click must be 0 or 1",
    ),
    "propensity 0": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 2, 5, "0")), ITEMS_OK),
        "all.csv",
        4,
        "propensity_score must be in (0, 1]",
    ),
    "propensity above 1": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 2, 5, "1.5")), ITEMS_OK),
        "all.csv",
        4,
        "propensity_score",
    ),
    "unknown item id": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 3, 2, "3")), ITEMS_OK),
        "all.csv",
        5,
        "item_id 3 is not listed in item_context.csv",
    ),
    "position 0": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 0, 3, "0")), ITEMS_OK),
        "all.csv",
        2,
        "position must be >= 1",
    ),
    "bad timestamp": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 0, 1, "yesterday")), ITEMS_OK),
        "all.csv",
        2,
        "timestamp",
    ),
    "timestamp without offset": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 1, 1, "2019-11-24 00:00:01")), ITEMS_OK),
        "all.csv",
        3,
        "UTC offset",
    ),
    "non-numeric affinity": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 2, 12, "high")), ITEMS_OK),
        "all.csv",
        4,
        "'user-item_affinity_2' must be a finite number",
    ),
    "infinite affinity": (
        lambda: (_lines(HEADER, _replace_row(ROWS, 3, 10, "inf")), ITEMS_OK),
        "all.csv",
        5,
        "'user-item_affinity_0' must be a finite number",
    ),
    "truncated last line": (
        lambda: (CAMPAIGN_OK[:-1], ITEMS_OK),
        "all.csv",
        5,
        "truncated",
    ),
    "line cut short": (
        lambda: (_lines(HEADER, [*ROWS[:2], ROWS[2][:40], ROWS[3]]), ITEMS_OK),
        "all.csv",
        4,
        "truncated",
    ),
    "blank line": (
        lambda: (_lines(HEADER, [*ROWS[:3], "", ROWS[3]]), ITEMS_OK),
        "all.csv",
        5,
        "blank line",
    ),
    "too few affinity columns": (
        lambda: (_lines(HEADER.rsplit(",", 1)[0], [r.rsplit(",", 1)[0] for r in ROWS]), ITEMS_OK),
        "all.csv",
        1,
        "item_context.csv lists 3 items",
    ),
    "more items than affinity columns": (
        lambda: (CAMPAIGN_OK, _lines(ITEM_HEADER, [*ITEMS, "3,3,0.0,h1,h2,h3"])),
        "all.csv",
        1,
        "item_context.csv lists 4 items",
    ),
    "misnamed affinity column": (
        lambda: (_lines(HEADER.replace("affinity_1", "affinity_one"), ROWS), ITEMS_OK),
        "all.csv",
        1,
        "header column 12 is 'user-item_affinity_one', expected 'user-item_affinity_1' "
        "(one user-item_affinity_<i> column per item",
    ),
    "item_context wrong header": (
        lambda: (CAMPAIGN_OK, _lines(ITEM_HEADER.replace("item_id", "id"), ITEMS)),
        "item_context.csv",
        1,
        "expected 'item_id'",
    ),
    "item_context duplicate id": (
        lambda: (CAMPAIGN_OK, _lines(ITEM_HEADER, [ITEMS[0], ITEMS[1], "2,1,1.5,h5,h2,h3"])),
        "item_context.csv",
        4,
        "item_id 1 is listed twice (first on line 3)",
    ),
    "item_context ids not contiguous": (
        lambda: (CAMPAIGN_OK, _lines(ITEM_HEADER, [ITEMS[0], ITEMS[1], "2,5,1.5,h5,h2,h3"])),
        "item_context.csv",
        4,
        "ids must be 0..2",
    ),
    "item_context non-numeric feature": (
        lambda: (CAMPAIGN_OK, _lines(ITEM_HEADER, [ITEMS[0], "1,1,big,h1,h4,h3", ITEMS[2]])),
        "item_context.csv",
        3,
        "'item_feature_0' must be a finite number",
    ),
    "item_context truncated": (
        lambda: (CAMPAIGN_OK, ITEMS_OK[:-1]),
        "item_context.csv",
        4,
        "truncated",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_name_file_and_line(tmp_path: Path, case: str) -> None:
    build, file_name, line, text = BROKEN[case]
    campaign, items = build()
    folder = _write(tmp_path, campaign, items)
    with pytest.raises(DataFormatError) as err:
        load_open_bandit(folder)
    message = str(err.value)
    assert err.value.path.name == file_name
    assert err.value.line == line
    assert f"{file_name}, line {line}:" in message
    assert text in message


def test_header_only_campaign_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path, campaign=HEADER + "\n")
    with pytest.raises(DataFormatError, match="no rows"):
        load_open_bandit(folder)
