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

    func encoded() -> [UInt8]? {
        var m = ProtoMessage("pixtrack.v1.RunnerFrame", ["kind": .enumValue(kind.rawValue)])
        if call != 0 { m["call"] = .uint64(call) }
        if !payload.isEmpty { m["payload"] = .bytes(payload) }
        if hasPayload { m["has_payload"] = .bool(true) }
        if instance != 0 { m["instance"] = .uint64(instance) }
        if status != 0 { m["status"] = .int32(status) }
        if !message.isEmpty { m["message"] = .string(message) }
        if !problem.isEmpty { m["problem"] = .string(problem) }
        if deadlineMs != 0 { m["deadline_ms"] = .int64(deadlineMs) }
        if operation != 0 { m["operation"] = .int32(operation) }
        if logLevel != 0 { m["log_level"] = .int32(logLevel) }
        if let h = hello {
            m["hello"] = .message(ProtoMessage("pixtrack.v1.RunnerHello", [
                "name": .string(h.name), "version": .string(h.version), "description": .string(h.description),
                "abi_major": .uint32(h.abiMajor), "abi_minor": .uint32(h.abiMinor),
                "capabilities": .uint64(h.capabilities), "error": .string(h.error),
            ]))
        }
        return try? ProtoCodec.encode(m)
    }

    static func decode(_ bytes: [UInt8]) -> RunnerFrame? {
        guard let m = try? ProtoCodec.decode(bytes, as: "pixtrack.v1.RunnerFrame"),
              let kind = Kind(rawValue: m.enumValue("kind")) else { return nil }
        var f = RunnerFrame(kind, call: m.uint64("call"))
        f.payload = m.bytes("payload")
        f.hasPayload = m.bool("has_payload")
        f.instance = m.uint64("instance")
        f.status = m.int32("status")
        f.message = m.string("message")
        f.problem = m.string("problem")
        f.deadlineMs = m.int64("deadline_ms")
        f.operation = m.int32("operation")
        f.logLevel = m.int32("log_level")
        if let h = m.message("hello") {
            f.hello = Hello(name: h.string("name"), version: h.string("version"), description: h.string("description"),
                            abiMajor: h.uint32("abi_major"), abiMinor: h.uint32("abi_minor"),
                            capabilities: h.uint64("capabilities"), error: h.string("error"))
        }
        return f
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
