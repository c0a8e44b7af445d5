from faust.serializers import codecs

from schemas.codec import CODEC_NAME, register
from schemas.events import PainReported, validate_event


def test_faust_codec_round_trips_a_contract_event() -> None:
    register()
    codec = codecs.get_codec(CODEC_NAME)
    event = validate_event(
        {
            "event_id": "e-1",
            "schema_version": 1,
            "type": "pain.reported",
            "patient_id": "p-1",
            "occurred_at": "2026-11-03T23:30:00-05:00",
            "score": 7,
        }
    )
    assert isinstance(event, PainReported)
    again = codec.loads(codec.dumps(event))
    assert again == event and again.local_date.isoformat() == "2026-11-03"
