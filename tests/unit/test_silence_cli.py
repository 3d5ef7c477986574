"""`sensord silence add|list|expire` (issue 9, point 6): who, when and why are required
and kept; a maximum duration; life-safety needs an explicit flag and a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord._cli import main


def config(tmp_path: Path, dispatch: str = "") -> Path:
    cfg = tmp_path / "sensord.yaml"
    extra = ""
    if dispatch:
        (tmp_path / "dispatch.yaml").write_text(dispatch)
        extra = "dispatch: dispatch.yaml\n"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\n{extra}")
    return cfg


def add(cfg: Path, *extra: str) -> int:
    return main(["silence", "add", "-c", str(cfg), "--match", "family=lift", "--for", "2h", *extra])


def test_add_then_list_shows_who_when_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A silence made with --by and --comment is listed active with both."""
    cfg = config(tmp_path)
    assert add(cfg, "--by", "王工", "--comment", "annual inspection") == 0
    assert main(["silence", "list", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "\tactive\t" in out
    assert 'family="lift"' in out or "family=lift" in out
    assert "by 王工" in out
    assert "annual inspection" in out


def test_blank_creator_or_comment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Who and why must say something."""
    assert add(config(tmp_path), "--by", " ", "--comment", "x") == 1
    assert "--by and --comment" in capsys.readouterr().err


def test_longer_than_max_silence_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The dispatch file's max_silence (here 1h) bounds --for."""
    cfg = config(tmp_path, "max_silence: 1h\n")
    assert add(cfg, "--by", "a", "--comment", "b") == 1
    assert "at most max_silence (1 h)" in capsys.readouterr().err


def test_life_safety_needs_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--life-safety without --reason is refused; with one it is made and warned about."""
    cfg = config(tmp_path)
    assert add(cfg, "--by", "a", "--comment", "b", "--life-safety") == 1
    assert "life-safety alerts needs a reason" in capsys.readouterr().err
    assert add(cfg, "--by", "a", "--comment", "b", "--life-safety", "--reason", "fire drill") == 0
    assert "also holds life-safety alerts" in capsys.readouterr().err


def test_expire_ends_it_and_it_stays_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An expired silence is listed as expired; expiring it again (or an unknown id) is an error."""
    cfg = config(tmp_path)
    add(cfg, "--by", "a", "--comment", "b")
    assert main(["silence", "expire", "-c", str(cfg), "1"]) == 0
    assert main(["silence", "expire", "-c", str(cfg), "1"]) == 1
    capsys.readouterr()
    main(["silence", "list", "-c", str(cfg)])
    assert "\texpired\t" in capsys.readouterr().out


def test_bad_matcher_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --match that is not label=value is refused with the form to use."""
    cfg = config(tmp_path)
    assert (
        main(
            [
                "silence",
                "add",
                "-c",
                str(cfg),
                "--match",
                "lift",
                "--for",
                "1h",
                "--by",
                "a",
                "--comment",
                "b",
            ]
        )
        == 1
    )
    assert 'label="value"' in capsys.readouterr().err


def test_scheduled_silence_from_a_given_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--from sets the start (a maintenance window planned ahead); listed as pending
    until then; a time without a zone is refused."""
    cfg = config(tmp_path)
    assert add(cfg, "--by", "a", "--comment", "b", "--from", "2999-01-01T22:00+08:00") == 0
    assert "from 2999-01-01T14:00:00Z until 2999-01-01T16:00:00Z" in capsys.readouterr().out
    main(["silence", "list", "-c", str(cfg)])
    assert "\tpending\t" in capsys.readouterr().out
    assert add(cfg, "--by", "a", "--comment", "b", "--from", "2999-01-01T22:00") == 1
    assert "needs a zone" in capsys.readouterr().err
