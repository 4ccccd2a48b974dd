import Glibc
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
        var w = WireWriter()
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
            w.bytes(12, hw.out, always: true)
        }
        return w.out
    }

    static func decode(_ bytes: [UInt8]) -> RunnerFrame? {
        var r = WireReader(bytes[...])
        var f = RunnerFrame(.hello)
        var kind: Kind?
        while !r.atEnd {
            guard let (field, type) = r.key() else { return nil }
            switch (field, type) {
            case (1, 0): guard let v = r.varint() else { return nil }; kind = Kind(rawValue: Int32(truncatingIfNeeded: v))
            case (2, 0): guard let v = r.varint() else { return nil }; f.call = v
            case (3, 2): guard let v = r.bytes() else { return nil }; f.payload = Array(v)
            case (4, 0): guard let v = r.varint() else { return nil }; f.hasPayload = v != 0
            case (5, 0): guard let v = r.varint() else { return nil }; f.instance = v
            case (6, 0): guard let v = r.varint() else { return nil }; f.status = Int32(truncatingIfNeeded: v)
            case (7, 2): guard let v = r.bytes() else { return nil }; f.message = String(decoding: v, as: UTF8.self)
            case (8, 2): guard let v = r.bytes() else { return nil }; f.problem = String(decoding: v, as: UTF8.self)
            case (9, 0): guard let v = r.varint() else { return nil }; f.deadlineMs = Int64(bitPattern: v)
            case (10, 0): guard let v = r.varint() else { return nil }; f.operation = Int32(truncatingIfNeeded: v)
            case (11, 0): guard let v = r.varint() else { return nil }; f.logLevel = Int32(truncatingIfNeeded: v)
            case (12, 2):
                guard let v = r.bytes(), let h = decodeHello(v) else { return nil }
                f.hello = h
            default:
                guard r.skip(type) else { return nil }
            }
        }
        guard let kind else { return nil }
        f.kind = kind
        return f
    }

    private static func decodeHello(_ bytes: ArraySlice<UInt8>) -> Hello? {
        var r = WireReader(bytes)
        var h = Hello()
        while !r.atEnd {
            guard let (field, type) = r.key() else { return nil }
            switch (field, type) {
            case (1, 2): guard let v = r.bytes() else { return nil }; h.name = String(decoding: v, as: UTF8.self)
            case (2, 2): guard let v = r.bytes() else { return nil }; h.version = String(decoding: v, as: UTF8.self)
            case (3, 2): guard let v = r.bytes() else { return nil }; h.description = String(decoding: v, as: UTF8.self)
            case (4, 0): guard let v = r.varint() else { return nil }; h.abiMajor = UInt32(truncatingIfNeeded: v)
            case (5, 0): guard let v = r.varint() else { return nil }; h.abiMinor = UInt32(truncatingIfNeeded: v)
            case (6, 0): guard let v = r.varint() else { return nil }; h.capabilities = v
            case (7, 2): guard let v = r.bytes() else { return nil }; h.error = String(decoding: v, as: UTF8.self)
            default: guard r.skip(type) else { return nil }
            }
        }
        return h
    }
}

/// Protobuf wire writing for the frames: proto3 rules (default values are not written).
struct WireWriter {
    var out: [UInt8] = []

    private mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ v: UInt64) {
        guard v != 0 else { return }
        raw(UInt64(field << 3))
        raw(v)
    }

    mutating func bytes(_ field: Int, _ b: [UInt8], always: Bool = false) {
        guard always || !b.isEmpty else { return }
        raw(UInt64(field << 3 | 2))
        raw(UInt64(b.count))
        out.append(contentsOf: b)
    }
}

/// Protobuf wire reading for the frames; nil on anything malformed.
struct WireReader {
    private var rest: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    var atEnd: Bool { rest.isEmpty }

    mutating func varint() -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while let b = rest.first {
            rest = rest.dropFirst()
            guard shift < 64 else { return nil }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
        }
        return nil
    }

    mutating func key() -> (Int, Int)? {
        guard let k = varint(), k >> 3 > 0, k >> 3 <= UInt64(Int32.max) else { return nil }
        return (Int(k >> 3), Int(k & 7))
    }

    mutating func bytes() -> ArraySlice<UInt8>? {
        guard let n = varint(), n <= UInt64(rest.count) else { return nil }
        let b = rest.prefix(Int(n))
        rest = rest.dropFirst(Int(n))
        return b
    }

    /// Skips a field this end does not know (wire types 0, 1, 2 and 5).
    mutating func skip(_ type: Int) -> Bool {
        switch type {
        case 0: return varint() != nil
        case 1: guard rest.count >= 8 else { return false }; rest = rest.dropFirst(8); return true
        case 2: return bytes() != nil
        case 5: guard rest.count >= 4 else { return false }; rest = rest.dropFirst(4); return true
        default: return false
        }
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
