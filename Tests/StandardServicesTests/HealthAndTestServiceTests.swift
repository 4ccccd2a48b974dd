import Testing
import ProtoCodec
import RPC
import StandardServices

private let check = "/grpc.health.v1.Health/Check"

@Suite struct HealthTests {
    let known = ["pixtrack.v1.TrackingService", "grpc.health.v1.Health"]

    func status(_ service: String, serving: Bool) async throws -> Int32 {
        let methods = StandardServices.health(knownServices: known, isServing: { serving })
        let response = try await Harness.unary(methods, check,
                                               ProtoMessage("grpc.health.v1.HealthCheckRequest", ["service": .string(service)]),
                                               response: "grpc.health.v1.HealthCheckResponse")
        return response.enumValue("status")
    }

    @Test func registersCheckWithoutAuth() throws {
        let methods = StandardServices.health(knownServices: known, isServing: { true })
        #expect(methods.map(\.path) == [check])
        #expect(methods.allSatisfy { !$0.requiresAuth })
    }

    @Test func overallAndKnownServicesFollowTheProvider() async throws {
        #expect(try await status("", serving: true) == 1)
        #expect(try await status("", serving: false) == 2)
        #expect(try await status("pixtrack.v1.TrackingService", serving: true) == 1)
        #expect(try await status("pixtrack.v1.TrackingService", serving: false) == 2)
    }

    @Test func unknownServiceIsNotFound() async throws {
        let error = await #expect(throws: RPCError.self) { try await status("nope.Service", serving: true) }
        #expect(error?.code == .notFound)
    }

    @Test func malformedRequestIsInvalidArgument() async throws {
        let methods = StandardServices.health(knownServices: known, isServing: { true })
        guard case .unaryInline(let handler) = methods[0].kind else { Issue.record("not answered inline"); return }
        let error = #expect(throws: RPCError.self) { try handler([0x0a, 0x09], Harness.context(check)) }
        #expect(error?.code == .invalidArgument)
    }
}

@Suite struct TestServiceTests {
    let methods = StandardServices.testing()

    @Test func registersSleepAndEchoWithAuth() {
        #expect(Set(methods.map(\.path)) == ["/pixtrack.testing.v1.TestService/Sleep", "/pixtrack.testing.v1.TestService/Echo"])
        #expect(methods.allSatisfy { $0.requiresAuth })
    }

    @Test func echoesTextPayloadAndMetadata() async throws {
        let request = ProtoMessage("pixtrack.testing.v1.EchoRequest", ["text": .string("héllo"), "payload": .bytes([0, 7, 255])])
        let metadata = Metadata([("X-Trace", "abc"), ("x-bin-bin", "AAE="), ("x-trace", "def")])
        let response = try await Harness.unary(methods, "/pixtrack.testing.v1.TestService/Echo", request,
                                               metadata: metadata, response: "pixtrack.testing.v1.EchoResponse")
        #expect(response.string("text") == "héllo")
        #expect(response.bytes("payload") == [0, 7, 255])
        let entries = response.list("metadata").compactMap { v -> String? in
            guard case .message(let m) = v else { return nil }
            return "\(m.string("key"))=\(m.string("value"))"
        }
        #expect(entries == ["x-trace=abc", "x-bin-bin=AAE=", "x-trace=def"])
    }

    @Test(arguments: [(Int32(5), RPCCode.notFound), (16, .unauthenticated), (99, .unknown), (-3, .unknown)] as [(Int32, RPCCode)])
    func echoFailsWithTheRequestedStatus(code: Int32, expected: RPCCode) async throws {
        let request = ProtoMessage("pixtrack.testing.v1.EchoRequest", ["fail_code": .int32(code), "fail_message": .string("boom")])
        let error = await #expect(throws: RPCError.self) {
            try await Harness.unary(methods, "/pixtrack.testing.v1.TestService/Echo", request, response: "pixtrack.testing.v1.EchoResponse")
        }
        #expect(error?.code == expected)
        #expect(error?.message == "boom")
    }

    @Test func sleepsThenAnswers() async throws {
        let start = ContinuousClock.now
        let response = try await Harness.unary(methods, "/pixtrack.testing.v1.TestService/Sleep",
                                               ProtoMessage("pixtrack.testing.v1.SleepRequest", ["millis": .uint32(50)]),
                                               response: "pixtrack.testing.v1.SleepResponse")
        #expect(response.uint32("slept_millis") == 50)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    @Test func sleepEndsWhenCancelled() async throws {
        let methods = self.methods
        let start = ContinuousClock.now
        let task = Task {
            try await Harness.unary(methods, "/pixtrack.testing.v1.TestService/Sleep",
                                    ProtoMessage("pixtrack.testing.v1.SleepRequest", ["millis": .uint32(10_000)]),
                                    response: "pixtrack.testing.v1.SleepResponse")
        }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(5))
    }
}
