#!/usr/bin/python3
"""Interop: a standard gRPC client that is not ours (Python's grpcio, stubs made by
protoc from our .proto) calls a real ember-server: Admin, Shard and Health.

usage: interop.py EMBER_SERVER PROTO_DIR

Exits 0 when every check holds, 1 with a message otherwise. Run by ctest
(label integration) with Debian's /usr/bin/python3 (python3-grpcio,
python3-protobuf, protobuf-compiler)."""

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unary(channel, method, request, response_type):
    call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_type.FromString)
    return call(request, timeout=10)


def expect(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def main():
    server_bin, proto_dir = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="ember_interop_")
    # Our generated package "grpc.health.v1" must not hide grpcio's own "grpc".
    gen = os.path.join(work, "gen")
    os.makedirs(gen)
    ember_pb2, health_pb2 = load_stubs(proto_dir, gen)

    port = free_port()
    log = open(os.path.join(work, "server.log"), "w")
    # the backend as harness.h chooses it: $EMBER_TEST_BACKEND, cpu when unset
    backend = os.environ.get("EMBER_TEST_BACKEND", "cpu")
    args = [server_bin, "--listen", "127.0.0.1:%d" % port, "--threads", "2"]
    if backend:
        args += ["--backend", backend]
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        deadline = time.time() + 20
        while True:
            try:
                r = unary(channel, "/grpc.health.v1.Health/Check",
                          health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.time() > deadline or server.poll() is not None:
                expect(False, "server became healthy")
            time.sleep(0.1)
        expect(True, "Health/Check answers SERVING")

        cfg = ember_pb2.TableConfig(dim=4, capacity=1024)
        cfg.optimizer.kind = ember_pb2.OPTIMIZER_SGD
        cfg.optimizer.lr = 0.5
        cfg.initializer.kind = ember_pb2.INIT_ZEROS
        unary(channel, "/ember.v1.Admin/CreateTable",
              ember_pb2.CreateTableRequest(name="interop", config=cfg),
              ember_pb2.CreateTableResponse)
        expect(True, "Admin/CreateTable")

        keys = struct.pack("<3Q", 1, 2, 3)
        grads = struct.pack("<12f", *([1.0] * 12))
        r = unary(channel, "/ember.v1.Shard/Push",
                  ember_pb2.PushRequest(table="interop", keys=keys, values=grads),
                  ember_pb2.PushResponse)
        expect(not r.duplicate, "Shard/Push applied")

        r = unary(channel, "/ember.v1.Shard/Pull",
                  ember_pb2.PullRequest(table="interop", keys=struct.pack("<3Q", 3, 1, 2),
                                        want_found=True),
                  ember_pb2.PullResponse)
        values = struct.unpack("<12f", r.values)
        expect(r.dim == 4 and values == tuple([-0.5] * 12),
               "Shard/Pull returns the pushed rows (SGD lr 0.5: 0 - 0.5*1)")
        expect(r.found == b"\x01\x01\x01", "Shard/Pull reports found keys")

        r = unary(channel, "/ember.v1.Admin/DescribeTable",
                  ember_pb2.DescribeTableRequest(name="interop"),
                  ember_pb2.DescribeTableResponse)
        expect(r.table.stats.size == 3 and r.table.config.dim == 4,
               "Admin/DescribeTable: 3 keys of dim 4")

        try:
            unary(channel, "/ember.v1.Shard/Pull",
                  ember_pb2.PullRequest(table="nope", keys=keys), ember_pb2.PullResponse)
            expect(False, "unknown table refused")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.NOT_FOUND and e.details(),
                   "unknown table: NOT_FOUND with a message (%s)" % e.details())

        try:
            unary(channel, "/ember.v1.Shard/Pull",
                  ember_pb2.PullRequest(table="interop", keys=b"\x01\x02\x03"),
                  ember_pb2.PullResponse)
            expect(False, "ragged keys refused")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                   "keys not a multiple of 8 bytes: INVALID_ARGUMENT (%s)" % e.details())
        channel.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            rc = None
        log.close()
    expect(rc == 0, "SIGTERM: the server exits 0")


def load_stubs(proto_dir, gen):
    # protoc writes gen/grpc/health/v1/health_pb2.py: a package "grpc" that would
    # shadow grpcio. Rename it on the way.
    protos = ["ember/v1/ember.proto", "grpc/health/v1/health.proto"]
    subprocess.run(["protoc", "-I", proto_dir, "--python_out", gen] + protos, check=True)
    os.rename(os.path.join(gen, "grpc"), os.path.join(gen, "grpc_health"))
    sys.path.insert(0, gen)
    from ember.v1 import ember_pb2
    from grpc_health.health.v1 import health_pb2
    return ember_pb2, health_pb2


if __name__ == "__main__":
    main()
