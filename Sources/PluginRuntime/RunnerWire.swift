import SystemCalls
import Glibc
import ProtoCodec
import Synchronization

/// One frame of the host ⇄ plugin-runner protocol (`Proto/pixtrack/v1/runner.proto`), as a
/// Swift value. Both ends are built from the same sources, so the protocol has no versions.
package struct RunnerFrame: Sendable {
    package enum Kind: Int32, Sendable {
        case hello = 1, create, call, result, http, httpReply, log, destroy
    }

    /// `RunnerHello`: the plugin table as the runner validated it, or why the file was refused.
    package struct Hello: Sendable {
        package var name = "", version = "", description = ""
        package var abiMajor: UInt32 = 0, abiMinor: UInt32 = 0
        package var capabilities: UInt64 = 0
        package var error = ""

        package init(name: String = "", version: String = "", description: String = "", abiMajor: UInt32 = 0, abiMinor: UInt32 = 0,
                     capabilities: UInt64 = 0, error: String = "") {
            self.name = name
            self.version = version
            self.description = description
            self.abiMajor = abiMajor
            self.abiMinor = abiMinor
            self.capabilities = capabilities
            self.error = error
        }
    }

    package var kind: Kind
    package var call: UInt64 = 0
    package var payload: [UInt8] = []
    package var hasPayload = false
    package var instance: UInt64 = 0
    package var status: Int32 = 0
    package var message = ""
    package var problem = ""
    package var deadlineMs: Int64 = 0
    package var operation: Int32 = 0
    package var logLevel: Int32 = 0
    package var hello: Hello?

    package init(_ kind: Kind, call: UInt64 = 0) {
        self.kind = kind
        self.call = call
    }

    /// The protobuf encoding of `RunnerFrame` (runner.proto), written directly: frames cross
    /// the socket twice per call, and the descriptor-driven codec costs more than the call.
    /// `RunnerWireTests` checks it against `ProtoCodec` both ways.
    package func encoded() -> [UInt8]? {
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
    package static func decode(_ bytes: [UInt8]) -> RunnerFrame? {
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

/// One end of the socket pair: frames out (any thread), frames in (one reader at a time).
/// A frame is a 4-byte big-endian length and a `RunnerFrame`; anything longer than `maxFrame`
/// or undecodable ends the connection (the peer is broken or hostile).
///
/// Sending never waits for the peer on the calling thread: what the socket takes at once is
/// written there (the common case: a frame of a call is small), and the rest, with any frame
/// queued behind it meanwhile, is finished by a thread of its own. So the host can hand a frame
/// over from an async task without risking a cooperative thread on a runner that stopped
/// reading. Frames never interleave: one writer at a time, the others queue (at most
/// `maxQueued` bytes: past that the peer is not reading and the frame is refused).
package final class FrameSocket: @unchecked Sendable {
    package let fd: Int32
    /// Results are at most `PT_MAX_RESULT_BYTES` and HTTP bodies a few MiB; frames carry one.
    package static let maxFrame = 32 << 20
    package static let maxQueued = 64 << 20

    private struct Outbox {
        var writing = false
        var queue: [[UInt8]] = []
        var queuedBytes = 0
        var broken = false
    }
    private let outbox = Mutex(Outbox())

    // Invariant: the read buffer is used only by the current reader (one thread at a time; the
    // role changes hands through a lock, which orders the accesses).
    private var inbound = [UInt8](repeating: 0, count: 64 << 10)
    private var inStart = 0
    private var inEnd = 0

    package init(fd: Int32) { self.fd = fd }

    /// False when the frame cannot be sent: the peer is gone, or it stopped reading. True means
    /// written, or on its way (a peer that dies meanwhile fails the call in the reader).
    @discardableResult
    package func send(_ frame: RunnerFrame) -> Bool {
        guard let body = frame.encoded(), body.count <= Self.maxFrame else { return false }
        let n = UInt32(body.count)
        var bytes = [UInt8]()
        bytes.reserveCapacity(body.count + 4)
        bytes.append(contentsOf: [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)])
        bytes.append(contentsOf: body)
        enum Turn { case write, queued, refused }
        let turn: Turn = outbox.withLock { o in
            if o.broken { return .refused }
            guard o.writing else {
                o.writing = true
                return .write
            }
            guard o.queuedBytes + bytes.count <= Self.maxQueued else { return .refused }
            o.queue.append(bytes)
            o.queuedBytes += bytes.count
            return .queued
        }
        switch turn {
        case .refused: return false
        case .queued: return true
        case .write: return drain(bytes, from: 0, mayWait: false)
        }
    }

    /// Writes `first[from...]`, then the queue until it is empty. Without `mayWait`, a socket
    /// that is full hands the rest to a new thread (or, when none can start, waits here).
    private func drain(_ first: [UInt8], from: Int, mayWait: Bool) -> Bool {
        var current = first
        var offset = from
        while true {
            while offset < current.count {
                let sent = current.withUnsafeBytes { raw in
                    Result { () throws(SystemError) in
                        try Syscalls.send(fd, UnsafeRawBufferPointer(rebasing: raw[offset...]), flags: Int32(MSG_NOSIGNAL) | (mayWait ? 0 : Int32(MSG_DONTWAIT)))
                    }
                }
                if case .success(.processed(let w)) = sent, w > 0 {
                    offset += w
                    continue
                }
                if case .success(.wouldBlock) = sent, !mayWait {
                    let (rest, at) = (current, offset)
                    if PluginThread.start({ [self] in _ = drain(rest, from: at, mayWait: true) }) { return true }
                    return drain(rest, from: at, mayWait: true)
                }
                outbox.withLock { o in
                    o.broken = true
                    o.writing = false
                    o.queue = []
                    o.queuedBytes = 0
                }
                return false
            }
            let next: [UInt8]? = outbox.withLock { o in
                guard !o.queue.isEmpty else {
                    o.writing = false
                    return nil
                }
                let b = o.queue.removeFirst()
                o.queuedBytes -= b.count
                return b
            }
            guard let next else { return true }
            current = next
            offset = 0
        }
    }

    /// The next frame; nil at EOF, on an error or a frame that breaks the rules.
    package func receive() -> RunnerFrame? {
        guard fill(4) else { return nil }
        let n = inbound.withUnsafeBufferPointer { b in
            Int(b[inStart]) << 24 | Int(b[inStart + 1]) << 16 | Int(b[inStart + 2]) << 8 | Int(b[inStart + 3])
        }
        guard n <= Self.maxFrame else { return nil }
        inStart += 4
        if n <= inbound.count {
            guard fill(n) else { return nil }
            let body = Array(inbound[inStart..<(inStart + n)])
            inStart += n
            return RunnerFrame.decode(body)
        }
        // Larger than the buffer: what is buffered, then straight into the body.
        var body = [UInt8](repeating: 0, count: n)
        let have = inEnd - inStart
        body.replaceSubrange(0..<have, with: inbound[inStart..<inEnd])
        inStart = 0
        inEnd = 0
        var off = have
        while off < n {
            let got = body.withUnsafeMutableBytes { try? Syscalls.recv(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[off...])) }
            guard case .processed(let r)? = got else { return nil }
            off += r
        }
        return RunnerFrame.decode(body)
    }

    /// At least `count` (≤ the buffer's size) unread bytes buffered; false at EOF or an error.
    private func fill(_ count: Int) -> Bool {
        if inEnd - inStart >= count { return true }
        if inStart > 0 {
            let have = inEnd - inStart
            if have > 0 { inbound.withUnsafeMutableBufferPointer { b in b.baseAddress!.update(from: b.baseAddress! + inStart, count: have) } }
            inStart = 0
            inEnd = have
        }
        while inEnd < count {
            let got = inbound.withUnsafeMutableBytes { try? Syscalls.recv(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[inEnd...])) }
            guard case .processed(let r)? = got else { return false }
            inEnd += r
        }
        return true
    }

    package func close() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}
