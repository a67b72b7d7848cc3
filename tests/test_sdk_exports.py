"""The SDK's public surface is deliberate: this pins it."""

from __future__ import annotations

import clients.sdk

EXPECTED = {
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
}


def test_exported_members_are_pinned() -> None:
    assert set(clients.sdk.__all__) == EXPECTED
    assert len(clients.sdk.__all__) == len(EXPECTED)


def test_every_exported_member_exists() -> None:
    for name in clients.sdk.__all__:
        assert getattr(clients.sdk, name) is not None


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(clients.sdk, name)
        for name in clients.sdk.__all__
        if name.endswith("Error") and name != "ClearPathError"
    ]
    assert errors
    assert all(issubclass(error, clients.sdk.ClearPathError) for error in errors)
