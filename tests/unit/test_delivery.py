"""The pure parts of webhook delivery: backoff capped by severity, queue order, URLs."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from click.testing import CliRunner

from agents.delivery import (
    RetryPolicy,
    redact_url,
    severity_rank,
    sign,
    signed_headers,
    validate_url,
)
from rtm.cli import main
from streams.settings import Settings

POLICY = RetryPolicy(
    backoff_s=0.5, max_attempts=5, retry_interval_s=60.0, caps=(60.0, 300.0, 900.0, 3600.0)
)


def test_defaults_bound_a_critical_alert_to_a_minute() -> None:
    p = RetryPolicy.from_settings(Settings())
    assert p.cap(severity_rank("critical")) <= 60.0
    assert p.caps == tuple(sorted(p.caps)), "less urgent never retried more eagerly"
    # However long the receiver has been down, a critical delivery waits at most its cap.
    assert max(p.endpoint_delay(f, 0) for f in range(1, 200)) == p.cap(0)
    assert max(p.delivery_delay(a, 0) for a in range(1, 200)) == p.cap(0)


def test_endpoint_backoff_doubles_up_to_the_cap_of_the_most_urgent_waiting() -> None:
    assert POLICY.endpoint_delay(0, 0) == 0.0  # healthy: no wait
    assert [POLICY.endpoint_delay(f, 3) for f in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    # after many failures each severity sits at its own cap
    assert POLICY.endpoint_delays(40) == (60.0, 300.0, 900.0, 3600.0)
    # 10 failures: 256 s for a low head, but a critical head makes it 60 s
    assert POLICY.endpoint_delay(10, 3) == 256.0
    assert POLICY.endpoint_delay(10, 0) == 60.0
    assert POLICY.endpoint_delay(10**6, 2) == 900.0  # no overflow


def test_a_delivery_keeps_its_place_until_its_quick_attempts_are_used_up() -> None:
    # within the quick attempts the endpoint's backoff paces it (no own delay)
    assert [POLICY.delivery_delay(a, 0) for a in range(1, 5)] == [0.0] * 4
    assert not POLICY.exhausted(4) and POLICY.exhausted(5)
    # then out of the way: at least the retry interval, growing, at most the cap
    assert POLICY.delivery_delay(5, 3) == 60.0
    assert POLICY.delivery_delay(9, 3) == 128.0
    assert POLICY.delivery_delay(9, 0) == 60.0
    assert POLICY.delivery_delay(30, 1) == 300.0


def test_a_cap_below_the_retry_interval_wins() -> None:
    p = RetryPolicy(
        backoff_s=0.1, max_attempts=3, retry_interval_s=3600.0, caps=(5.0, 30.0, 30.0, 30.0)
    )
    assert p.delivery_delay(3, 0) == 5.0
    assert p.delivery_delay(3, 2) == 30.0


def test_queue_order_is_severity_then_age() -> None:
    queued = [
        ("low", 1),
        ("critical", 4),
        ("medium", 2),
        ("critical", 3),
        ("high", 5),
        ("bogus", 0),
    ]
    order = sorted(queued, key=lambda d: (severity_rank(d[0]), d[1]))
    assert order == [
        ("critical", 3),
        ("critical", 4),
        ("high", 5),
        ("medium", 2),
        ("bogus", 0),
        ("low", 1),
    ]
    assert [severity_rank(s) for s in ("critical", "high", "medium", "low")] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://hooks.example.org/rtm?token=abc",
        "https://[::1]:9000/x",
        "HTTPS://Example.COM",
        "http://localhost",
    ],
)
def test_valid_urls(url: str) -> None:
    assert validate_url(url) == url


@pytest.mark.parametrize(
    "url, why",
    [
        ("not-a-url", "http:// or https://"),
        ("ftp://example.org/x", "http:// or https://"),
        ("http://", "no host"),
        ("https:///path", "no host"),
        ("http://exa mple.org", "without spaces"),
        (" http://example.org", "without spaces"),
        ("http://example.org:99999/", "not a valid URL"),
        ("http://user:pw@example.org/", "credentials"),
        ("http://exa_mple.org/", "invalid host"),
        ("", "absolute"),
    ],
)
def test_invalid_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        validate_url(url)


def test_cli_refuses_a_bad_url_before_touching_the_database() -> None:
    # RTM_PG_PORT=1: had the command tried to connect, it would fail differently
    result = CliRunner().invoke(
        main,
        ["alerts", "webhook", "--clinician-id", "c1", "--url", "not-a-url", "--secret", "s"],
        env={"RTM_PG_PORT": "1"},
    )
    assert result.exit_code == 2, result.output
    assert "--url" in result.output and "http:// or https://" in result.output


def test_cli_options_that_do_not_go_together() -> None:
    runner = CliRunner()
    for args, msg in [
        (["--clinician-id", "c1", "--url", "http://x.org"], "--secret"),
        (["--url", "http://x.org", "--secret", "s"], "--clinician-id"),
        (["--list", "--clinician-id", "c1"], "--list takes only --org"),
        (["--clinician-id", "c1", "--remove", "--test"], "--remove takes only"),
    ]:
        result = runner.invoke(main, ["alerts", "webhook", *args], env={"RTM_PG_PORT": "1"})
        assert result.exit_code == 2 and msg in result.output, (args, result.output)


def test_signature_and_headers() -> None:
    body = b'{"change":"fired"}'
    headers = signed_headers("s3cret", body, "a1:fired")
    mac = hmac.new(
        b"s3cret", headers["X-RTM-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert (
        headers["X-RTM-Signature"]
        == "sha256=" + mac
        == sign("s3cret", headers["X-RTM-Timestamp"], body)
    )
    assert headers["Idempotency-Key"] == "a1:fired"


def test_listings_hide_query_tokens() -> None:
    assert redact_url("https://h.example/p?token=abc#x") == "https://h.example/p?…"
    assert redact_url("http://h:1/p") == "http://h:1/p"
