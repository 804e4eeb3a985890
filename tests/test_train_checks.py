"""`nsprecall train` refuses a log it cannot train and judge a model on: the message names what to
change, there is no traceback and no run directory. Progress bars stay off when stderr is a file."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from model_export.data import DAY
from model_export.progress import progress_bar
from nsprecall.cli import main

TINY_WORLD = ["--users", "60", "--items", "200", "--days", "6", "--seed", "0"]
FAST = ["--epochs", "1", "--dim", "16", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("checks_world")
    main(["synth", "--out", str(out), *TINY_WORLD, "--quiet"])
    return out


@pytest.fixture
def events(world: Path) -> pd.DataFrame:
    """The tiny world's log as text columns (written back unchanged), ``ts`` as int."""
    frame = pd.read_csv(world / "events.csv", dtype=str)
    frame["ts"] = frame["ts"].astype("int64")
    return frame


@pytest.fixture
def catalog(world: Path) -> pd.DataFrame:
    return pd.read_csv(world / "catalog.csv", dtype=str)


def write(directory: Path, events: pd.DataFrame, catalog: pd.DataFrame) -> Path:
    directory.mkdir()
    events.to_csv(directory / "events.csv", index=False)
    catalog.to_csv(directory / "catalog.csv", index=False)
    return directory


def refusal(data: Path, out: Path, *options: str) -> str:
    """The message `nsprecall train` exits with; fails the test if it trains or writes ``out``."""
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", str(data), "--out", str(out), *FAST, *options])
    assert not out.exists()
    message = exited.value.code
    assert isinstance(message, str)  # a message for the user, not a bare status
    return message


def span(events: pd.DataFrame) -> str:
    return f"the log spans {(events['ts'].max() + 1 - events['ts'].min()) / DAY:.1f} days"


def test_a_valid_tiny_log_trains(world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    main(["train", "--data", str(world), "--out", str(run), *FAST])
    assert (run / "checkpoint.pt").is_file() and (run / "metrics.json").is_file()


def test_no_validation_cases_is_refused(events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path) -> None:
    end = events["ts"].max() + 1
    in_validation = (events["ts"] >= end - 2 * DAY) & (events["ts"] < end - DAY)
    data = write(tmp_path / "data", events[~in_validation], catalog)
    message = refusal(data, tmp_path / "run")
    assert "no validation cases" in message and "--val-days" in message
    assert span(events) in message


def test_no_test_cases_is_refused(events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path) -> None:
    # Only exposures on the last day: no session there has a target to predict.
    events.loc[events["ts"] >= events["ts"].max() + 1 - DAY, "action"] = "exposure"
    message = refusal(write(tmp_path / "data", events, catalog), tmp_path / "run")
    assert "no test cases" in message and "--test-days" in message
    assert span(events) in message


def test_validation_and_test_periods_taking_the_whole_log_are_refused(world: Path, tmp_path: Path) -> None:
    message = refusal(world, tmp_path / "run", "--val-days", "3", "--test-days", "3")
    assert "no training sessions" in message and "--val-days" in message and "--test-days" in message


def test_a_window_without_targets_is_refused(world: Path, tmp_path: Path) -> None:
    message = refusal(world, tmp_path / "run", "--window-days", "0")
    assert "no training user has a target session in the window" in message and "--window-days" in message


def test_log_items_missing_from_the_catalog_are_refused(
    events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path
) -> None:
    dropped = sorted(events["item_id"].unique())[:7]
    data = write(tmp_path / "data", events, catalog[~catalog["item_id"].isin(dropped)])
    message = refusal(data, tmp_path / "run")
    assert f"7 item ids in {data / 'events.csv'} are not in {data / 'catalog.csv'}" in message
    assert f"e.g. {', '.join(dropped[:5])})" in message
    assert "catalog.csv" in message and "--data" in message


def test_unknown_actions_are_refused_naming_the_known_ones(
    events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path
) -> None:
    events.loc[3, "action"] = "like"
    message = refusal(write(tmp_path / "data", events, catalog), tmp_path / "run")
    assert "unknown actions ['like']" in message
    assert "exposure, click, cart, pay" in message


@pytest.mark.parametrize("users", [1, 0])
def test_fewer_than_two_users_are_refused(
    events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path, users: int
) -> None:
    busiest = events["user_id"].value_counts().index[:users]
    data = write(tmp_path / "data", events[events["user_id"].isin(busiest)], catalog)
    message = refusal(data, tmp_path / "run")
    assert f"has events of {users} user(s); training needs several users" in message
    assert "--data" in message


@pytest.mark.parametrize(("file", "column"), [("events.csv", "scene"), ("catalog.csv", "price")])
def test_missing_columns_are_refused(
    events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path, file: str, column: str
) -> None:
    frames = {"events.csv": events, "catalog.csv": catalog}
    frames[file] = frames[file].drop(columns=[column])
    data = write(tmp_path / "data", frames["events.csv"], frames["catalog.csv"])
    message = refusal(data, tmp_path / "run")
    assert f"{data / file}: missing columns ['{column}']" in message


@pytest.mark.parametrize("present", ["catalog.csv", "events.csv"])
def test_missing_files_are_refused(world: Path, tmp_path: Path, present: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / present).write_bytes((world / present).read_bytes())
    absent = "events.csv" if present == "catalog.csv" else "catalog.csv"
    message = refusal(data, tmp_path / "run")
    assert f"{data / absent} does not exist" in message and "--data" in message


def test_an_unreadable_log_is_refused(events: pd.DataFrame, catalog: pd.DataFrame, tmp_path: Path) -> None:
    events["ts"] = events["ts"].astype(str)
    events.loc[3, "ts"] = "yesterday"
    message = refusal(write(tmp_path / "data", events, catalog), tmp_path / "run")
    assert "events.csv: cannot read it" in message and "'yesterday'" in message


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_off_unless_enabled_on_a_terminal() -> None:
    log_file, terminal = io.StringIO(), _Terminal()
    assert list(progress_bar(range(3), stream=log_file, desc="steps")) == [0, 1, 2]
    assert log_file.getvalue() == ""  # nothing drawn into a log
    assert progress_bar(range(3), stream=log_file).disable
    assert progress_bar(range(3), enabled=False, stream=terminal).disable
    assert not progress_bar(range(3), stream=terminal).disable
    list(progress_bar(range(3), stream=terminal, desc="steps"))
    assert "steps" in terminal.getvalue()
