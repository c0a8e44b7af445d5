"""The signed webhook receiver `rtm chaos` and the delivery tests share
(rtm/bench/receiver.py): it answers by its mode, records every request, and tells
well-signed deliveries (as agents.delivery signs them) from the others."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from agents.delivery import signed_headers
from rtm.bench.receiver import Receiver


def _post(url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(trust_env=False) as client:  # loopback, whatever proxy is set
        return client.post(url, content=content, headers=headers)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(secret="s3cret")
    yield r
    r.close()


def test_keeps_the_keys_of_well_signed_deliveries_and_counts_the_others(
    receiver: Receiver,
) -> None:
    body = json.dumps({"change": "fired"}).encode()
    good = _post(receiver.url, content=body, headers=signed_headers("s3cret", body, "a:1"))
    wrong_secret = _post(receiver.url, content=body, headers=signed_headers("other", body, "a:2"))
    headers = signed_headers("s3cret", body, "a:3")
    tampered = _post(receiver.url, content=body + b" ", headers=headers)
    unsigned = _post(receiver.url, content=body, headers={"Idempotency-Key": "a:4"})
    assert [r.status_code for r in (good, wrong_secret, tampered, unsigned)] == [200] * 4
    assert receiver.signed == {"a:1"}
    assert receiver.bad_signatures == 3
    assert receiver.keys() == ["a:1", "a:2", "a:3", "a:4"]


def test_answers_by_its_mode_and_delivered_lists_the_200s(receiver: Receiver) -> None:
    def post(n: int) -> int:
        body = json.dumps({"n": n}).encode()
        headers = signed_headers("s3cret", body, f"k{n}")
        return _post(receiver.url, content=body, headers=headers).status_code

    assert post(1) == 200
    receiver.mode = "fail"
    assert post(2) == 500
    receiver.mode = "ok"
    assert post(3) == 200
    assert [payload["n"] for _, payload in receiver.delivered()] == [1, 3]
    assert [r.mode for r in receiver.requests] == ["ok", "fail", "ok"]
    assert [r.signed for r in receiver.requests] == [True, True, True]
    arrivals = [r.at for r in receiver.requests]
    assert arrivals == sorted(arrivals)
    walls = [r.wall for r in receiver.requests]  # the wall clock, to compare with received_at
    assert walls == sorted(walls) and walls[-1] - walls[0] < 60
    assert receiver.signed == {"k1", "k2", "k3"}  # a 500 is still a well-signed request


def test_without_a_secret_nothing_is_checked() -> None:
    r = Receiver()
    try:
        assert _post(r.url, content=b"{}", headers={"Idempotency-Key": "x"}).status_code == 200
        assert r.signed == set() and r.bad_signatures == 0 and r.keys() == ["x"]
        assert r.url == f"http://127.0.0.1:{r.port}/hook"
    finally:
        r.close()
