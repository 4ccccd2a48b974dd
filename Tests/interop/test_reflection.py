"""Server reflection through grpcio-reflection's stock v1alpha client, and v1 on the same wire.

The v1 and v1alpha messages are identical on the wire, so the v1 checks reuse the stock
v1alpha message classes on the /grpc.reflection.v1.ServerReflection/ServerReflectionInfo path.
"""

import queue

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import support

EXPECTED_SERVICES = {"pixtrack.v1.PaymentService", "pixtrack.v1.TrackingService"}
V1_PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_PATH = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def reflection_call(ch, path, requests, timeout=5):
    call = ch.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=timeout))


def test_list_services_v1alpha(server):
    with support.channel(server.port) as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert EXPECTED_SERVICES <= services, services
    assert "grpc.health.v1.Health" in services, services


def test_test_service_is_listed_when_enabled(server):
    with support.channel(server.port) as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert "pixtrack.testing.v1.TestService" in services, services


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES))
def test_describe_service_methods_and_input_types(server, service):
    """file_containing_symbol for the service and one of its methods; resolve the input type."""
    with support.channel(server.port) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        pool = descriptor_pool.DescriptorPool(db)
        svc = pool.FindServiceByName(service)
        assert svc.methods, f"{service} has no methods"
        method = svc.methods[0]
        # A fresh database, so the method symbol really goes to the server.
        fd = ProtoReflectionDescriptorDatabase(ch).FindFileContainingSymbol(method.full_name)
        assert fd.name == svc.file.name
        input_type = pool.FindMessageTypeByName(method.input_type.full_name)
        assert input_type.full_name == method.input_type.full_name


def test_describe_echo_input_type(server):
    with support.channel(server.port) as ch:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
        method = pool.FindServiceByName("pixtrack.testing.v1.TestService").methods_by_name["Echo"]
        fields = {f.name: f.number for f in method.input_type.fields}
    assert method.input_type.full_name == "pixtrack.testing.v1.EchoRequest"
    assert fields == {"text": 1, "payload": 2, "fail_code": 3, "fail_message": 4}
    assert method.output_type.full_name == "pixtrack.testing.v1.EchoResponse"


def test_file_containing_message_symbol_and_file_by_filename(server):
    with support.channel(server.port) as ch:
        fd = ProtoReflectionDescriptorDatabase(ch).FindFileContainingSymbol(
            "pixtrack.testing.v1.SleepRequest")
        assert fd.package == "pixtrack.testing.v1"
        assert "SleepRequest" in [m.name for m in fd.message_type]
        # file_by_filename with the name the server gave, on a database with an empty cache.
        again = ProtoReflectionDescriptorDatabase(ch).FindFileByName(fd.name)
    assert again.name == fd.name
    assert [m.name for m in again.message_type] == [m.name for m in fd.message_type]


def test_unknown_symbol_and_file_are_not_found(server):
    with support.channel(server.port) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        with pytest.raises(KeyError):
            db.FindFileContainingSymbol("no.such.Symbol")
        with pytest.raises(KeyError):
            db.FindFileByName("no/such/file.proto")


@pytest.mark.parametrize("path", [V1_PATH, V1ALPHA_PATH], ids=["v1", "v1alpha"])
def test_several_requests_on_one_stream(server, path):
    """Both versions answer each request of one stream, in order (list, symbol, filename)."""
    with support.channel(server.port) as ch:
        responses = reflection_call(ch, path, [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="pixtrack.testing.v1.TestService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
        ])
    assert len(responses) == 3, responses
    names = {s.name for s in responses[0].list_services_response.service}
    assert EXPECTED_SERVICES <= names, names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in responses[1].file_descriptor_response.file_descriptor_proto]
    assert any("TestService" in [s.name for s in f.service] for f in files), files
    assert responses[2].WhichOneof("message_response") == "error_response"
    assert responses[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("path", [V1_PATH, V1ALPHA_PATH], ids=["v1", "v1alpha"])
def test_reflection_answers_before_the_client_half_closes(server, path):
    """grpcurl-style: the client waits for each answer before sending the next request."""
    requests: "queue.Queue" = queue.Queue()

    def request_iter():
        while True:
            item = requests.get(timeout=10)
            if item is None:
                return
            yield item

    with support.channel(server.port) as ch:
        call = ch.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        responses = call(request_iter(), timeout=10)
        try:
            requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            first = next(responses)
            assert first.WhichOneof("message_response") == "list_services_response"
            requests.put(reflection_pb2.ServerReflectionRequest(
                file_by_filename="pixtrack/testing/v1/testing.proto"))
            second = next(responses)
            assert second.WhichOneof("message_response") == "file_descriptor_response", second
        finally:
            requests.put(None)
        assert list(responses) == []


def test_every_listed_service_can_be_described(server):
    """What `grpcurl describe` does: each listed name resolves to a service with its types."""
    with support.channel(server.port) as ch:
        names = ProtoReflectionDescriptorDatabase(ch).get_services()
        failures = {}
        for name in names:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
            try:
                svc = pool.FindServiceByName(name)
                for m in svc.methods:
                    assert m.input_type.full_name and m.output_type.full_name
            except Exception as e:  # noqa: BLE001 - collected and reported below
                failures[name] = repr(e)
    assert not failures, failures
