"""MQTT sessions the repair step opens or re-frames: the CONNECT added to a session opened
without one carries its class's login, and a PUBLISH running on past a repaired segment start
keeps its header (split from test_conform.py; helpers shared with it)."""

from __future__ import annotations

import pytest
from test_conform import CONNECT, PLAN, login_connect, mqtt_flow

from pytrafgen.build import build_frames
from pytrafgen.conform.mqtt import MQTT_CONNECT
from pytrafgen.plugins import get_registry
from pytrafgen.records import FieldRecords


def _with_other_class(records: FieldRecords, name: str) -> FieldRecords:
    return FieldRecords(records.packets, records.flows, records.blob, [name])


def test_an_added_connect_carries_the_login_its_class_uses_most() -> None:
    """A client session opened without CONNECT gets the login (username, password) the
    well-formed CONNECTs of its class's sessions carry most, in an empty-client-id CONNECT (a
    broker that requires a login refuses the anonymous one); a class whose CONNECTs carry no
    login, or another class's login, leaves it anonymous."""
    from pytrafgen.conform.mqtt import connect_with_login

    parse = get_registry().protocols["mqtt"].parse
    pub = bytes([0x30, 5, 0, 1]) + b"t" + b"xy"
    logged_in = [mqtt_flow([(0, login_connect(b"iot", b"pw", cid))]) for cid in (b"a", b"b")]
    odd = mqtt_flow([(0, login_connect(b"guest", b"x"))])
    bare = mqtt_flow([(0, pub)])
    built = build_frames(FieldRecords.concat([*logged_in, odd, bare]), PLAN, seed=0, conform=True,
                         protocols=get_registry().protocols)
    assert built.repairs["mqtt_connect_added"] == 1
    table = built.to_table()
    added = [i for i in range(len(table)) if built.frame(i).endswith(pub)]
    assert len(added) == 1
    expected = connect_with_login(b"iot", b"pw")
    assert built.frame(added[0]).endswith(expected + pub)
    (m,) = parse(expected, 0)
    assert (m["type_name"], m["complete"], m["client_id"], m["username"], m["password"]) == \
        ("CONNECT", True, "", "iot", b"pw") and "malformed" not in m
    assert parse(connect_with_login(b"u", None), 0)[0]["password_flag"] == 0
    # the login of another class, or no login in the class: the anonymous CONNECT
    other = FieldRecords.concat([_with_other_class(logged_in[0], "other"), bare])
    built = build_frames(other, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    assert any(built.frame(i).endswith(MQTT_CONNECT + pub) for i in range(len(built.to_table())))


def test_an_added_connect_keeps_a_login_that_is_not_utf8() -> None:
    """A generated CONNECT's username need not be valid UTF-8 (the parser decodes it with
    surrogateescape): its bytes are carried into the added CONNECT as they were, no crash."""
    parse = get_registry().protocols["mqtt"].parse
    pub = bytes([0x30, 5, 0, 1]) + b"t" + b"xy"
    user = b"i\xff\xfeot"
    built = build_frames(FieldRecords.concat([mqtt_flow([(0, login_connect(user, b"pw"))]), mqtt_flow([(0, pub)])]),
                         PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    table = built.to_table()
    (at,) = [i for i in range(len(table)) if built.frame(i).endswith(pub)]
    frame = built.frame(at)
    connect = frame[len(frame) - int(table.payload_len[at]):]
    assert parse(connect, 0)[0]["username"].encode("utf-8", errors="surrogateescape") == user


@pytest.mark.parametrize("opening", [
    bytes([0x40, 2, 0, 9]),  # a PUBACK that answers no PUBLISH of the broker: covered
    CONNECT,  # a second CONNECT: a PINGREQ
])
def test_a_publish_running_on_is_kept_when_its_segment_is_repaired(opening: bytes) -> None:
    """A segment whose start is repaired (an unanswerable acknowledgement covered, a repeated
    CONNECT sent as a PINGREQ) keeps the PUBLISH that starts in it and runs on into the next
    segment: the next segment's bytes are that PUBLISH's body, and the client stream parses as
    whole, well-formed packets to its end (AR's publish flood lost 160 segments to a PUBLISH
    header dropped so: mosquitto read its body as packets)."""
    parse = get_registry().protocols["mqtt"].parse
    publish = bytes([0x30, 30, 0, 3]) + b"a/b" + b"p" * 25
    last = bytes([0x30, 7, 0, 1]) + b"t" + b"last"
    records = mqtt_flow([(0, CONNECT), (1, bytes([0x20, 2, 0, 0])), (0, opening + publish[:12]),
                         (0, publish[12:] + last)])
    built = build_frames(records, PLAN, seed=0, conform=True, protocols=get_registry().protocols)
    table = built.to_table()
    client = b"".join(built.frame(i)[len(built.frame(i)) - int(table.payload_len[i]):]
                      for i in range(len(table)) if int(table.dport[i]) == 1883 and int(table.payload_len[i]))
    msgs = parse(client, 0)
    assert all(m["complete"] and "malformed" not in m for m in msgs), msgs
    assert sum(m["length"] for m in msgs) == len(client) and client.endswith(publish + last)
    assert [m["type_name"] for m in msgs][-2:] == ["PUBLISH", "PUBLISH"]
