import Foundation
import SystemTestSupport
import Testing
@testable import TLS

/// The TLS engine over memory buffers, a client and a server session wired to each other: the
/// handshake, ALPN, data both ways in record-sized pieces, close_notify, refusals. Certificates
/// come from the `openssl` command (Debian package `openssl`, installed by scripts/deps).
@Suite struct TLSSessionTests {
    typealias Certificates = TestCertificates

    /// Moves ciphertext between the two until neither has anything to say; returns what each
    /// side's `receive` delivered, and the last outcome of each.
    final class Pair {
        let client: TLSSession
        let server: TLSSession
        var toClient: [UInt8] = []
        var toServer: [UInt8] = []
        var clientGot: [UInt8] = []
        var serverGot: [UInt8] = []
        var clientOutcome = TLSSession.Outcome.ok
        var serverOutcome = TLSSession.Outcome.ok
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 10, alignment: 16)

        init(client: TLSSession, server: TLSSession) {
            self.client = client
            self.server = server
        }

        deinit { scratch.deallocate() }

        func pump() {
            for _ in 0..<64 {
                client.drain(into: &toServer)
                server.drain(into: &toClient)
                if toServer.isEmpty && toClient.isEmpty { return }
                if !toServer.isEmpty {
                    let bytes = toServer
                    toServer = []
                    var got: [UInt8] = []
                    serverOutcome = bytes.withUnsafeBytes { server.receive($0, scratch: scratch) { got += $0; return true } }
                    serverGot += got
                }
                if !toClient.isEmpty {
                    let bytes = toClient
                    toClient = []
                    var got: [UInt8] = []
                    clientOutcome = bytes.withUnsafeBytes { client.receive($0, scratch: scratch) { got += $0; return true } }
                    clientGot += got
                }
            }
            Issue.record("the sessions never went quiet")
        }
    }

    static func pair(_ certs: Certificates, trusting ca: String? = nil, name: String = "localhost") throws -> Pair {
        let server = try #require(TLSSession(try TLSContext(certificateChain: certs.certificate, privateKey: certs.key)))
        let client = try #require(TLSSession(try TLSContext(trusting: ca ?? certs.ca), serverName: name))
        let p = Pair(client: client, server: server)
        p.clientOutcome = client.startHandshake()
        return p
    }

    @Test func handshakeALPNAndDataBothWays() throws {
        let certs = try Certificates()
        let p = try Self.pair(certs)
        p.pump()
        #expect(p.client.handshakeDone && p.server.handshakeDone)
        #expect(p.client.alpn == "h2" && p.server.alpn == "h2")
        #expect(p.client.verificationFailure == nil)
        // Far more than one record (16 KiB) each way, with every byte value.
        let big = (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        #expect(big.withUnsafeBytes { p.client.send($0) } == .ok)
        #expect(Array("pong".utf8).withUnsafeBytes { p.server.send($0) } == .ok)
        p.pump()
        #expect(p.serverGot == big)
        #expect(p.clientGot == Array("pong".utf8))
        // close_notify: the other side learns the peer is done.
        p.client.shutdown()
        p.pump()
        #expect(p.serverOutcome == .closed)
    }

    @Test func aServerSignedByAnotherCAIsRefused() throws {
        let certs = try Certificates()
        let p = try Self.pair(certs, trusting: certs.otherCA)
        p.pump()
        guard case .failed = p.clientOutcome else { Issue.record("handshake went on: \(p.clientOutcome)"); return }
        #expect(!p.client.handshakeDone)
        #expect(p.client.verificationFailure?.contains("certificate not trusted") == true)
    }

    @Test func aCertificateForAnotherNameIsRefused() throws {
        let certs = try Certificates()
        let p = try Self.pair(certs, name: "pay.example.com")
        p.pump()
        #expect(p.client.verificationFailure?.contains("hostname mismatch") == true)
        #expect(!p.client.handshakeDone)
    }

    @Test func garbageBeforeTheHandshakeFails() throws {
        let certs = try Certificates()
        let server = try #require(TLSSession(try TLSContext(certificateChain: certs.certificate, privateKey: certs.key)))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { scratch.deallocate() }
        var delivered = 0
        let outcome = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8).withUnsafeBytes {
            server.receive($0, scratch: scratch) { delivered += $0.count; return true }
        }
        guard case .failed(let reason) = outcome else { Issue.record("accepted plaintext: \(outcome)"); return }
        #expect(!reason.isEmpty && delivered == 0)
        #expect(Array("late".utf8).withUnsafeBytes { server.send($0) } != .ok, "no data before a handshake")
    }

    @Test func contextErrorsNameTheFileAndTheReason() throws {
        let certs = try Certificates()
        #expect(throws: TLSError.self) { try TLSContext(certificateChain: "\(certs.dir)/nope.pem", privateKey: certs.key) }
        do {
            _ = try TLSContext(certificateChain: certs.certificate, privateKey: certs.foreignKey)
            Issue.record("a key of another certificate was accepted")
        } catch {
            #expect(String(describing: error).contains("does not match the certificate"))
        }
        #expect(throws: TLSError.self) { try TLSContext(trusting: "\(certs.dir)/nope.pem") }
    }

    @Test func aFailedReloadKeepsTheCurrentContext() throws {
        let certs = try Certificates()
        let copy = URL(fileURLWithPath: "\(certs.dir)/served.pem")
        try FileManager.default.copyItem(atPath: certs.certificate, toPath: copy.path)
        let store = try TLSContextStore(certificatePath: copy.path, keyPath: certs.key)
        let before = store.current
        try "-----BEGIN CERTIFICATE-----\ntruncated\n".write(to: copy, atomically: true, encoding: .utf8)
        #expect(throws: TLSError.self) { try store.reload() }
        #expect(store.current === before)
        try FileManager.default.removeItem(at: copy)
        try FileManager.default.copyItem(atPath: certs.certificate, toPath: copy.path)
        let fresh = try store.reload()
        #expect(store.current === fresh && fresh !== before)
        #expect(fresh.summary.contains("CN=localhost"))
    }
}
