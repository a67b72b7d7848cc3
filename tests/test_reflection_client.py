"""A generic gRPC client that knows nothing but reflection can publish and subscribe.

This is what grpcurl does; the README shows both.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from core.server import SERVICE_NAME, CoreNode


def _generic_calls(address: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName(SERVICE_NAME)
        publish, subscribe = (
            service.methods_by_name["Publish"],
            service.methods_by_name["Subscribe"],
        )
        classes = {
            m.full_name: message_factory.GetMessageClass(m)
            for m in (
                publish.input_type,
                publish.output_type,
                subscribe.input_type,
                subscribe.output_type,
            )
        }

        def call(method: Any, kind: str) -> tuple[Any, Any]:
            path = f"/{SERVICE_NAME}/{method.name}"
            request_class = classes[method.input_type.full_name]
            response_class = classes[method.output_type.full_name]
            factory = channel.unary_unary if kind == "unary" else channel.unary_stream
            return factory(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            ), request_class

        sub_call, sub_request = call(subscribe, "stream")
        stream = sub_call(json_format.ParseDict({"topics": ["TOPIC_ANOMALIES"]}, sub_request()))
        first = json_format.MessageToDict(next(stream), preserving_proto_field_name=True)
        pub_call, pub_request = call(publish, "unary")
        request = json_format.ParseDict(
            {
                "events": [
                    {
                        "anomaly_detected": {
                            "package_id": "pkg-1",
                            "anomaly_type": "ANOMALY_TYPE_DELAYED_DELIVERY",
                            "severity": "SEVERITY_HIGH",
                            "confidence_score": 0.87,
                        }
                    }
                ]
            },
            pub_request(),
        )
        reply = json_format.MessageToDict(
            pub_call(request, timeout=10), preserving_proto_field_name=True
        )
        got = [first, json_format.MessageToDict(next(stream), preserving_proto_field_name=True)]
        stream.cancel()
        return reply, got


async def test_publish_and_subscribe_through_reflection_only(core: CoreNode) -> None:
    reply, got = await asyncio.wait_for(asyncio.to_thread(_generic_calls, core.address), 20)
    assert reply["results"][0]["topic"] == "TOPIC_ANOMALIES"
    assert "confirmed" in got[0]
    event = got[1]["event"]
    assert event["anomaly_detected"]["severity"] == "SEVERITY_HIGH"
    assert event["position"]["offset"] == "1"
