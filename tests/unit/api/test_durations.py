"""The one Go duration parser that kubectl-style flags, the lost-node recovery annotation (LR1), backup
retention (BC13) and ``@every`` schedules (CJ2) share: Go's time.ParseDuration's syntax and error words."""
from __future__ import annotations

import pytest

from storage.api.backup_schedule import parse_duration
from storage.api.durations import duration_seconds


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("500ms", 0.5), ("2us", 2e-6), ("2\u00b5s", 2e-6),
    ("0", 0.0), ("-5m", -300.0), ("+1s", 1.0), ("1.s", 1.0), (".5s", 0.5),
])
def test_go_durations_are_read(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, message", [
    ("", 'time: invalid duration ""'),
    ("-", 'time: invalid duration "-"'),
    (".s", 'time: invalid duration ".s"'),
    ("5", 'time: missing unit in duration "5"'),
    ("1h5", 'time: missing unit in duration "1h5"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    ("7d", 'time: unknown unit "d" in duration "7d"'),
    (" 5s", 'time: invalid duration " 5s"'),
])
def test_what_go_refuses_is_refused_in_its_words(text: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        duration_seconds(text)
    assert str(refused.value) == message


def test_days_and_weeks_only_where_asked_for() -> None:
    assert duration_seconds("7d", days=True) == 604800.0 and duration_seconds("1w2d", days=True) == 777600.0
    assert parse_duration("2w").total_seconds() == 1209600.0
    for bad in ("-1h", "soon", "5"):
        with pytest.raises(ValueError, match="must be a duration such as 30m, 24h, 7d or 1h30m"):
            parse_duration(bad)
