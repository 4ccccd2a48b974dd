import ArgumentParser
import Foundation
import ProtoCodec
import RPC

struct CallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call a unary RPC with a JSON request; print the JSON response.",
        discussion: """
        The method is 'package.Service/Method' (a leading '/' or a '.' before the method name is
        accepted too). The request is proto3 JSON: inline, '@file', or '-' for stdin; omitted means {}.

        Examples:
          pixtrack call grpc.health.v1.Health/Check
          pixtrack call pixtrack.v1.PaymentService/GetPayment -d '{"id":"42"}'
          pixtrack call pixtrack.v1.TrackingService/ResolveToken -d @request.json --token "$TOKEN"
          echo '{"text":"hi"}' | pixtrack call pixtrack.testing.v1.TestService/Echo -d - -H 'x-request-id: abc'

        Bad usage or input (unknown method, invalid JSON): exit status 64.
        On a non-OK status: 'CODE: message' on stderr, exit status 64 + the gRPC code
        (e.g. 69 NOT_FOUND, 67 INVALID_ARGUMENT, 76 UNIMPLEMENTED, 78 UNAVAILABLE, 80 UNAUTHENTICATED).
        """)

    @Argument(help: "Method: package.Service/Method.")
    var method: String

    @Option(name: .shortAndLong, help: "Request JSON, @file, or - for stdin.")
    var data: String = "{}"

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        let path = try Self.normalize(method)
        guard let info = Self.lookup(path) else {
            throw ValidationError("unknown method \(path): not in this CLI's schema (try 'pixtrack list')")
        }
        let json = try readInput(data)
        let request: ProtoMessage
        do {
            request = try ProtoJSON.decode(json, as: info.input)
        } catch let e as ProtoCodecError {
            throw ValidationError("invalid request: \(e.message)")
        }
        try runReportingFailures {
            let bytes = try connection.call(path, try ProtoCodec.encode(request))
            let reply = try ProtoCodec.decode(bytes, as: info.output)
            FileHandle.standardOutput.write(Data(try ProtoJSON.encode(reply, pretty: true)))
        }
    }

    static func normalize(_ m: String) throws -> String {
        var s = m.hasPrefix("/") ? String(m.dropFirst()) : m
        if !s.contains("/"), let dot = s.lastIndex(of: ".") {
            s.replaceSubrange(dot...dot, with: "/")
        }
        let parts = s.split(separator: "/")
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("method must be package.Service/Method, got '\(m)'")
        }
        return "/" + s
    }

    static func lookup(_ path: String) -> (input: String, output: String)? {
        for s in ProtoSchema.services {
            for m in s.methods where s.path(of: m) == path { return (m.inputType, m.outputType) }
        }
        return nil
    }
}

/// `-d` value: inline text, `@file`, or `-` (stdin).
func readInput(_ spec: String) throws -> [UInt8] {
    if spec == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
    if spec.hasPrefix("@") {
        let path = String(spec.dropFirst())
        guard let d = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        return Array(d)
    }
    return Array(spec.utf8)
}
