import Testing
import RPC

@Suite struct RPCRouterTests {
    private func method(_ service: String, _ name: String) -> RPCMethod {
        RPCMethod(service: service, method: name, kind: .unary { request, _ in request })
    }

    private func lookup(_ router: RPCRouter, _ path: String) -> String? {
        Array(path.utf8).withUnsafeBufferPointer { router.method(path: $0)?.path }
    }

    @Test func bytesLookupMatchesStringLookup() {
        let router = RPCRouter([method("a.v1.S", "Get"), method("a.v1.S", "Put"), method("a.v1.Long", "Get"),
                                method("b.T", "X")])
        for path in ["/a.v1.S/Get", "/a.v1.S/Put", "/a.v1.Long/Get", "/b.T/X"] {
            #expect(lookup(router, path) == path)
            #expect(router.method(for: path)?.path == path)
        }
        // Same length as a registered path, one byte off; shorter, longer, empty, far longer.
        for path in ["/a.v1.S/Gex", "/a.v1.S/Ge", "/a.v1.S/Gett", "", "/", String(repeating: "x", count: 500)] {
            #expect(lookup(router, path) == nil, "\(path)")
            #expect(router.method(for: path) == nil)
        }
    }

    @Test func routeIndexesFollowRegistrationOrder() {
        let router = RPCRouter([method("a.S", "X"), method("a.S", "Y"), method("b.S", "Z")])
        #expect(router.methodsByRouteIndex.map(\.path) == ["/a.S/X", "/a.S/Y", "/b.S/Z"])
        #expect(router.methodsByRouteIndex.map(\.routeIndex) == [0, 1, 2])
        #expect(lookupIndex(router, "/b.S/Z") == 2 && router.method(for: "/a.S/Y")?.routeIndex == 1)
        #expect(method("c.S", "W").routeIndex == -1)
    }

    private func lookupIndex(_ router: RPCRouter, _ path: String) -> Int? {
        Array(path.utf8).withUnsafeBufferPointer { router.method(path: $0)?.routeIndex }
    }

    @Test func inlineHandlersAreAlsoUnaryHandlers() async throws {
        let inline = RPCMethod(service: "s.S", method: "M", kind: .unaryInline { request, _ in request + [1] })
        let context = RPCContext(path: inline.path, metadata: Metadata(), deadline: nil, requestID: "r", peer: "p")
        let handler = try #require(inline.kind.unaryHandler)
        #expect(try await handler([7], context) == [7, 1])
        let streaming = RPCMethod(service: "s.S", method: "B", kind: .bidiStreaming { _, _, _ in })
        #expect(streaming.kind.unaryHandler == nil)
    }
}
