import Testing
@testable import ProtoCodec

@Suite struct ProtoSchemaTests {
    @Test func listsCompiledMessageTypes() {
        let names = Set(ProtoSchema.messageTypeNames())
        for expected in ["grpc.health.v1.HealthCheckRequest", "grpc.reflection.v1alpha.ServerReflectionResponse",
                         "pixtrack.v1.Payment", "pixtrack.v1.PluginConfig.CredentialsEntry",
                         "google.protobuf.FileDescriptorSet", "google.protobuf.DescriptorProto.ExtensionRange",
                         "pixtrack.testing.v1.EchoRequest"] {
            #expect(names.contains(expected), "\(expected)")
        }
    }

    @Test func listsServicesWithMethodTypes() throws {
        let health = try #require(ProtoSchema.services.first { $0.name == "grpc.health.v1.Health" })
        #expect(health.methods.map(\.name) == ["Check", "Watch"])
        #expect(health.methods[0].inputType == "grpc.health.v1.HealthCheckRequest")
        #expect(health.methods[0].outputType == "grpc.health.v1.HealthCheckResponse")
        #expect(health.path(of: health.methods[0]) == "/grpc.health.v1.Health/Check")
        let names = Set(ProtoSchema.services.map(\.name))
        #expect(names == ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                          "grpc.reflection.v1alpha.ServerReflection", "pixtrack.testing.v1.TestService",
                          "pixtrack.v1.PaymentService", "pixtrack.v1.TrackingService"])
    }

    @Test func embedsTheDescriptorSet() throws {
        let set = try ProtoCodec.decode(ProtoSchema.fileDescriptorSet, as: "google.protobuf.FileDescriptorSet")
        #expect(set.list("file").count == 9)
    }
}

@Suite struct ReflectionIndexTests {
    let index: ReflectionIndex

    init() throws { index = try ReflectionIndex.embedded() }

    @Test func indexesFilesByName() throws {
        #expect(Set(index.fileNames) == [
            "grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto", "pixtrack/testing/v1/testing.proto",
            "pixtrack/testing/v1/codec.proto", "pixtrack/v1/gateway.proto", "pixtrack/v1/tracking.proto",
            "pixtrack/v1/payment.proto", "pixtrack/v1/runner.proto",
        ])
        let bytes = try #require(index.file(named: "grpc/health/v1/health.proto"))
        let file = try ProtoCodec.decode(bytes, as: "google.protobuf.FileDescriptorProto")
        #expect(file.string("package") == "grpc.health.v1")
        #expect(file.string("syntax") == "proto3")
        #expect(index.file(named: "nope.proto") == nil)
    }

    @Test(arguments: [
        ("grpc.health.v1.Health", "grpc/health/v1/health.proto"),
        ("grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"),
        ("grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"),
        ("grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"),
        (".grpc.health.v1.HealthCheckRequest", "grpc/health/v1/health.proto"),
        ("grpc.health.v1.HealthCheckRequest.service", "grpc/health/v1/health.proto"),
        ("pixtrack.v1.PaymentService.GeneratePix", "pixtrack/v1/payment.proto"),
        ("pixtrack.v1.PluginConfig.CredentialsEntry", "pixtrack/v1/gateway.proto"),
        ("pixtrack.v1.TOKEN_SOURCE_CHAT", "pixtrack/v1/tracking.proto"),
        ("pixtrack.testing.v1", "pixtrack/testing/v1/codec.proto"),
        ("grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"),
    ])
    func findsFileContainingSymbol(symbol: String, file: String) {
        #expect(index.fileName(containingSymbol: symbol) == file)
    }

    @Test func unknownSymbolIsNil() {
        #expect(index.fileName(containingSymbol: "pixtrack.v1.Nope") == nil)
        #expect(index.fileName(containingSymbol: "") == nil)
    }

    @Test func returnsTransitiveDependencies() throws {
        #expect(index.dependencies(of: "pixtrack/v1/payment.proto") == ["pixtrack/v1/gateway.proto", "pixtrack/v1/tracking.proto"])
        let files = try #require(index.fileWithDependencies("pixtrack/v1/payment.proto"))
        let names = try files.map { try ProtoCodec.decode($0, as: "google.protobuf.FileDescriptorProto").string("name") }
        #expect(names == ["pixtrack/v1/payment.proto", "pixtrack/v1/gateway.proto", "pixtrack/v1/tracking.proto"])
        #expect(index.fileWithDependencies("grpc/health/v1/health.proto")?.count == 1)
        #expect(index.fileWithDependencies("missing.proto") == nil)
    }

    @Test func listsServices() {
        #expect(index.services == ProtoSchema.services.map(\.name))
    }

    @Test func rejectsGarbage() {
        #expect(throws: ProtoCodecError.self) { try ReflectionIndex(fileDescriptorSet: [0x0a, 0x05, 0x01]) }
    }
}
