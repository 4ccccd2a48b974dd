import Testing
import ProtoCodec
import RPC
import StandardServices

@Suite struct ReflectionServiceTests {
    let methods: [RPCMethod]

    init() throws {
        methods = StandardServices.reflection(
            services: ["grpc.health.v1.Health", "pixtrack.v1.TrackingService"], index: try ReflectionIndex.embedded())
    }

    func request(_ version: String, _ fields: [String: ProtoValue]) throws -> [UInt8] {
        try ProtoCodec.encode(ProtoMessage("grpc.reflection.\(version).ServerReflectionRequest", fields))
    }

    func run(_ version: String, _ requests: [[String: ProtoValue]]) async throws -> [ProtoMessage] {
        try await Harness.bidi(methods, "/grpc.reflection.\(version).ServerReflection/ServerReflectionInfo",
                               try requests.map { try request(version, $0) },
                               response: "grpc.reflection.\(version).ServerReflectionResponse")
    }

    func fileNames(_ response: ProtoMessage) throws -> [String] {
        try (response.message("file_descriptor_response")?.list("file_descriptor_proto") ?? []).map {
            guard case .bytes(let b) = $0 else { return "?" }
            return try ProtoCodec.decode(b, as: "google.protobuf.FileDescriptorProto").string("name")
        }
    }

    @Test func registersBothVersionsWithoutAuth() {
        #expect(Set(methods.map(\.path)) == ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                             "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"])
        #expect(methods.allSatisfy { !$0.requiresAuth })
    }

    @Test(arguments: ["v1", "v1alpha"])
    func answersEveryRequestInOrderOnOneStream(version: String) async throws {
        let responses = try await run(version, [
            ["host": .string("localhost:50051"), "list_services": .string("")],
            ["file_containing_symbol": .string("pixtrack.v1.PaymentService")],
            ["file_by_filename": .string("grpc/health/v1/health.proto")],
            ["file_containing_symbol": .string("no.Such")],
            ["file_by_filename": .string("missing.proto")],
            ["all_extension_numbers_of_type": .string("pixtrack.v1.Payment")],
            ["file_containing_extension": .message(ProtoMessage("grpc.reflection.\(version).ExtensionRequest",
                                                                ["containing_type": .string("pixtrack.v1.Payment"), "extension_number": .int32(100)]))],
            ["file_containing_symbol": .string("grpc.health.v1.Health.Check")],
        ])
        try #require(responses.count == 8)

        // list_services, echoing host and the original request.
        #expect(responses[0].string("valid_host") == "localhost:50051")
        #expect(responses[0].message("original_request")?.string("host") == "localhost:50051")
        #expect(responses[0].message("original_request")?["list_services"] == .string(""))
        let services = responses[0].message("list_services_response")?.list("service").compactMap { v -> String? in
            guard case .message(let m) = v else { return nil }
            return m.string("name")
        }
        #expect(services == ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                             "grpc.reflection.v1alpha.ServerReflection", "pixtrack.v1.TrackingService"])

        // A symbol's file comes with its transitive imports, the file itself first.
        #expect(try fileNames(responses[1]) == ["pixtrack/v1/payment.proto", "pixtrack/v1/gateway.proto", "pixtrack/v1/tracking.proto"])
        #expect(try fileNames(responses[2]) == ["grpc/health/v1/health.proto"])

        // Failures are error_responses with NOT_FOUND; the stream went on.
        for i in [3, 4, 6] {
            #expect(responses[i].message("error_response")?.int32("error_code") == 5, "response \(i)")
            #expect(responses[i].message("error_response")?.string("error_message").isEmpty == false)
        }
        #expect(responses[3].message("original_request")?.string("file_containing_symbol") == "no.Such")

        let ext = try #require(responses[5].message("all_extension_numbers_response"))
        #expect(ext.string("base_type_name") == "pixtrack.v1.Payment")
        #expect(ext.list("extension_number").isEmpty)

        #expect(try fileNames(responses[7]) == ["grpc/health/v1/health.proto"])
    }

    @Test func unknownTypeForExtensionNumbersIsNotFound() async throws {
        let r = try await run("v1", [["all_extension_numbers_of_type": .string("no.Such")]])
        #expect(r.first?.message("error_response")?.int32("error_code") == 5)
    }

    @Test func emptyRequestGetsInvalidArgument() async throws {
        let r = try await run("v1alpha", [[:]])
        #expect(r.first?.message("error_response")?.int32("error_code") == 3)
    }

    @Test func malformedRequestEndsTheCallWithInvalidArgument() async throws {
        let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        let error = await #expect(throws: RPCError.self) {
            try await Harness.bidi(methods, path, [[0x1a, 0x05]], response: "grpc.reflection.v1.ServerReflectionResponse")
        }
        #expect(error?.code == .invalidArgument)
    }
}
