import BRCode
import CNghttp2
import Foundation
import JSONKit
import ProtoCodec
import RPC

/// The generated part of `Fuzz/corpus/`: `pixtrack-fuzz seeds` writes these as `seed-*` files
/// (run from the repository root: webhook seeds come from `Plugins/*/conformance.json`). Files
/// of other names in the corpus (added by hand, or regressions) are left alone.
enum Seeds {
    static func generate(_ target: String) throws -> [(name: String, bytes: [UInt8])] {
        switch target {
        case "http1": http1
        case "http2": try http2
        case "grpc-deframer": grpcDeframer
        case "proto": proto
        case "proto-json": protoJSON
        case "json": try json
        case "brcode": try brCode
        default:
            if let plugin = WebhookPlugin.all.first(where: { "webhook-\($0.target)" == target }) { try webhooks(plugin) } else { [] }
        }
    }

    // MARK: HTTP/1.1

    /// Request streams as browsers, gateways and curl send them (with `http1`'s control byte).
    static var http1: [(name: String, bytes: [UInt8])] {
        var out: [(name: String, bytes: [UInt8])] = []
        for (name, control, text) in http1Requests {
            out.append(("seed-\(name)", [control] + Array(text.utf8)))
        }
        return out
    }

    static let webhookJSON = #"{"action":"pay","reference":"PAY-1","transaction_id":"sbx_1"}"#

