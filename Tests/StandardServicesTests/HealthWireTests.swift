import ProtoCodec
import RPC
import StandardServices
import Testing

/// Health answers through the generated message types: the bytes on the wire are the ones the
/// dynamic codec writes for the same answer.
@Suite struct HealthWireTests {
    @Test(arguments: [(true, Int32(1)), (false, Int32(2))])
    func answersAreTheDynamicCodecsBytes(serving: Bool, status: Int32) throws {
        let methods = StandardServices.health(knownServices: ["pixtrack.v1.PaymentService"], isServing: { serving })
        guard case .unaryInline(let handler) = methods[0].kind else { Issue.record("not answered inline"); return }
        let expected = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckResponse", ["status": .enumValue(status)]))
        let context = Harness.context("/grpc.health.v1.Health/Check")
        #expect(try handler([], context) == expected)
        let named = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckRequest", ["service": .string("pixtrack.v1.PaymentService")]))
        #expect(try handler(named, context) == expected)
        let unknown = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckRequest", ["service": .string("pixtrack.v1.Other")]))
        #expect((#expect(throws: RPCError.self) { try handler(unknown, context) })?.code == .notFound)
    }
}
