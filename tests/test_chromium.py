"""Which Chromium the SDK would launch: GIRAFFE_CHROMIUM, Playwright's own, then a system one on PATH."""

import stat

import pytest

from giraffe_agent import find_chromium


def _fake_browser(path):
    path.write_text("#!/bin/sh\necho Chromium 1.0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def clean_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("GIRAFFE_CHROMIUM", raising=False)
    return bin_dir


def test_system_chromium_on_path_is_found_when_playwright_has_none(clean_path):
    fake = _fake_browser(clean_path / "chromium")
    info = find_chromium(use_playwright=False)
    assert info is not None and info.path == str(fake) and info.source == "system"


def test_names_are_tried_in_order(clean_path):
    _fake_browser(clean_path / "google-chrome")
    chromium_browser = _fake_browser(clean_path / "chromium-browser")
    assert find_chromium(use_playwright=False).path == str(chromium_browser)


def test_environment_override_wins(clean_path, tmp_path, monkeypatch):
    _fake_browser(clean_path / "chromium")
    custom = _fake_browser(tmp_path / "my-chrome")
    monkeypatch.setenv("GIRAFFE_CHROMIUM", str(custom))
    info = find_chromium()
    assert info.path == str(custom) and info.source == "env"


def test_bad_override_is_ignored_with_a_warning(clean_path, tmp_path, monkeypatch, caplog):
    fake = _fake_browser(clean_path / "chromium")
    monkeypatch.setenv("GIRAFFE_CHROMIUM", str(tmp_path / "missing"))
    assert find_chromium(use_playwright=False).path == str(fake)
    assert "not an executable" in caplog.text


def test_none_when_no_browser_anywhere(clean_path):
    assert find_chromium(use_playwright=False) is None


def test_non_executable_file_is_not_a_browser(clean_path):
    (clean_path / "chromium").write_text("not a program")
    assert find_chromium(use_playwright=False) is None