    static let http1Requests: [(String, UInt8, String)] = [
        ("get-healthz", 0x00, "GET /healthz HTTP/1.1\r\nHost: localhost:50051\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"),
        ("get-go-slug", 0x06, "GET /go/promo?fbclid=IwAR3x&utm_source=facebook HTTP/1.1\r\nHost: track.example.com\r\n"
            + "User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) FBAN/FBIOS\r\nCookie: _fbp=fb.1.1700000000000.123; _fbc=fb.1.1700000000000.IwAR3x\r\n"
            + "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nAccept-Language: pt-BR,pt;q=0.9\r\n\r\n"),
        ("post-webhook", 0x3F, "POST /webhooks/sandbox/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: hooks.example.com\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(webhookJSON.utf8.count)\r\n\r\n\(webhookJSON)"),
        ("post-chunked", 0x02, "POST /webhooks/sandbox/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "7\r\n{\"a\":1}\r\n3;ext=1\r\n[1]\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ("pipelined", 0x0A, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            + "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("expect-continue", 0x01, "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
        ("connect-json", 0x10, "POST /pixtrack.testing.v1.TestService/Echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(fuzzBearerToken)\r\n"
            + "Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"text\":\"hola\"}"),
        ("http10-keepalive", 0x04, "GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD /healthz HTTP/1.0\r\n\r\n"),
        ("lf-only", 0x05, "GET /healthz HTTP/1.1\nHost: x\n\n"),
        ("obs-fold", 0x08, "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n  two\r\nX-Empty:\r\n\r\n"),
        ("absolute-form", 0x07, "OPTIONS http://x:50051/healthz?x=1#frag HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("upgrade-h2c", 0x03, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
        ("version-2", 0x00, "GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("headers-too-large", 0x41, "GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "a", count: 300))\r\n\r\n"),
        ("body-too-large", 0x45, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n\(String(repeating: "b", count: 100))"),
        ("chunked-too-large", 0x43, "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n\(String(repeating: "c", count: 64))\r\n0\r\n\r\n"),
        ("bad-content-length", 0x09, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        ("method-connect", 0x0B, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    ]

    // MARK: HTTP/2

    /// Connections as gRPC clients (grpcio, grpcurl), curl --http2-prior-knowledge and hostile
    /// peers open them; plus two HTTP/1.1 connections (the server sniffs the protocol).
    static var http2: [(name: String, bytes: [UInt8])] {
        get throws {
            let health = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckRequest"))
            let healthOf = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckRequest",
                                                              ["service": .string("pixtrack.testing.v1.TestService")]))
            let echo = try ProtoCodec.encode(ProtoMessage("pixtrack.testing.v1.EchoRequest",
                                                          ["text": .string("olá"), "payload": .bytes([0, 1, 2, 0xFF])]))
            let echoFail = try ProtoCodec.encode(ProtoMessage("pixtrack.testing.v1.EchoRequest",
                                                              ["fail_code": .int32(9), "fail_message": .string("não: 100%")]))
            let listServices = try ProtoCodec.encode(ProtoMessage("grpc.reflection.v1.ServerReflectionRequest", ["list_services": .string("")]))
            let symbol = try ProtoCodec.encode(ProtoMessage("grpc.reflection.v1.ServerReflectionRequest",
                                                            ["file_containing_symbol": .string("grpc.health.v1.Health")]))
            let byName = try ProtoCodec.encode(ProtoMessage("grpc.reflection.v1alpha.ServerReflectionRequest",
                                                            ["file_by_filename": .string("grpc/health/v1/health.proto")]))
            let check = "/grpc.health.v1.Health/Check"
            let echoPath = "/pixtrack.testing.v1.TestService/Echo"
            let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            let auth = [("authorization", "Bearer \(fuzzBearerToken)")]

            var out: [(name: String, bytes: [UInt8])] = []
            func add(_ name: String, _ build: (inout H2Seed) -> Void) {
                var c = H2Seed()
                build(&c)
                out.append(("seed-\(name)", c.bytes))
            }
            add("health-check") { $0.call(1, check, health) }
            add("health-check-service") { $0.call(1, check, healthOf, extra: [("grpc-timeout", "1S"), ("user-agent", "grpc-python/1.62.1")]) }
            add("health-twice") { c in c.call(1, check, health); c.call(3, check, healthOf) }
            add("echo") { $0.call(1, echoPath, echo, extra: auth + [("x-request-id", "req-1"), ("trace-bin", "AAEC"), ("grpc-timeout", "200m")]) }
            add("echo-no-token") { $0.call(1, echoPath, echo) }
            add("echo-wrong-token") { $0.call(1, echoPath, echo, extra: [("authorization", "Bearer nope")]) }
            add("echo-fails") { $0.call(1, echoPath, echoFail, extra: auth) }
            add("echo-split-message") { c in
                let framed = GRPCWire.frame(echo)
                c.headers(1, c.grpcRequest(echoPath) + auth, endStream: false)
                c.data(1, Array(framed.prefix(3)), endStream: false)
                c.data(1, Array(framed.dropFirst(3)), endStream: true)
            }
            add("reflection-list") { $0.call(1, reflection, listServices) }
            add("reflection-symbol-then-list") { c in
                c.headers(1, c.grpcRequest(reflection), endStream: false)
                c.data(1, GRPCWire.frame(symbol) + GRPCWire.frame(listServices), endStream: true)
            }
            add("reflection-v1alpha-file") { $0.call(1, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", byName) }
            add("unknown-method") { $0.call(1, "/pixtrack.v1.NoSuch/Method", []) }
            add("not-grpc-content-type") { c in
                c.headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", check),
                              ("content-type", "application/json")], endStream: false)
                c.data(1, Array("{}".utf8), endStream: true)
            }
            add("connect-echo-json") { c in
                c.headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", echoPath),
                              ("content-type", "application/json")] + auth, endStream: false)
                c.data(1, Array(#"{"text":"oi","payload":"AAE="}"#.utf8), endStream: true)
            }
            add("get-healthz") { $0.headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/healthz")], endStream: true) }
            add("head-metrics") { $0.headers(1, [(":method", "HEAD"), (":scheme", "http"), (":authority", "localhost"), (":path", "/metrics")], endStream: true) }
            add("interleaved-streams") { c in
                c.headers(1, c.grpcRequest(check), endStream: false)
                c.headers(3, c.grpcRequest(echoPath) + auth, endStream: false)
                c.data(3, GRPCWire.frame(echo), endStream: true)
                c.data(1, GRPCWire.frame(health), endStream: true)
            }
            add("continuation") { c in
                let block = c.hpack.encode(c.grpcRequest(check) + [("x-padding", String(repeating: "p", count: 40))])
                c.frame(1, flags: 0, stream: 1, Array(block.prefix(10)))
                c.frame(9, flags: 0x4, stream: 1, Array(block.dropFirst(10)))
                c.data(1, GRPCWire.frame(health), endStream: true)
            }
            add("padded-priority") { c in
                let block = c.hpack.encode(c.grpcRequest(check))
                // PADDED | END_HEADERS | PRIORITY: pad length, dependency + weight, block, padding.
                c.frame(1, flags: 0x8 | 0x4 | 0x20, stream: 1, [3, 0, 0, 0, 0, 15] + block + [0, 0, 0])
                c.frame(0, flags: 0x8 | 0x1, stream: 1, [2] + GRPCWire.frame(health) + [0, 0])
            }
            add("control-frames") { c in
                c.frame(6, flags: 0, stream: 0, Array("pingpong".utf8))
                c.frame(8, flags: 0, stream: 0, [0, 0, 0xFF, 0xFF])
                c.frame(4, flags: 1, stream: 0, [])
                c.frame(2, flags: 0, stream: 3, [0, 0, 0, 1, 200])
                c.call(1, check, health)
                c.headers(5, c.grpcRequest(echoPath), endStream: false)
                c.frame(3, flags: 0, stream: 5, [0, 0, 0, 8])
                c.frame(7, flags: 0, stream: 0, [0, 0, 0, 5, 0, 0, 0, 0] + Array("bye".utf8))
            }
            add("compressed-message") { c in
                c.headers(1, c.grpcRequest(check) + [("grpc-encoding", "gzip")], endStream: false)
                c.data(1, [1, 0, 0, 0, 3, 0x1F, 0x8B, 0x08], endStream: true)
            }
            add("oversized-message") { c in
                c.headers(1, c.grpcRequest(echoPath) + auth, endStream: false)
                c.data(1, [0, 0x06, 0, 0, 0] + Array(repeating: 0x41, count: 32), endStream: true)
            }
            add("settings-small-window") { c in
                c.frame(4, flags: 0, stream: 0, settingsPayload([(1, 0), (2, 0), (3, 10), (4, 1), (5, 16384), (6, 1000)]))
                c.call(1, reflection, listServices)
                c.frame(8, flags: 0, stream: 1, [0, 0, 0x40, 0])
            }
            out.append(("seed-http1-pipelined", Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8)))
            out.append(("seed-http1-connect", Array(("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "Content-Length: 2\r\n\r\n{}").utf8)))
            return out
        }
    }

    static func settingsPayload(_ entries: [(UInt16, UInt32)]) -> [UInt8] {
        entries.flatMap { id, v in [UInt8(id >> 8), UInt8(id & 0xFF), UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    }

    // MARK: gRPC framing

    /// Two control bytes (limit, chunk size) and a stream of length-prefixed messages.
    static var grpcDeframer: [(name: String, bytes: [UInt8])] {
        let hello = GRPCWire.frame(Array("hello".utf8))
        return [
            ("seed-empty-message", [3, 0] + GRPCWire.frame([])),
            ("seed-two-messages", [4, 4] + hello + GRPCWire.frame(Array(repeating: 7, count: 40))),
            ("seed-partial", [3, 0] + [0, 0, 0, 0, 10, 1, 2, 3]),
            ("seed-too-large", [2, 1] + GRPCWire.frame(Array("toolong".utf8))),
            ("seed-compressed", [4, 2] + [1, 0, 0, 0, 2, 0x1F, 0x8B]),
            ("seed-bad-flag", [4, 2] + hello + [7, 0, 0, 0, 0]),
            ("seed-many", [5, 31] + (0..<12).flatMap { GRPCWire.frame(Array(repeating: UInt8($0), count: $0 * 3)) }),
            ("seed-limit-zero", [0, 5] + GRPCWire.frame([]) + GRPCWire.frame([])),
        ]
    }

    // MARK: protobuf

    /// The types seeded: everything of ours (requests, responses, the plugin ABI's messages,
    /// the codec fixture); descriptor.proto's types get the real embedded FileDescriptorSet.
    static var seededTypes: [String] {
        ProtoTypes.all.filter { ($0.hasPrefix("pixtrack.") || $0.hasPrefix("grpc.")) && !SampleMessages.isMapEntry($0) }
    }

    static var proto: [(name: String, bytes: [UInt8])] {
        var out = samples(ProtoCodec.encode)
        if let control = ProtoTypes.control(for: "google.protobuf.FileDescriptorSet") {
            out.append(("seed-google.protobuf.FileDescriptorSet", [control] + ProtoSchema.fileDescriptorSet))
        }
        return out
    }

    /// A sample of each seeded type (`SampleMessages`), encoded by `encode`, after its type byte.
    static func samples(_ encode: (ProtoMessage) throws -> [UInt8]) -> [(name: String, bytes: [UInt8])] {
        seededTypes.compactMap { type in
            guard let control = ProtoTypes.control(for: type), let bytes = try? encode(SampleMessages.sample(type)) else { return nil }
            return ("seed-\(type)", [control] + bytes)
        }
    }

    static var protoJSON: [(name: String, bytes: [UInt8])] {
        var out = samples { try ProtoJSON.encode($0) }
        // The spellings proto3 JSON allows beyond what we write.
        if let control = ProtoTypes.control(for: "pixtrack.testing.v1.AllKinds") {
            let variants = [
                ("numbers", #"{"fInt32": "-7", "f_int64": 9007199254740993, "fUint64": "18446744073709551615", "fFloat": "NaN", "fDouble": -1.5e-300, "fSfixed64": "-1"}"#),
                ("specials", #"{"fDouble": "Infinity", "fFloat": "-Infinity", "rDouble": [1e308, "-0", 0.1], "fBool": false, "fEnum": 2, "rEnum": ["COLOR_RED", 0]}"#),
                ("strings", #"{"fString": "a\u00e9\ud83d\ude00\n\"", "fBytes": "_-8=", "rBytes": ["AAEC", "AAEC/w=="], "rString": ["", "x"]}"#),
                ("nested", #"{"fMessage": {"name": "n", "number": 1}, "fChild": {"fChild": {"fInt32": 1}}, "rMessage": [{}, {"number": -1}], "oInt64": "5"}"#),
                ("maps", #"{"mString": {"k": "v", "": ""}, "mMessage": {"-3": {"name": "x"}, "7": {}}, "oMessage": null, "oString": "s"}"#),
                ("nulls", #"{"fInt32": null, "rInt32": null, "mString": null, "fMessage": null}"#),
            ]
            for (name, json) in variants { out.append(("seed-AllKinds-\(name)", [control] + Array(json.utf8))) }
        }
        return out
    }

    // MARK: JSON, BR Code

    static var json: [(name: String, bytes: [UInt8])] {
        get throws {
            var out: [(name: String, bytes: [UInt8])] = []
            var n = 0
            for plugin in WebhookPlugin.all where plugin.readsJSON {
                for (_, body) in try conformanceWebhooks(plugin) where (try? JSON.parse(body)) != nil {
                    n += 1
                    out.append(("seed-webhook-\(n)", body))
                }
            }
            let documents = [
                ("meta-events", #"{"data":[{"event_name":"Purchase","event_time":1700000000,"action_source":"website","event_id":"PAY-1","user_data":{"client_ip_address":"203.0.113.7","client_user_agent":"Mozilla/5.0","fbc":"fb.1.1700000000000.IwAR3x","fbp":"fb.1.1700000000000.123","external_id":["5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"]},"custom_data":{"currency":"BRL","value":19.9}}],"test_event_code":"TEST123"}"#),
                ("graph-error", #"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"fbtrace_id":"AbC"}}"#),
                ("tracking", #"{"token":"t_9f8e","slug":"promo","fbclid":"IwAR3x","fbp":"fb.1.1700000000000.123","ip":"203.0.113.7","ua":"Mozilla/5.0","created_at":1700000000123}"#),
                ("numbers", #"[0, -0, 1.5, -2.25e-3, 1E+400, 123456789012345678901234567890, 19.90, "19.9", "1e1", 0.001]"#),
                ("escapes", #"["\"\\\/\b\f\n\r\t", "\u00e9\u0000\u001f", "\ud83d\ude00", "</script><!--", "\u2028\u2029", "<&>"]"#),
                ("literals", " \t\r\n{\"a\": [true, false, null, {}, []], \"b\": {\"c\": {\"d\": [[[\"e\"]]]}}} \n"),
                ("deep", String(repeating: "[", count: 64) + String(repeating: "]", count: 64)),
                ("duplicate-keys", #"{"a": 1, "a": 2, "\u0061": 3, "é": 1, "e\u0301": 2}"#),
            ]
            for (name, text) in documents { out.append(("seed-\(name)", Array(text.utf8))) }
            return out
        }
    }

    static var brCode: [(name: String, bytes: [UInt8])] {
        get throws {
            let staticCode = BRCode.build(key: "maria@example.com", amountCents: 1990, name: "Maria Silva", city: "São Paulo", txid: "PAY1")
            let dynamic = BRCode.build(url: "pix.example.com/qr/v2/9d36b84f-c70b-478f-b95c-12729b90ca25", amountCents: 0,
                                       name: "Loja", city: "Rio", txid: "")
            var codes = [("static", staticCode), ("dynamic", dynamic), ("lowercase-crc", staticCode.lowercased()),
                         ("bad-crc", String(staticCode.dropLast(4)) + "0000"), ("truncated", String(staticCode.dropLast(9))),
                         ("no-crc", String(staticCode.dropLast(8)))]
            // The pix codes the gateways answer in their recorded exchanges.
            var n = 0
            for plugin in WebhookPlugin.all where plugin.readsJSON {
                let text = String(decoding: try Data(contentsOf: conformanceURL(plugin)), as: UTF8.self)
                for match in text.split(separator: "\"") where match.hasPrefix("000201") {
                    n += 1
                    codes.append(("gateway-\(n)", String(match)))
                }
            }
            var out = codes.map { (name: "seed-\($0.0)", bytes: [UInt8(0)] + Array($0.1.utf8)) }
            out.append(("seed-build-key", [1] + Array("+5511987654321\nJoão da Silva Comércio de Alimentos\nSão José dos Campos\nPAY-12345\n1990".utf8)))
            out.append(("seed-build-url", [3] + Array("pix.example.com/v2/cobv/abc\nNAME\nCITY\n\n0".utf8)))
            return out
        }
    }

    // MARK: webhooks

    static func webhooks(_ plugin: WebhookPlugin) throws -> [(name: String, bytes: [UInt8])] {
        guard plugin.readsJSON else {
            return [("seed-paid", Array("id=ex1&status=paid".utf8)), ("seed-pending", Array("id=ex2&status=pending&x=1".utf8)),
                    ("seed-no-id", Array("status=paid".utf8)),
                    ("seed-headers", Array("content-type: application/x-www-form-urlencoded\n".utf8) + [0] + Array("id=ex3".utf8))]
        }
        return try conformanceWebhooks(plugin).enumerated().map { i, w in
            let head = w.headers.map { "\($0.key): \($0.value)\n" }.joined()
            return ("seed-conformance-\(i + 1)", head.isEmpty ? w.body : Array(head.utf8) + [0] + w.body)
        }
    }

    static func conformanceURL(_ plugin: WebhookPlugin) -> URL {
        URL(fileURLWithPath: "Plugins/\(plugin.target)/conformance.json")
    }

    /// The `parse_webhook` requests of a plugin's recorded exchange: headers and body.
    static func conformanceWebhooks(_ plugin: WebhookPlugin) throws -> [(headers: [String: String], body: [UInt8])] {
        let fixture = try JSON.parse(Array(try Data(contentsOf: conformanceURL(plugin))))
        return (fixture["steps"]?.array ?? []).compactMap { step in
            guard step["call"]?.string == "parse_webhook", let request = step["request"] else { return nil }
            let headers = (request["headers"]?.object ?? [:]).compactMapValues(\.string)
            let body = request["body_json"].map(\.bytes) ?? Array((request["body"]?.string ?? "").utf8)
            return (headers, body)
        }
    }
}

/// One client connection's bytes: the preface and an empty SETTINGS, then frames.
struct H2Seed {
    var bytes = H2Preface.bytes
    let hpack = HPACKEncoder()

    init() { frame(4, flags: 0, stream: 0, []) }

    mutating func frame(_ type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) {
        let n = payload.count
        bytes += [UInt8(n >> 16), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), type, flags]
        bytes += [UInt8(stream >> 24), UInt8((stream >> 16) & 0xFF), UInt8((stream >> 8) & 0xFF), UInt8(stream & 0xFF)]
        bytes += payload
    }

    func grpcRequest(_ path: String) -> [(String, String)] {
        [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost:50051"),
         ("content-type", "application/grpc"), ("te", "trailers")]
    }

    mutating func headers(_ stream: UInt32, _ list: [(String, String)], endStream: Bool) {
        frame(1, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, hpack.encode(list))
    }

    mutating func data(_ stream: UInt32, _ payload: [UInt8], endStream: Bool) {
        frame(0, flags: endStream ? 0x1 : 0, stream: stream, payload)
    }

    /// A unary gRPC call: HEADERS, one framed message, END_STREAM.
    mutating func call(_ stream: UInt32, _ path: String, _ message: [UInt8], extra: [(String, String)] = []) {
        headers(stream, grpcRequest(path) + extra, endStream: false)
        data(stream, GRPCWire.frame(message), endStream: true)
    }
}

/// nghttp2's HPACK encoder, as a client uses it (Huffman, static and dynamic table).
final class HPACKEncoder {
    private var deflater: OpaquePointer?

    init() { nghttp2_hd_deflate_new(&deflater, 4096) }
    deinit { nghttp2_hd_deflate_del(deflater) }

    func encode(_ list: [(String, String)]) -> [UInt8] {
        let names = list.map { Array($0.0.utf8) }
        let values = list.map { Array($0.1.utf8) }
        let copies = (names + values).map { field -> UnsafeMutablePointer<UInt8> in
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, field.count))
            p.initialize(from: field, count: field.count)
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        var nva = list.indices.map { i in
            nghttp2_nv(name: copies[i], value: copies[names.count + i], namelen: names[i].count, valuelen: values[i].count,
                       flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        let bound = nghttp2_hd_deflate_bound(deflater, &nva, nva.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = nghttp2_hd_deflate_hd(deflater, &out, bound, &nva, nva.count)
        return n > 0 ? Array(out.prefix(n)) : []
    }
}
