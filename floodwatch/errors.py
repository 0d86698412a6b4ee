"""One small hierarchy of named errors; library errors are converted where they enter our code."""

from __future__ import annotations


class FloodwatchError(Exception):
    """Base of every error floodwatch raises on purpose."""


class ConfigError(FloodwatchError):
    """A config file is missing, unreadable, or has an unknown key or a bad value."""


class BusError(FloodwatchError):
    """A ZeroMQ socket could not be bound, connected or used."""


class PeersAbsent(BusError):
    """An actor started standalone found no supervisor (or peers) on its endpoints."""


class MessageDecodeError(FloodwatchError):
    """Bytes from the bus are not a valid message of this schema version."""


class CaptureError(FloodwatchError):
    """A capture source could not be opened or read (bad file, no interface, no permission)."""


class CommandRejected(FloodwatchError):
    """A mitigation command failed validation; the message is the reason."""


class StorageError(FloodwatchError):
    """A database or file store could not be read or written."""


class BadDatagram(FloodwatchError):
    """A flow export datagram (sFlow, NetFlow, IPFIX) that cannot be decoded: counted and dropped."""
