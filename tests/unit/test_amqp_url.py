"""The one AMQP URL parser: kombu's reading of the vhost, for pika and kombu alike."""

from __future__ import annotations

import pytest
from kombu import Connection

from queues.amqp_url import AmqpAddress, parse_amqp_url
from queues.errors import ConfigError
from queues.settings import BrokerSettings

README_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        (README_URL, "/"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/", "/"),
        ("amqp://guest:guest@127.0.0.1:5672", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/infaas", "infaas"),
        ("amqp://guest:guest@127.0.0.1:5672/team%2Fa", "team/a"),
        ("amqp://guest:guest@127.0.0.1:5672/a/b", "a/b"),
    ],
)
def test_vhost_is_read_as_kombu_reads_it(url: str, vhost: str) -> None:
    address = parse_amqp_url(url)
    assert address.vhost == vhost
    assert Connection(url).virtual_host == vhost  # the rule we follow
    # every client gets that vhost: pika explicitly, kombu through the canonical URL
    assert address.pika_parameters(heartbeat_s=30).virtual_host == vhost
    assert Connection(address.url()).virtual_host == vhost
    assert parse_amqp_url(address.url()) == address


def test_the_readme_url_parses_to_the_default_vhost_everywhere() -> None:
    settings = BrokerSettings(broker_url=README_URL)
    assert settings.amqp() == AmqpAddress("127.0.0.1", 5672, "guest", "guest", "/")
    assert settings.url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.redacted_url() == "amqp://guest:***@127.0.0.1:5672/%2F"
    params = settings.amqp().pika_parameters(heartbeat_s=settings.broker_heartbeat_s)
    assert (params.host, params.port, params.virtual_host) == ("127.0.0.1", 5672, "/")
    assert params.heartbeat == 30
    assert not settings.embedded


def test_percent_encoded_credentials_are_decoded() -> None:
    address = parse_amqp_url("amqp://ops%40team:p%2Fss%3Aw%40rd@rabbit.local:5673/prod")
    assert (address.user, address.password) == ("ops@team", "p/ss:w@rd")
    assert (address.host, address.port, address.vhost) == ("rabbit.local", 5673, "prod")
    params = address.pika_parameters(heartbeat_s=0)
    assert params.credentials.username == "ops@team"
    assert params.credentials.password == "p/ss:w@rd"
    kombu = Connection(address.url())
    assert (kombu.userid, kombu.password, kombu.virtual_host) == ("ops@team", "p/ss:w@rd", "prod")
    redacted = BrokerSettings(broker_url=address.url()).redacted_url()
    assert "w%40rd" not in redacted
    assert redacted == "amqp://ops%40team:***@rabbit.local:5673/prod"


def test_defaults_port_credentials_and_tls() -> None:
    assert parse_amqp_url("amqp://rabbit") == AmqpAddress("rabbit", 5672, "guest", "guest", "/")
    assert parse_amqp_url("amqp://x@rabbit//").password == "guest"
    tls = parse_amqp_url("amqps://u:p@rabbit/v")
    assert (tls.port, tls.tls) == (5671, True)
    assert tls.pika_parameters(heartbeat_s=30).ssl_options is not None
    assert tls.url() == "amqps://u:p@rabbit:5671/v"
    ipv6 = parse_amqp_url("amqp://u:p@[::1]:5672//")
    assert ipv6.host == "::1"
    assert ipv6.url() == "amqp://u:p@[::1]:5672/%2F"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://guest:guest@127.0.0.1:5672//", "has scheme 'http'"),
        ("redis://127.0.0.1:6379/0", "has scheme 'redis'"),
        ("127.0.0.1:5672", "not amqp or amqps"),
        ("amqp://guest:guest@127.0.0.1:99999//", "not a number from 1 to 65535"),
        ("amqp://guest:guest@127.0.0.1:port//", "not a number from 1 to 65535"),
        ("amqp://guest:guest@127.0.0.1:0//", "port 0"),
        ("amqp:///infaas", "names no host"),
        ("amqp://guest:guest@127.0.0.1:5672//?heartbeat=10", "INFAAS_BROKER_HEARTBEAT_S"),
    ],
)
def test_bad_urls_are_refused_naming_the_setting_and_the_form(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        BrokerSettings(broker_url=url)
    message = refused.value.message
    assert message.startswith("INFAAS_BROKER_URL must be amqp://USER:PASSWORD@HOST:PORT/VHOST")
    assert words in message
    with pytest.raises(ConfigError):
        parse_amqp_url(url)


def test_a_refused_url_does_not_show_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_amqp_url("amqp://guest:s3cret@127.0.0.1:port//")
    assert "s3cret" not in refused.value.message
    assert "guest:***@" in refused.value.message


def test_the_embedded_transport_has_no_amqp_address() -> None:
    for settings in (BrokerSettings(broker_url=None), BrokerSettings(broker_url="memory://")):
        assert settings.embedded
        assert settings.url.startswith("memory://")
        with pytest.raises(ConfigError, match="INFAAS_BROKER_URL is unset or memory://"):
            settings.amqp()
