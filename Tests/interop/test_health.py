"""grpc.health.v1.Health with grpcio's stock health stubs."""

import grpc
import pytest
from grpc_health.v1 import health_pb2

import support


def test_overall_health_is_serving(server):
    with support.channel(server.port) as ch:
        resp = support.health_check(ch, "")
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_unknown_service_is_not_found(server):
    with support.channel(server.port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            support.health_check(ch, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value


def test_health_over_raw_h2_with_grpc_proto_content_type(server):
    """`application/grpc+proto` is a gRPC content type too; Trailers carry grpc-status 0."""
    body = support.grpc_message(health_pb2.HealthCheckRequest(service="").SerializeToString())
    with support.H2Client(server.port) as c:
        st = c.wait(c.request("/grpc.health.v1.Health/Check", body,
                              content_type="application/grpc+proto"))
    assert st.http_status == 200, st.describe()
    assert st.grpc_status == 0, st.describe()
    assert st.headers.get(b"content-type", b"").startswith(b"application/grpc"), st.describe()
    assert st.data[:1] == b"\x00" and len(st.data) >= 5, st.describe()
    n = int.from_bytes(st.data[1:5], "big")
    resp = health_pb2.HealthCheckResponse.FromString(st.data[5:5 + n])
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
