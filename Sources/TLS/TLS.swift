import SystemCalls
import COpenSSL
import Glibc
import Synchronization

/// A TLS set-up failure (unreadable or mismatched certificate and key, an unusable CA file).
/// The text names files and OpenSSL's reason, never key material.
public struct TLSError: Error, CustomStringConvertible {
    public let description: String
    init(_ what: String) {
        var buf = [CChar](repeating: 0, count: 256)
        pt_tls_error(&buf, buf.count)
        let reason = cText(buf)
        description = reason.isEmpty ? what : "\(what): \(reason)"
    }

    public init(plain text: String) { description = text }
}

/// One OpenSSL context (`SSL_CTX`): a server's certificate chain and key, or a client's trust
/// anchors. Immutable once built; connections hold a reference, so a reload never pulls the
/// context out from under a live connection (OpenSSL counts the references too).
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    let isServer: Bool
    /// "subject, valid until …" (servers), for the log lines at start-up and reload.
    public let summary: String

    /// A server context from PEM files: the certificate chain (leaf first) and its private key.
    /// Offers ALPN `h2` then `http/1.1`; TLS 1.2 and 1.3; no renegotiation, compression or tickets.
    public init(certificateChain: String, privateKey: String) throws {
        guard let ctx = pt_tls_server_ctx_new() else { throw TLSError("cannot create a TLS context") }
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateChain) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError("cannot read the TLS certificate chain \(certificateChain)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, privateKey, SSL_FILETYPE_PEM) == 1 else {
            SSL_CTX_free(ctx)
            let error = TLSError("cannot read the TLS private key \(privateKey)")
            // OpenSSL checks the pair as it loads the key.
            if error.description.contains("key values mismatch") {
                throw TLSError(plain: "the TLS private key \(privateKey) does not match the certificate \(certificateChain)")
            }
            throw error
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError("the TLS private key \(privateKey) does not match the certificate \(certificateChain)")
        }
        var buf = [CChar](repeating: 0, count: 512)
        pt_tls_certificate_summary(ctx, &buf, buf.count)
        self.ctx = ctx
        self.isServer = true
        self.summary = cText(buf)
    }

    /// A client context that verifies the server against `caFile` (PEM; nil: the system's
    /// trust store). ALPN offers `h2` only.
    public init(trusting caFile: String?) throws {
        guard let ctx = pt_tls_client_ctx_new(caFile) else {
            throw TLSError(caFile.map { "cannot load the CA certificates in \($0)" } ?? "cannot load the system's CA certificates")
        }
        self.ctx = ctx
        self.isServer = false
        self.summary = ""
    }

    deinit { SSL_CTX_free(ctx) }
}

/// The server's current context, swapped whole by `reload()` (SIGHUP): new connections get the
/// new certificate, open ones finish on the one they started with.
public final class TLSContextStore: Sendable {
    public let certificatePath: String
    public let keyPath: String
    private let context: Mutex<TLSContext>

    /// Loads the files now: a server that cannot serve TLS refuses to start.
    public init(certificatePath: String, keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        context = Mutex(try TLSContext(certificateChain: certificatePath, privateKey: keyPath))
    }

    public var current: TLSContext { context.withLock { $0 } }

    /// Reads both files again. On any error the old context stays in use (and the error is
    /// thrown for the log): a bad file on disk never takes TLS down.
    @discardableResult
    public func reload() throws -> TLSContext {
        let fresh = try TLSContext(certificateChain: certificatePath, privateKey: keyPath)
        context.withLock { $0 = fresh }
        return fresh
    }
}

/// One TLS connection's engine over two memory buffers: ciphertext in from the socket,
/// plaintext out to the protocol; plaintext in from the protocol, ciphertext out to the socket.
/// The caller owns the socket, so reading and writing keep exactly the shape they have without
/// TLS (one `read` per readiness event, coalesced writes, back-pressure on unsent bytes) and
/// OpenSSL never holds data the event loop cannot see. One thread at a time (the connection's
/// loop, or the blocking client's caller).
public final class TLSSession {
    private let ssl: OpaquePointer
    private let incoming: OpaquePointer
    private let outgoing: OpaquePointer
    private let context: TLSContext
    public private(set) var handshakeDone = false
    /// The protocol ALPN settled on ("h2", "http/1.1"; empty: none), once the handshake is done.
    public private(set) var alpn = ""

