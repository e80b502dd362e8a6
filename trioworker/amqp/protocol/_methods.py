"""The method ids the core dispatches on, named.

On the wire a method frame's payload starts with the class id and the method id, two
shorts (AMQP 0-9-1 section 2.3.5.1); read as one big-endian long they give
``(class_id << 16) | method_id``, which is also pamqp's ``Frame.index``. The parse loop
reads that long once per method frame and compares it against these constants (the hot
frames are recognised before pamqp is asked to decode anything), and the state tables in
:mod:`._state` are keyed by them. ``tests/amqp/protocol/test_frames.py`` checks every
value against pamqp's.
"""

from __future__ import annotations

#: Content header class id of the ``basic`` class: the only content-bearing class in 0-9-1.
BASIC_CLASS = 60

# Connection class (10): the handshake, flow control by the broker, the close handshake.
CONNECTION_START = 0x000A000A
CONNECTION_SECURE = 0x000A0014
CONNECTION_TUNE = 0x000A001E
CONNECTION_OPEN_OK = 0x000A0029
CONNECTION_CLOSE = 0x000A0032
CONNECTION_CLOSE_OK = 0x000A0033
CONNECTION_BLOCKED = 0x000A003C
CONNECTION_UNBLOCKED = 0x000A003D

# Channel class (20).
CHANNEL_OPEN_OK = 0x0014000B
CHANNEL_FLOW = 0x00140014
CHANNEL_CLOSE = 0x00140028
CHANNEL_CLOSE_OK = 0x00140029

# Basic class (60).
BASIC_CANCEL = 0x003C001E
BASIC_PUBLISH = 0x003C0028
BASIC_RETURN = 0x003C0032
BASIC_DELIVER = 0x003C003C
BASIC_GET_OK = 0x003C0047
BASIC_ACK = 0x003C0050
BASIC_REJECT = 0x003C005A
BASIC_NACK = 0x003C0078

# Confirm class (85, a RabbitMQ extension).
CONFIRM_SELECT_OK = 0x0055000B
