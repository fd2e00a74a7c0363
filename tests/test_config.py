"""Settings: defaults, TOML, environment, overrides, and one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.config import Settings, describe_settings, load_settings
from appliance.errors import ConfigError
from tests.conftest import BIN


def test_defaults_run_an_embedded_appliance() -> None:
    settings = load_settings(environ={})

    assert settings.data_dir == Path("data")
    assert settings.dicom_port == 11112
    assert settings.http_port == 8080
    assert settings.ae_title == "APPLIANCE"
    assert settings.max_associations >= 10


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('dicom_port = 104\nae_title = "FILEAE"\nhttp_port = 9000\n')

    settings = load_settings(
        config,
        environ={"APPLIANCE_AE_TITLE": "ENVAE", "APPLIANCE_HTTP_PORT": "9001"},
        overrides={"http_port": 9002},
    )

    assert settings.dicom_port == 104
    assert settings.ae_title == "ENVAE"
    assert settings.http_port == 9002


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\n')

    settings = load_settings(environ={"APPLIANCE_CONFIG": str(config)})

    assert settings.data_dir == tmp_path / "d"


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"APPLIANCE_DICOM_PORT": "eleven"}, "APPLIANCE_DICOM_PORT"),
        ({"APPLIANCE_DICOM_PORT": "70000"}, "APPLIANCE_DICOM_PORT"),
        ({"APPLIANCE_HTTP_PORT": "0"}, "APPLIANCE_HTTP_PORT"),
        ({"APPLIANCE_AE_TITLE": "A" * 17}, "APPLIANCE_AE_TITLE"),
        ({"APPLIANCE_AE_TITLE": "BAD\\AE"}, "APPLIANCE_AE_TITLE"),
        ({"APPLIANCE_AE_TITLE": "   "}, "APPLIANCE_AE_TITLE"),
        ({"APPLIANCE_DATA_DIR": ""}, "APPLIANCE_DATA_DIR"),
        ({"APPLIANCE_LOG_LEVEL": "LOUD"}, "APPLIANCE_LOG_LEVEL"),
    ],
)
def test_bad_environment_value_names_the_key(environ: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)

    assert str(caught.value).startswith(f"{key}: ")
    assert "\n" not in str(caught.value)


def test_bad_file_value_and_unknown_key_name_the_key(tmp_path: Path) -> None:
    bad_value = tmp_path / "bad.toml"
    bad_value.write_text('dicom_port = "x"\n')
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("dicom_prot = 104\n")

    with pytest.raises(ConfigError, match=r"^dicom_port \(in .*bad.toml\): "):
        load_settings(bad_value, environ={})
    with pytest.raises(ConfigError, match=r"^dicom_prot: unknown setting"):
        load_settings(unknown, environ={})


def test_every_setting_has_help_and_a_valid_default() -> None:
    for name, default, help_text in describe_settings():
        assert help_text, name
        assert load_settings(environ={}, overrides={name: default})

    assert Settings() == load_settings(environ={})


def test_cli_prints_one_line_naming_the_bad_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "appliance"), "config"],
        env={"APPLIANCE_DICOM_PORT": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("appliance: APPLIANCE_DICOM_PORT: ")
