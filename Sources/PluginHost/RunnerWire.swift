import Glibc
import ProtoCodec
import Synchronization

/// One frame of the host ⇄ plugin-runner protocol (`Proto/pixtrack/v1/runner.proto`), as a
/// Swift value. Both ends are built from the same sources, so the protocol has no versions.
struct RunnerFrame: Sendable {
    enum Kind: Int32, Sendable {
        case hello = 1, create, call, result, http, httpReply, log, destroy
    }

    /// `RunnerHello`: the plugin table as the runner validated it, or why the file was refused.
    struct Hello: Sendable {
        var name = "", version = "", description = ""
        var abiMajor: UInt32 = 0, abiMinor: UInt32 = 0
        var capabilities: UInt64 = 0
        var error = ""
    }

    var kind: Kind
    var call: UInt64 = 0
    var payload: [UInt8] = []
    var hasPayload = false
    var instance: UInt64 = 0
    var status: Int32 = 0
    var message = ""
    var problem = ""
    var deadlineMs: Int64 = 0
    var operation: Int32 = 0
    var logLevel: Int32 = 0
    var hello: Hello?

    init(_ kind: Kind, call: UInt64 = 0) {
        self.kind = kind
        self.call = call
    }

    /// The protobuf encoding of `RunnerFrame` (runner.proto), written directly: frames cross
    /// the socket twice per call, and the descriptor-driven codec costs more than the call.
    /// `RunnerWireTests` checks it against `ProtoCodec` both ways.
    func encoded() -> [UInt8]? {
        var w = WireWriter(capacity: payload.count + message.utf8.count + 48)
        w.varint(1, UInt64(kind.rawValue))
        w.varint(2, call)
        w.bytes(3, payload)
        w.varint(4, hasPayload ? 1 : 0)
        w.varint(5, instance)
        w.varint(6, UInt64(bitPattern: Int64(status)))
        w.bytes(7, Array(message.utf8))
        w.bytes(8, Array(problem.utf8))
        w.varint(9, UInt64(bitPattern: deadlineMs))
        w.varint(10, UInt64(bitPattern: Int64(operation)))
        w.varint(11, UInt64(bitPattern: Int64(logLevel)))
        if let h = hello {
            var hw = WireWriter()
            hw.bytes(1, Array(h.name.utf8))
            hw.bytes(2, Array(h.version.utf8))
            hw.bytes(3, Array(h.description.utf8))
            hw.varint(4, UInt64(h.abiMajor))
            hw.varint(5, UInt64(h.abiMinor))
            hw.varint(6, h.capabilities)
            hw.bytes(7, Array(h.error.utf8))
            w.bytes(12, hw.bytes, always: true)
        }
        return w.bytes
    }

    /// Nil for bytes that are not a frame (malformed, no known kind). Unknown fields are skipped.
    static func decode(_ bytes: [UInt8]) -> RunnerFrame? {
        var r = WireReader(bytes)
        var f = RunnerFrame(.hello)
        var kind: Kind?
        while !r.atEnd {
            guard let field = r.next() else { return nil }
            switch (field.number, field.payload) {
            case (1, .varint(let v)): kind = Kind(rawValue: Int32(truncatingIfNeeded: v))
            case (2, .varint(let v)): f.call = v
            case (3, .lengthDelimited(let range)): f.payload = Array(bytes[range])
            case (4, .varint(let v)): f.hasPayload = v != 0
            case (5, .varint(let v)): f.instance = v
            case (6, .varint(let v)): f.status = Int32(truncatingIfNeeded: v)
            case (7, .lengthDelimited(let range)): f.message = String(decoding: bytes[range], as: UTF8.self)
            case (8, .lengthDelimited(let range)): f.problem = String(decoding: bytes[range], as: UTF8.self)
            case (9, .varint(let v)): f.deadlineMs = Int64(bitPattern: v)
            case (10, .varint(let v)): f.operation = Int32(truncatingIfNeeded: v)
            case (11, .varint(let v)): f.logLevel = Int32(truncatingIfNeeded: v)
            case (12, .lengthDelimited(let range)):
                guard let h = decodeHello(bytes, range) else { return nil }
                f.hello = h
            default: break
            }
        }
        guard let kind else { return nil }
        f.kind = kind
        return f
    }

    private static func decodeHello(_ bytes: [UInt8], _ range: Range<Int>) -> Hello? {
        var r = WireReader(bytes, range: range)
        var h = Hello()
        func text(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
        while !r.atEnd {
            guard let field = r.next() else { return nil }
            switch (field.number, field.payload) {
            case (1, .lengthDelimited(let range)): h.name = text(range)
            case (2, .lengthDelimited(let range)): h.version = text(range)
            case (3, .lengthDelimited(let range)): h.description = text(range)
            case (4, .varint(let v)): h.abiMajor = UInt32(truncatingIfNeeded: v)
            case (5, .varint(let v)): h.abiMinor = UInt32(truncatingIfNeeded: v)
            case (6, .varint(let v)): h.capabilities = v
            case (7, .lengthDelimited(let range)): h.error = text(range)
            default: break
            }
        }
        return h
    }
}

/// One end of the socket pair: frames out (any thread, one at a time), frames in (one reader).
/// A frame is a 4-byte big-endian length and a `RunnerFrame`; anything longer than `maxFrame`
/// or undecodable ends the connection (the peer is broken or hostile).
final class FrameSocket: Sendable {
    let fd: Int32
    /// Results are at most `PT_MAX_RESULT_BYTES` and HTTP bodies a few MiB; frames carry one.
    static let maxFrame = 32 << 20
    private let writeLock = Mutex(())

    init(fd: Int32) { self.fd = fd }

    /// False when the peer is gone.
    @discardableResult
    func send(_ frame: RunnerFrame) -> Bool {
        guard let body = frame.encoded(), body.count <= Self.maxFrame else { return false }
        let n = UInt32(body.count)
        let bytes = [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + body
        return writeLock.withLock { _ in
            bytes.withUnsafeBytes { raw in
                var off = 0
                while off < raw.count {
                    let w = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                    if w < 0, errno == EINTR { continue }
                    if w <= 0 { return false }
                    off += w
                }
                return true
            }
        }
    }

    /// The next frame; nil at EOF, on an error or a frame that breaks the rules.
    func receive() -> RunnerFrame? {
        var header = [UInt8](repeating: 0, count: 4)
        guard readExactly(&header) else { return nil }
        let n = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard n <= Self.maxFrame else { return nil }
        var body = [UInt8](repeating: 0, count: n)
        guard readExactly(&body) else { return nil }
        return RunnerFrame.decode(body)
    }

    private func readExactly(_ buffer: inout [UInt8]) -> Bool {
        var off = 0
        let count = buffer.count
        while off < count {
            let r = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + off, count - off, 0) }
            if r < 0, errno == EINTR { continue }
            if r <= 0 { return false }
            off += r
        }
        return true
    }

    func close() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}
