"""Configuration layering: defaults < TOML file < PASSEL_* environment < flags."""

from pathlib import Path

import pytest

from appliance.config import SETTINGS, ConfigError, load_config


def test_defaults():
    config = load_config(environ={})
    assert config.port == 3000 and config.discovery is True and config.node == ()


def test_each_layer_overrides_the_one_below(tmp_path: Path):
    file = tmp_path / "passel.toml"
    file.write_text('port = 4000\ntoken = "from-file"\nlog_level = "debug"\nnode = ["http://a:3001"]\n')
    env = {"PASSEL_TOKEN": "from-env", "PASSEL_LOG_LEVEL": "warning"}
    config = load_config(file, environ=env, flags={"log_level": "error"})
    assert (config.port, config.token, config.log_level, config.node) == (4000, "from-env", "error", ("http://a:3001",))
    assert config.sources == {"port": str(file), "token": "PASSEL_TOKEN", "log_level": "--log-level",
                              "node": str(file)}


def test_environment_lists_and_booleans():
    config = load_config(environ={"PASSEL_NODE": "http://a:1, http://b:2", "PASSEL_DISCOVERY": "off"})
    assert config.node == ("http://a:1", "http://b:2") and config.discovery is False


def test_config_file_from_environment(tmp_path: Path):
    file = tmp_path / "x.toml"
    file.write_text("port = 3100\n")
    assert load_config(environ={"PASSEL_CONFIG": str(file)}).port == 3100


@pytest.mark.parametrize("text, message", [
    ("port = 'abc'\n", "port"), ("bogus = 1\n", "unknown setting"), ("port = [\n", "config file"),
    ("port = 70000\n", "outside"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(file, environ={})


def test_bad_environment_value():
    with pytest.raises(ConfigError, match="PASSEL_PORT"):
        load_config(environ={"PASSEL_PORT": "many"})


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/passel.toml", environ={})


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [s.env for s in SETTINGS if s.env not in readme or s.flag not in readme]
    assert not missing, f"README does not document {missing}"
