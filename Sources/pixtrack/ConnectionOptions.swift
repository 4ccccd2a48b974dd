import ArgumentParser
import Foundation
import HTTP2
import RPC
import TLS

/// Where and how to reach pixtrackd; shared by every RPC subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Server address host:port (env PIXTRACK_ADDR).")
    var addr: String = ProcessInfo.processInfo.environment["PIXTRACK_ADDR"] ?? "127.0.0.1:50051"

    @Option(name: .long, help: "Bearer token for authenticated RPCs. Visible to other users in `ps`: prefer PIXTRACK_RPC_TOKEN or --token-file.")
    var token: String?

    @Option(name: .long, help: "Read the bearer token from this file (its first line).")
    var tokenFile: String?

    @Flag(name: .long, help: "Speak TLS (ALPN h2) and verify the server's certificate (system CAs unless --ca).")
    var tls = false

    @Option(name: .long, help: "PEM file of the CA certificates to trust for --tls (implies --tls).")
    var ca: String?

    @Option(name: .long, help: "The name the server's certificate must carry (default: the --addr host).")
    var tlsServerName: String?

    @Option(name: .long, help: "Seconds to wait for the answer (sent as grpc-timeout).")
    var timeout: Double = 10

    @Option(name: .customShort("H"), help: "Extra metadata 'key: value' (repeatable).")
    var header: [String] = []

    func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be in (0, 3600] seconds") }
        if token != nil && tokenFile != nil { throw ValidationError("give --token or --token-file, not both") }
        if let path = tokenFile, (try? Self.readToken(path)) == nil {
            throw ValidationError("--token-file \(path): cannot read a token from it")
        }
        if token != nil {
            FileHandle.standardError.write(Data("pixtrack: warning: --token is visible to other users of this machine (ps, /proc); prefer PIXTRACK_RPC_TOKEN or --token-file\n".utf8))
        }
        if let ca, !FileManager.default.isReadableFile(atPath: ca) { throw ValidationError("--ca \(ca): cannot read it") }
        if tlsServerName != nil && !usesTLS { throw ValidationError("--tls-server-name needs --tls") }
        for h in header where !h.contains(":") { throw ValidationError("-H expects 'key: value', got '\(h)'") }
        _ = try hostPort()
    }

    func hostPort() throws -> (String, Int) {
        guard let i = addr.lastIndex(of: ":"), let port = Int(addr[addr.index(after: i)...]), port > 0, port < 65536 else {
            throw ValidationError("--addr must be host:port, got '\(addr)'")
        }
        var host = String(addr[..<i])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    var usesTLS: Bool { tls || ca != nil }

    var metadata: [(String, String)] {
        var m = header.map { h -> (String, String) in
            let i = h.firstIndex(of: ":")!
            return (String(h[..<i]).trimmingCharacters(in: .whitespaces).lowercased(), String(h[h.index(after: i)...]).trimmingCharacters(in: .whitespaces))
        }
        let fromFile = tokenFile.flatMap { try? Self.readToken($0) }
        if let t = token ?? fromFile ?? ProcessInfo.processInfo.environment["PIXTRACK_RPC_TOKEN"], !t.isEmpty {
            m.append(("authorization", "Bearer \(t)"))
        }
        return m
    }

    /// The first line of `path`, without surrounding whitespace; nil when unreadable or empty.
    static func readToken(_ path: String) throws -> String? {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let line = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        return line.isEmpty ? nil : line
    }

    /// One call on a fresh connection; a non-OK status becomes `RPCFailure`.
    func call(_ path: String, _ request: [UInt8]) throws -> [UInt8] {
        let (host, port) = try hostPort()
        let d = Duration.milliseconds(Int64(timeout * 1000))
        let response: GRPCClient.Response
        do {
            let context: TLSContext?
            do {
                context = usesTLS ? try TLSContext(trusting: ca) : nil
            } catch {
                throw RPCFailure(code: .unavailable, message: String(describing: error))
            }
            let client = try GRPCClient(host: host, port: port, timeout: d, tls: context, serverName: tlsServerName)
            response = try client.call(path, requests: [request], metadata: metadata, timeout: d)
        } catch let e as GRPCClient.ClientError {
            throw RPCFailure(code: e.code, message: e.description)
        }
        guard response.code == .ok else { throw RPCFailure(code: response.code, message: response.message) }
        guard let first = response.messages.first else {
            throw RPCFailure(code: .internal, message: "the server answered OK without a message")
        }
        return first
    }
}

/// A call that ended with a non-OK status: printed as `CODE: message` on stderr, and the
/// process exits with 64 + the gRPC code (see `pixtrack --help`).
struct RPCFailure: Error, CustomStringConvertible {
    let code: RPCCode
    let message: String
    var description: String { "\(code.name): \(message)" }
    var exitCode: ExitCode { ExitCode(Int32(64 + code.rawValue)) }
}

/// Runs a subcommand body, turning RPC failures into the documented stderr line and exit code.
func runReportingFailures(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let f as RPCFailure {
        FileHandle.standardError.write(Data("\(f.description)\n".utf8))
        throw f.exitCode
    }
}