    public enum Outcome: Equatable, Sendable {
        case ok
        /// The peer sent close_notify: it will send nothing more.
        case closed
        /// A handshake or record failure, with OpenSSL's reason; any alert is in the outgoing
        /// buffer (`drain`).
        case failed(String)
    }

    /// Nil only when OpenSSL is out of memory. `serverName`: the name (or IP address) a client
    /// expects in the server's certificate (SNI too); `offerH2`: a client offers ALPN `h2`.
    public init?(_ context: TLSContext, serverName: String? = nil, offerH2: Bool = true) {
        guard let ssl = SSL_new(context.ctx) else { return nil }
        guard let rbio = pt_tls_mem_bio(), let wbio = pt_tls_mem_bio() else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_bio(ssl, rbio, wbio)  // the SSL owns both from here
        if context.isServer {
            SSL_set_accept_state(ssl)
        } else {
            guard let name = serverName, pt_tls_client_expect(ssl, name, offerH2 ? 1 : 0) == 1 else {
                SSL_free(ssl)
                return nil
            }
            SSL_set_connect_state(ssl)
        }
        self.ssl = ssl
        self.incoming = rbio
        self.outgoing = wbio
        self.context = context
    }

    deinit { SSL_free(ssl) }

    /// Client side: starts the handshake (the ClientHello lands in the outgoing buffer).
    public func startHandshake() -> Outcome {
        ERR_clear_error()
        return advanceHandshake()
    }

    /// Takes `cipher` (bytes read from the socket), then hands every plaintext byte it completes
    /// to `deliver`, in `scratch`-sized pieces (`scratch` may be the very buffer `cipher` is in:
    /// the bytes are copied first). `deliver` returns false to stop (the connection closed).
    public func receive(_ cipher: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer,
                 deliver: (UnsafeRawBufferPointer) -> Bool) -> Outcome {
        ERR_clear_error()
        if cipher.count > 0 {
            guard BIO_write(incoming, cipher.baseAddress, Int32(cipher.count)) == Int32(cipher.count) else {
                return .failed("out of memory")
            }
        }
        if !handshakeDone {
            let outcome = advanceHandshake()
            guard outcome == .ok, handshakeDone else { return outcome }
        }
        while true {
            let n = SSL_read(ssl, scratch.baseAddress, Int32(clamping: scratch.count))
            if n > 0 {
                guard deliver(UnsafeRawBufferPointer(rebasing: scratch[0..<Int(n)])) else { return .ok }
                continue
            }
            switch SSL_get_error(ssl, n) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .ok
            case SSL_ERROR_ZERO_RETURN: return .closed
            default: return .failed(Self.reason())
            }
        }
    }

    /// Encrypts all of `plain` into the outgoing buffer (a memory buffer takes everything).
    public func send(_ plain: UnsafeRawBufferPointer) -> Outcome {
        guard handshakeDone else { return .failed("data before the handshake finished") }
        guard plain.count > 0 else { return .ok }
        ERR_clear_error()
        var offset = 0
        while offset < plain.count {
            let n = SSL_write(ssl, plain.baseAddress! + offset, Int32(clamping: plain.count - offset))
            guard n > 0 else { return .failed(Self.reason()) }
            offset += Int(n)
        }
        return .ok
    }

    /// Queues close_notify (best effort; after it nothing more is sent).
    public func shutdown() {
        guard handshakeDone else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// Why the peer's certificate was refused (client side), nil when it was not.
    public var verificationFailure: String? {
        let result = SSL_get_verify_result(ssl)
        guard result != X509_V_OK else { return nil }
        return "certificate not trusted: " + String(cString: X509_verify_cert_error_string(result))
    }

    /// Ciphertext waiting for the socket.
    public var pendingOutput: Int { Int(BIO_ctrl_pending(outgoing)) }

    /// Moves the waiting ciphertext to the end of `wire`.
    public func drain(into wire: inout [UInt8]) {
        let bio = outgoing
        var pending = Int(BIO_ctrl_pending(bio))
        while pending > 0 {
            let start = wire.count
            wire.append(contentsOf: repeatElement(0, count: pending))
            let n = wire.withUnsafeMutableBytes { BIO_read(bio, $0.baseAddress! + start, Int32(clamping: pending)) }
            wire.removeLast(pending - max(0, Int(n)))
            guard n > 0 else { return }
            pending = Int(BIO_ctrl_pending(bio))
        }
    }

    private func advanceHandshake() -> Outcome {
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            handshakeDone = true
            var buf = [CChar](repeating: 0, count: 32)
            pt_tls_alpn(ssl, &buf, buf.count)
            alpn = cText(buf)
            return .ok
        }
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .ok
        default: return .failed(Self.reason())
        }
    }

    private static func reason() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        pt_tls_error(&buf, buf.count)
        let text = cText(buf)
        return text.isEmpty ? "connection error" : text
    }
}

