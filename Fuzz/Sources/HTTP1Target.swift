// H1Session is internal to HTTP2: reached with @testable, which needs a module compiled for
// testing (debug builds, SwiftPM's default). A release build of this tool has no `http1` target;
// its bytes still reach the parser through the `http2` target's server (HTTP/1.1 sniffing).
#if DEBUG
@testable import HTTP2
import RPC

/// `http1`: `H1Session` (http_parser under our size limits), the parser behind every HTTP/1.1
/// connection.
///
/// Input: one control byte, then the bytes a client sends. Control: bits 0-5 = chunk size - 1
/// (how the stream is cut into reads), bit 6 = small limits (200 header bytes, 32 body bytes).
/// Invariants: the same requests and interim bytes, and a failure or none, whether the stream
/// arrives in one read or in chunks (what TCP segmentation must never change; see
/// `H1Parse.failed(like:)` for which failure); no body over the limit; no completed request
/// shorter than the shortest possible one.
let http1Targets = [
    FuzzTarget(name: "http1", summary: "H1Session: HTTP/1.1 request parsing, fed whole and in chunks", maxLength: 4096) {
        { bytes in
            var input = FuzzInput(bytes)
            let control = input.byte()
            var limits = HTTP2Server.HTTP1Limits()
            if control & 0x40 != 0 {
                limits.maxHeaderBytes = 200
                limits.maxBodyBytes = 32
            }
            let stream = input.rest
            let whole = H1Parse(stream, limits: limits, chunk: max(1, stream.count))
            let chunked = H1Parse(stream, limits: limits, chunk: Int(control & 0x3F) + 1)
            require(whole.requests == chunked.requests && whole.interim == chunked.interim && whole.failed(like: chunked),
                    "one read gave \(whole), reads of \(Int(control & 0x3F) + 1) bytes gave \(chunked)")
            for r in whole.requests {
                require(r.body.count <= limits.maxBodyBytes, "a \(r.body.count)-byte body passed the \(limits.maxBodyBytes)-byte limit")
                require(!r.target.isEmpty, "a request without a target: \(r)")
            }
            // "GET / HTTP/1.0\n\n" (16 bytes) is the shortest complete request.
            require(whole.requests.count * 16 <= stream.count, "\(whole.requests.count) requests out of \(stream.count) bytes")
        }
    },
]

/// What a session made of a byte stream.
private struct H1Parse: CustomStringConvertible {
    struct Request: Equatable {
        var method: String
        var target: String
        var headers: [String]
        var body: [UInt8]
        var keepAlive: Bool
    }

    /// A failure by what the client is answered. (A 400's message may name where http_parser
    /// stopped, which depends on how the bytes were cut.)
    enum Failure: String, Equatable {
        case badRequest = "400", headersTooLarge = "431", bodyTooLarge = "413", versionNotSupported = "505"
        var isSizeLimit: Bool { self == .headersTooLarge || self == .bodyTooLarge }
    }

    var requests: [Request] = []
    var failure: Failure?
    var interim: [UInt8] = []

    init(_ stream: UnsafeRawBufferPointer, limits: HTTP2Server.HTTP1Limits, chunk: Int) {
        let session = H1Session(limits: limits, peer: "fuzz")
        var offset = 0
        repeat {
            let end = min(stream.count, offset + chunk)
            session.feed(UnsafeRawBufferPointer(rebasing: stream[offset..<end]))
            interim += session.interim
            session.interim.removeAll()
            requests += session.takeCompleted().map {
                Request(method: $0.request.method, target: $0.request.target,
                        headers: $0.request.headers.map { "\($0.name): \($0.value)" }, body: $0.request.body, keepAlive: $0.keepAlive)
            }
            offset = end
        } while offset < stream.count
        failure = session.failure.map {
            switch $0 {
            case .badRequest: .badRequest
            case .headersTooLarge: .headersTooLarge
            case .bodyTooLarge: .bodyTooLarge
            case .versionNotSupported: .versionNotSupported
            }
        }
    }

    /// Both failed or neither did. Which failure may differ when one is a size limit: the limits
    /// are checked per http_parser callback, which a read boundary splits, while a syntax error
    /// is found at its byte (one read may see a bad byte before the callback that would pass the
    /// limit; chunks may pass the limit before the bad byte arrives).
    func failed(like other: H1Parse) -> Bool {
        guard let a = failure, let b = other.failure else { return failure == nil && other.failure == nil }
        return a == b || a.isSizeLimit || b.isSizeLimit
    }

    var description: String {
        "\(requests.count) requests \(requests.map { "\($0.method) \($0.target) (\($0.headers.count) headers, \($0.body.count) body bytes)" }), failure \(failure?.rawValue ?? "none"), \(interim.count) interim bytes"
    }
}
#else
let http1Targets: [FuzzTarget] = []
#endif
