"""The user's settings file: where it is, what `lxd:` and the backend read from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers import paths, user_config
from tapers.errors import UsageError


def test_the_file_is_tapers_config_else_under_xdg_config_home(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TAPERS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert paths.user_config_file() == tmp_path / "xdg" / "tapers" / "config.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.user_config_file() == tmp_path / "home" / ".config" / "tapers" / "config.yaml"
    monkeypatch.setenv("TAPERS_CONFIG", str(tmp_path / "mine.yaml"))
    assert paths.user_config_file() == tmp_path / "mine.yaml"


def test_lxd_settings_are_read_from_the_user_config(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("backend: lxd\nlxd:\n  endpoint: https://127.0.0.1:8443\n"
                      "  client_cert: ~/lxd/client.crt\n  client_key: ~/lxd/client.key\n")
    monkeypatch.setenv("TAPERS_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = user_config.lxd_settings()
    assert settings.endpoint == "https://127.0.0.1:8443"
    assert settings.client_cert == tmp_path / "lxd" / "client.crt" and isinstance(settings.client_key, Path)
    assert user_config.backend_name() == "lxd"


def test_an_unknown_lxd_setting_is_named(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("lxd:\n  endpoit: https://x\n")
    monkeypatch.setenv("TAPERS_CONFIG", str(config))
    with pytest.raises(UsageError, match="unknown `lxd:` setting `endpoit`"):
        user_config.lxd_settings()
