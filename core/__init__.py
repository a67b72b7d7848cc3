"""ClearPath Realtime core: the gRPC service, the hub and the brokers.

Data flows one way: ``Publish`` → broker (ordering, history, cross-node
delivery) → hub (local subscribers, filters, bounded queues) → transport.
"""
