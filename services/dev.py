"""`make run`: the service and the gateway as two processes on 127.0.0.1.

Starts ``python -m services`` (gRPC, default 127.0.0.1:50051), waits until its
health check says SERVING, then starts ``python -m gateway`` in front of it
(HTTP, default 127.0.0.1:8080). SIGINT/SIGTERM are passed to both, the gateway
first; when either process exits the other is stopped too.

Both run with ``--dev-auth``: they accept tokens signed with the development secret
(``SWITCHBOARD_DEV_SECRET``, else a file generated once under ``$XDG_STATE_HOME/switchboard``),
and this launcher prints one ready-to-use token and the command that mints more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.auth import mint_dev_token

DEV_USER, DEV_ROLES, DEV_TTL = "alice", ("member",), 24 * 3600


async def _wait_serving(address: str, process: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while process.returncode is None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the service exited with status {process.returncode} before serving")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()


def dev_banner(grpc_listen: str, http_listen: str, token: str) -> str:
    """What ``make run`` prints once both processes run: addresses, a token, how to use it."""
    roles = ",".join(DEV_ROLES)
    return "\n".join(
        [
            f"switchboard: gRPC on {grpc_listen}, HTTP gateway on http://{http_listen}",
            "development auth is on (--dev-auth; never in production).",
            f"A token for {DEV_USER} (roles: {roles}, valid {DEV_TTL // 3600} h):",
            "",
            f"  export TOKEN={token}",
            "",
            f"  chat page:  http://{http_listen}/#token={token}",
            f"  API docs:   http://{http_listen}/docs",
            "",
            f'  curl -H "Authorization: Bearer $TOKEN" http://{http_listen}/v1/rooms',
            f'  grpcurl -plaintext -H "authorization: Bearer $TOKEN" {grpc_listen} '
            "switchboard.v1.RoomService/ListRooms",
            "",
            f"More tokens: .venv/bin/python -m services token --sub {DEV_USER} --roles {roles}"
            "  (roles: viewer, member, admin)",
        ]
    )


async def run(grpc_listen: str, http_listen: str) -> int:
    python = sys.executable
    service = await asyncio.create_subprocess_exec(
        python, "-m", "services", "serve", "--listen", grpc_listen, "--dev-auth"
    )
    await _wait_serving(grpc_listen, service)
    gateway = await asyncio.create_subprocess_exec(
        python, "-m", "gateway", "--backend", grpc_listen, "--listen", http_listen, "--dev-auth"
    )
    token = mint_dev_token(DEV_USER, DEV_ROLES, ttl=DEV_TTL)
    print(dev_banner(grpc_listen, http_listen, token), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    waits = [
        asyncio.ensure_future(stopping.wait()),
        asyncio.ensure_future(service.wait()),
        asyncio.ensure_future(gateway.wait()),
    ]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    await _stop(gateway)
    await _stop(service)
    for waiter in waits:
        waiter.cancel()
    return 0 if stopping.is_set() else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.dev", description=__doc__)
    parser.add_argument("--grpc", default=os.environ.get("SWITCHBOARD_LISTEN", "127.0.0.1:50051"))
    parser.add_argument(
        "--http", default=os.environ.get("SWITCHBOARD_GATEWAY_LISTEN", "127.0.0.1:8080")
    )
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.grpc, args.http)))


if __name__ == "__main__":
    main()
