"""Switchboard's realtime messaging service over gRPC (grpc.aio).

``python -m services`` runs it; ``services.server.build_server`` assembles it;
``services.testing.running_server`` starts one on 127.0.0.1:0 for tests. The
servicers (``rooms``, ``chat``, ``presence``) translate protos to calls of the
engine (``services.engine``) and map its errors to gRPC statuses in ``errors``.
"""
