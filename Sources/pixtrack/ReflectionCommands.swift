import ArgumentParser
import Foundation
import ProtoCodec

/// Asks the server's reflection service (grpc.reflection.v1) and decodes what it says.
struct ReflectionClient {
    let connection: ConnectionOptions

    func ask(_ field: String, _ value: String) throws -> ProtoMessage {
        let req = ProtoMessage("grpc.reflection.v1.ServerReflectionRequest", [field: .string(value)])
        let bytes = try connection.call("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", try ProtoCodec.encode(req))
        let resp = try ProtoCodec.decode(bytes, as: "grpc.reflection.v1.ServerReflectionResponse")
        if let err = resp.message("error_response") {
            throw RPCFailure(code: .init(rawValue: Int(err.int32("error_code"))) ?? .unknown, message: err.string("error_message"))
        }
        return resp
    }

    func services() throws -> [String] {
        try ask("list_services", "*").message("list_services_response")?.list("service").compactMap {
            if case .message(let m) = $0 { m.string("name") } else { nil }
        }.sorted() ?? []
    }

    /// The file that defines `symbol`, and its dependencies, decoded.
    func files(containing symbol: String) throws -> [ProtoMessage] {
        let resp = try ask("file_containing_symbol", symbol)
        return try (resp.message("file_descriptor_response")?.list("file_descriptor_proto") ?? []).compactMap {
            guard case .bytes(let b) = $0 else { return nil }
            return try ProtoCodec.decode(b, as: "google.protobuf.FileDescriptorProto")
        }
    }
}

/// Finds services, methods and messages in decoded FileDescriptorProtos.
struct DescriptorLookup {
    let files: [ProtoMessage]

    func service(_ fullName: String) -> ProtoMessage? {
        for f in files {
            for case .message(let s) in f.list("service") where qualified(f, s.string("name")) == fullName { return s }
        }
        return nil
    }

    func message(_ fullName: String) -> ProtoMessage? {
        let name = fullName.hasPrefix(".") ? String(fullName.dropFirst()) : fullName
        for f in files {
            for case .message(let m) in f.list("message_type") {
                if let found = search(m, prefix: qualified(f, m.string("name")), for: name) { return found }
            }
        }
        return nil
    }

    private func search(_ m: ProtoMessage, prefix: String, for name: String) -> ProtoMessage? {
        if prefix == name { return m }
        for case .message(let n) in m.list("nested_type") {
            if let f = search(n, prefix: prefix + "." + n.string("name"), for: name) { return f }
        }
        return nil
    }

    private func qualified(_ file: ProtoMessage, _ name: String) -> String {
        let pkg = file.string("package")
        return pkg.isEmpty ? name : pkg + "." + name
    }

    static func signature(_ m: ProtoMessage) -> String {
        let input = (m.bool("client_streaming") ? "stream " : "") + m.string("input_type").dropFirst()
        let output = (m.bool("server_streaming") ? "stream " : "") + m.string("output_type").dropFirst()
        return "rpc \(m.string("name"))(\(input)) returns (\(output))"
    }

    static let typeNames = [1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32", 8: "bool",
                            9: "string", 10: "group", 12: "bytes", 13: "uint32", 15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64"]

    static func fields(_ m: ProtoMessage) -> [String] {
        m.list("field").compactMap {
            guard case .message(let f) = $0 else { return nil }
            let t = f.enumValue("type")
            let type = (t == 11 || t == 14) ? String(f.string("type_name").dropFirst()) : typeNames[Int(t)] ?? "?"
            let repeated = f.enumValue("label") == 3 ? "repeated " : ""
            return "  \(repeated)\(type) \(f.string("name")) = \(f.int32("number"));"
        }
    }
}

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the server's services, or one service's methods (server reflection).",
        discussion: """
        Examples:
          pixtrack list
          pixtrack list pixtrack.v1.PaymentService
        """)

    @Argument(help: "A service to list the methods of.")
    var service: String?

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try runReportingFailures {
            let client = ReflectionClient(connection: connection)
            guard let service else {
                for s in try client.services() { print(s) }
                return
            }
            let lookup = DescriptorLookup(files: try client.files(containing: service))
            guard let s = lookup.service(service) else { throw RPCFailure(code: .notFound, message: "\(service) is not a service") }
            for case .message(let m) in s.list("method") { print("\(service)/\(m.string("name"))") }
        }
    }
}

struct DescribeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Describe a method, service or message (server reflection).",
        discussion: """
        Examples:
          pixtrack describe pixtrack.v1.PaymentService/GeneratePix
          pixtrack describe pixtrack.v1.PaymentService
          pixtrack describe pixtrack.v1.GeneratePixRequest
        """)

    @Argument(help: "package.Service/Method, package.Service, or package.Message.")
    var symbol: String

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try runReportingFailures {
            let client = ReflectionClient(connection: connection)
            let sym = symbol.hasPrefix("/") ? String(symbol.dropFirst()) : symbol
            var serviceName = sym, methodName: String?
            if let slash = sym.firstIndex(of: "/") {
                serviceName = String(sym[..<slash])
                methodName = String(sym[sym.index(after: slash)...])
            }
            let lookupSymbol = methodName.map { "\(serviceName).\($0)" } ?? sym
            let lookup = DescriptorLookup(files: try client.files(containing: lookupSymbol))
            if let s = lookup.service(serviceName) {
                let methods = s.list("method").compactMap { v -> ProtoMessage? in if case .message(let m) = v { m } else { nil } }
                if let methodName {
                    guard let m = methods.first(where: { $0.string("name") == methodName }) else {
                        throw RPCFailure(code: .notFound, message: "\(serviceName) has no method \(methodName)")
                    }
                    print("\(serviceName)/\(methodName)\n  \(DescriptorLookup.signature(m))")
                    for (label, type) in [("request", m.string("input_type")), ("response", m.string("output_type"))] {
                        if let msg = lookup.message(type) {
                            print("\n\(label) \(type.dropFirst()) {")
                            DescriptorLookup.fields(msg).forEach { print($0) }
                            print("}")
                        }
                    }
                } else {
                    print("service \(serviceName) {")
                    methods.forEach { print("  \(DescriptorLookup.signature($0));") }
                    print("}")
                }
            } else if let msg = lookup.message(sym) {
                print("message \(sym) {")
                DescriptorLookup.fields(msg).forEach { print($0) }
                print("}")
            } else {
                throw RPCFailure(code: .notFound, message: "\(sym) is not a service, method or message")
            }
        }
    }
}
