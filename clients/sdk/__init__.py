"""The Python SDK of ClearPath Realtime: an asyncio client of the core.

::

    from clients.sdk import Client, Gap

    async with Client("localhost:50051") as client:
        await client.publish({"type": "package_update",
                              "data": {"package_id": "p1", "status": "in_transit"}})
        async with client.subscribe(["package_updates", "anomalies"]) as sub:
            async for item in sub:
                if isinstance(item, Gap):
                    ...  # events were lost; reconcile
                else:
                    print(item.package_update.status)

Everything public is listed in ``__all__``; the modules starting with ``_``
are private. Payload messages (``PackageUpdate``…) are in
``clearpath.realtime.v1.events_pb2``.
"""

from __future__ import annotations

from clearpath.realtime.v1.events_pb2 import Event, StreamPosition
from clearpath.realtime.v1.service_pb2 import PublishResult, SubscriptionFilter
from clients.sdk._client import DEFAULT_TARGET, Client, Subscription
from clients.sdk._errors import (
    AuthenticationError,
    ClearPathError,
    DeadlineExceededError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcError,
    UnavailableError,
)
from clients.sdk._resume import Gap, GapReason
from core.backoff import Backoff

__all__ = [
    "DEFAULT_TARGET",
    "AuthenticationError",
    "Backoff",
    "ClearPathError",
    "Client",
    "DeadlineExceededError",
    "Event",
    "Gap",
    "GapReason",
    "InvalidArgumentError",
    "PermissionDeniedError",
    "PublishResult",
    "ResourceExhaustedError",
    "RpcError",
    "StreamPosition",
    "Subscription",
    "SubscriptionFilter",
    "UnavailableError",
]
