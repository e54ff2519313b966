"""`[web]` in cloud.toml: the dashboard's address beside the artifact server's."""

from __future__ import annotations

import pytest

from cloud.config import CloudConfigInvalid, parse_cloud_config


def test_defaults_put_the_dashboard_on_8080_and_artifacts_on_8081() -> None:
    config = parse_cloud_config("")
    assert (config.web.host, config.web.port, config.web.enabled) == ("127.0.0.1", 8080, True)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8081)


def test_listen_is_host_and_port() -> None:
    config = parse_cloud_config('[web]\nlisten = "[::1]:9443"\nsession_max_age_s = 600\n')
    assert (config.web.host, config.web.port, config.web.session_max_age_s) == ("::1", 9443, 600)


def test_each_mistake_is_one_line() -> None:
    with pytest.raises(CloudConfigInvalid) as e:
        parse_cloud_config('[web]\nlisten = "8080"\nlogin_failures_max = 0\ncolour = "x"\n')
    assert len(e.value.problems) == 3
    assert any("'8080' is not HOST:PORT" in p for p in e.value.problems)
    with pytest.raises(CloudConfigInvalid) as e:
        parse_cloud_config("[http]\nport = 8080\n")  # the old artifact default, now the web's
    assert e.value.problems == [
        "cloud.toml: web.listen: 127.0.0.1:8080 is also [http]'s "
        "address (the artifact server): give one of them another port"
    ]
    # control: with the dashboard off, or elsewhere, the same [http] is fine
    assert parse_cloud_config("[http]\nport = 8080\n[web]\nenabled = false\n").http.port == 8080
    assert parse_cloud_config('[http]\nport = 8080\n[web]\nlisten = "127.0.0.1:9000"\n')
