"""Property tests: a damaged ratings file is refused, never read as less data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.data.errors import DataFormatError
from simulators.data.movielens import load_ml100k

ITEMS = "".join(f"{i}|Film {i} (1995)|01-Jan-1995||url" + "|0" * 19 + "\n" for i in range(1, 9))
USERS = "".join(f"{u}|30|M|writer|12345\n" for u in range(1, 6))

ratings_tables = st.lists(
    st.tuples(
        st.integers(1, 5), st.integers(1, 8), st.integers(1, 5), st.integers(0, 2_000_000_000)
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda row: (row[0], row[1]),
)


def _write(folder: Path, ratings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.item").write_text(ITEMS, encoding="latin-1")
    (folder / "u.user").write_text(USERS)
    (folder / "u.data").write_text(ratings)
    return folder


def _text(rows) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


settings_ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(rows=ratings_tables)
def test_valid_tables_round_trip(tmp_path: Path, rows) -> None:
    data = load_ml100k(_write(tmp_path / "ok", _text(rows)))
    assert data.n_ratings == len(rows)
    got = sorted(
        zip(
            (data.user + 1).tolist(),
            (data.item + 1).tolist(),
            data.rating.tolist(),
            data.timestamp.tolist(),
            strict=True,
        )
    )
    assert got == sorted(rows)


@settings_
@given(rows=ratings_tables, data=st.data())
def test_truncation_inside_a_line_is_refused(tmp_path: Path, rows, data) -> None:
    text = _text(rows)
    # Every cut that does not fall right after a newline leaves a partial last line.
    # (A cut right after one leaves a shorter, well-formed file: undetectable.)
    inside = [p for p in range(1, len(text)) if text[p - 1] != "\n"]
    position = data.draw(st.sampled_from(inside))
    with pytest.raises(DataFormatError, match=r"u\.data, line \d+"):
        load_ml100k(_write(tmp_path / "cut", text[:position]))


@settings_
@given(
    rows=ratings_tables,
    line=st.integers(0, 29),
    field=st.integers(0, 3),
    junk=st.sampled_from(["x", "", "1.5", "-", "1e3", "٣", "4 "]),
)
def test_a_non_integer_field_is_refused_with_its_line(
    tmp_path: Path, rows, line, field, junk
) -> None:
    line = line % len(rows)
    fields = [list(map(str, row)) for row in rows]
    fields[line][field] = junk
    text = "".join("\t".join(row) + "\n" for row in fields)
    with pytest.raises(DataFormatError) as err:
        load_ml100k(_write(tmp_path / "junk", text))
    assert err.value.line == line + 1
