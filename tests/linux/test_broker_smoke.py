"""The broker fixture is a real Mosquitto: messages flow, auth and ACL bite, restarts work."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from lab.broker import Broker


def _client(b: Broker, user: str | None = None, cid: str = "") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    if user:
        c.username_pw_set(user, b.users[user])
    return c


def _connect(c: mqtt.Client, b: Broker) -> ReasonCode:
    done = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(client, userdata, flags, rc, props):
        result.append(rc)
        done.set()

    c.on_connect = on_connect
    c.connect(b.host, b.port)
    c.loop_start()
    assert done.wait(5), "no CONNACK from broker"
    return result[0]


def _roundtrip(
    b: Broker, pub_user: str | None, sub_user: str | None, topic: str
) -> list[bytes | bytearray]:
    got: list[bytes | bytearray] = []
    arrived = threading.Event()
    sub = _client(b, sub_user)

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        arrived.set()

    sub.on_message = on_message
    assert not _connect(sub, b).is_failure
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    pub = _client(b, pub_user)
    assert not _connect(pub, b).is_failure
    pub.publish(topic, b"hello", qos=1).wait_for_publish(5)
    arrived.wait(2)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return got


def test_message_flows_between_two_paho_clients(broker: Broker) -> None:
    assert _roundtrip(broker, None, None, "relais/test") == [b"hello"]


def test_wrong_password_is_refused(broker: Broker) -> None:
    broker.add_user("hub-a", "secret-a")
    broker.restart()
    c = _client(broker)
    c.username_pw_set("hub-a", "wrong")
    assert _connect(c, broker).is_failure
    c.loop_stop()


def test_acl_confines_a_hub_to_its_own_topics(broker: Broker) -> None:
    broker.add_user("hub-a", "secret-a")
    broker.add_user("central", "secret-c")
    broker.set_acl("user central\ntopic readwrite relais/#\n\npattern readwrite relais/hubs/%u/#\n")
    broker.restart()
    assert _roundtrip(broker, "hub-a", "central", "relais/hubs/hub-a/health") == [b"hello"]
    assert _roundtrip(broker, "hub-a", "central", "relais/hubs/hub-b/health") == []


def test_broker_restart_keeps_port_and_queued_messages(broker: Broker) -> None:
    # A persistent session's QoS 1 messages survive a broker restart (store-and-forward).
    got: list[bytes | bytearray] = []
    sub2 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durable-sub", clean_session=False)
    sub2.on_message = lambda c, u, m: got.append(m.payload)
    assert not _connect(sub2, broker).is_failure
    ok = threading.Event()
    sub2.on_subscribe = lambda *a: ok.set()
    sub2.subscribe("relais/q", qos=1)
    assert ok.wait(5)
    sub2.disconnect()
    sub2.loop_stop()

    pub = _client(broker)
    assert not _connect(pub, broker).is_failure
    pub.publish("relais/q", b"queued", qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()

    port = broker.port
    broker.restart()
    assert broker.port == port
    sub3 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durable-sub", clean_session=False)
    arrived = threading.Event()

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        arrived.set()

    sub3.on_message = on_message
    assert not _connect(sub3, broker).is_failure
    assert arrived.wait(5), "queued message lost across broker restart"
    assert got == [b"queued"]
    sub3.disconnect()
    sub3.loop_stop()


def test_stopped_broker_refuses_connections(broker: Broker) -> None:
    broker.stop()
    c = _client(broker)
    with pytest.raises(ConnectionRefusedError):
        c.connect(broker.host, broker.port)
    broker.start()
    assert _roundtrip(broker, None, None, "relais/after") == [b"hello"]
