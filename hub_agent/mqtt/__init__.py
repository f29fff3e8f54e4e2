"""The one wrapper around paho-mqtt. Nothing else in Relais imports paho.

- ``core``: the error types, the broker URL, the reconnect policy, and the one place a
  paho client is built (MQTT 5, credentials, TLS, in-flight window, TCP_NODELAY).
- ``link``: the hub's face: one asyncio-friendly link that reconnects by itself, with a
  Last Will, a persistent session and PUBACKs as futures (telemetry, configsync).
- ``client``: the blocking face for one-shot commands (``hubctl push|remove``, the
  simulator): connect, subscribe, publish and wait, with timeouts.
- ``pumped``: the controller's face: no paho thread, the owner pumps the socket and acks
  each message only once it is committed.

Submodules are imported explicitly (``from hub_agent.mqtt.core import BrokerUrl``): this
package's ``__init__`` stays empty so ``hub_agent.config`` can use ``core`` without a cycle.
"""