/// Blocking use of a `TLSSession` on a connected socket (the CLI's client, the Redis tunnel).
extension TLSSession {
    /// A handshake failure on a blocking socket; `timedOut` when the deadline passed first.
    public struct HandshakeError: Error, CustomStringConvertible {
        public let description: String
        public let timedOut: Bool
    }

    /// Runs the client handshake on `fd` until `deadline`. Returns the plaintext that came with
    /// the server's last flight (to be read before anything else). The reasons name the usual
    /// mistakes: an untrusted or misnamed certificate, a plaintext server.
    public func handshake(fd: Int32, deadline: ContinuousClock.Instant) throws(HandshakeError) -> [UInt8] {
        func fail(_ why: String, timedOut: Bool = false) -> HandshakeError { HandshakeError(description: why, timedOut: timedOut) }
        var early: [UInt8] = []
        var outcome = startHandshake()
        var buf = [UInt8](repeating: 0, count: 16384)
        while true {
            var wire: [UInt8] = []
            drain(into: &wire)
            guard wire.withUnsafeBytes({ Self.sendAll(fd, $0) }) else { throw fail("the connection broke during the handshake") }
            if case .failed(let reason) = outcome {
                // A plaintext server answers the ClientHello with plaintext, which OpenSSL reads
                // as a record of an unknown version or an absurd length.
                let plaintext = reason.contains("wrong version number") || reason.contains("packet length too long")
                throw fail(verificationFailure ?? (plaintext ? "the server answered in plaintext: it does not speak TLS on this port" : reason))
            }
            if outcome == .closed { throw fail("the server closed the connection") }
            if handshakeDone { return early }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw fail("the handshake did not finish in time (does the server speak TLS on this port?)", timedOut: true) }
            let ready = (try? Syscalls.poll(fd, events: Int16(POLLIN), timeoutMs: Int32(min(Int64(left / .milliseconds(1)) + 1, 60_000)))) ?? 0
            guard ready != 0 else { continue }
            let got = buf.withUnsafeMutableBytes { try? Syscalls.recv(fd, into: $0) }
            guard case .processed(let n)? = got else { throw fail("the server closed the connection (is it speaking TLS?)") }
            outcome = buf.withUnsafeMutableBytes { raw in
                receive(UnsafeRawBufferPointer(rebasing: raw[0..<n]), scratch: raw) { plain in
                    early.append(contentsOf: plain)
                    return true
                }
            }
        }
    }

    /// Writes all of `bytes` to a blocking socket; false when the connection broke.
    public static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < bytes.count {
            guard case .processed(let w)? = try? Syscalls.send(fd, UnsafeRawBufferPointer(rebasing: bytes[off...]), flags: Int32(MSG_NOSIGNAL)),
                  w > 0 else { return false }
            off += w
        }
        return true
    }
}

/// A NUL-terminated C buffer's text.
private func cText(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
