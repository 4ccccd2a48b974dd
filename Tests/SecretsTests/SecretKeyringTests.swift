import Foundation
import Testing
@testable import Secrets

/// AES-256-GCM envelopes: round trip, tampering, wrong key, wrong column/row, key ids, key files.
@Suite struct SecretKeyringTests {
    let a = try! SecretKey.generate()
    let b = try! SecretKey.generate()

    @Test func roundTripUnderTheCurrentKey() throws {
        let ring = SecretKeyring(current: a)
        let context = SecretColumn.capiToken.context(botID: 42)
        for text in ["", "x", "EAAB-marker-token-✓", String(repeating: "k", count: 5000)] {
            let sealed = try ring.seal(text, context: context)
            #expect(sealed.hasPrefix("pxs1:\(a.id):"))
            #expect(text.count < 4 || !sealed.contains(text))
            #expect(try ring.openString(sealed, context: context) == text)
        }
        // A fresh nonce each time: the same value never seals to the same text.
        #expect(try ring.seal("same", context: context) != (try ring.seal("same", context: context)))
    }

    @Test func everyAlteredByteIsRefused() throws {
        let ring = SecretKeyring(current: a)
        let context = SecretColumn.notifySecret.context(botID: 7)
        let sealed = Array(try ring.seal("notify-secret-value-0123456789abcdef", context: context).utf8)
        let bodyStart = "pxs1:".utf8.count + 16 + 1
        var refused = 0
        for i in bodyStart..<sealed.count {
            var t = sealed
            t[i] = t[i] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            do {
                _ = try ring.open(String(decoding: t, as: UTF8.self), context: context)
            } catch let e {
                #expect(e == .notOpened(keyID: a.id))
                refused += 1
            }
        }
        #expect(refused == sealed.count - bodyStart)
        // Truncated bodies too.
        for cut in [1, 10, 20] {
            #expect(throws: SecretsError.notOpened(keyID: a.id)) {
                try ring.open(String(decoding: sealed.dropLast(cut), as: UTF8.self), context: context)
            }
        }
    }

    @Test func anotherColumnOrBotDoesNotOpen() throws {
        let ring = SecretKeyring(current: a)
        let sealed = try ring.seal("{\"api_key\":\"k\"}", context: SecretColumn.gatewayCredentials.context(botID: 1))
        #expect(throws: SecretsError.notOpened(keyID: a.id)) { try ring.open(sealed, context: SecretColumn.gatewayCredentials.context(botID: 2)) }
        #expect(throws: SecretsError.notOpened(keyID: a.id)) { try ring.open(sealed, context: SecretColumn.capiToken.context(botID: 1)) }
    }

    @Test func wrongKeyAndKeyIDLookup() throws {
        let sealedA = try SecretKeyring(current: a).seal("t", context: "c")
        // A ring without `a` names the key id it lacks.
        #expect(throws: SecretsError.unknownKey(keyID: a.id)) { try SecretKeyring(current: b).open(sealedA, context: "c") }
        // A forged header that names b's id over a's body is b's to open, and b refuses it.
        let forged = sealedA.replacingOccurrences(of: a.id, with: b.id)
        #expect(throws: SecretsError.notOpened(keyID: b.id)) { try SecretKeyring(current: b).open(forged, context: "c") }
        // During a rotation the old key still opens, the current key seals.
        let rotating = SecretKeyring(current: b, old: [a])
        #expect(try rotating.openString(sealedA, context: "c") == "t")
        #expect(SecretKeyring.keyID(of: try rotating.seal("t", context: "c")) == b.id)
        #expect(rotating.keyIDs == [b.id, a.id])
        #expect(rotating.key(id: a.id) == a && rotating.key(id: "0123456789abcdef") == nil)
    }

    @Test func keyIDsAreStableAndRevealNoKeyBytes() throws {
        let bytes = [UInt8](repeating: 7, count: 32)
        let k1 = try SecretKey(bytes: bytes), k2 = try SecretKey(bytes: bytes)
        #expect(k1.id == k2.id && k1.id.utf8.count == 16)
        #expect(k1.id != a.id && a.id != b.id)
        #expect(!k1.base64.contains(k1.id))
        #expect(throws: SecretsError.self) { try SecretKey(bytes: [1, 2, 3]) }
    }

    @Test func malformedValuesAreNotEnvelopes() throws {
        let ring = SecretKeyring(current: a)
        for text in ["", "plain-token", "pxs1:", "pxs1:zz:abc", "pxs2:\(a.id):abc", "{\"api_key\":\"x\"}"] {
            #expect(!SecretKeyring.isEnvelope(text))
            #expect(throws: SecretsError.malformed) { try ring.open(text, context: "c") }
        }
    }

    @Test func keyFilesAreReadAndBadOnesNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("secrets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("current.key").path, old = dir.appendingPathComponent("old.key").path
        let bad = dir.appendingPathComponent("bad.key").path
        try (a.base64 + "\n").write(toFile: good, atomically: true, encoding: .utf8)
        try b.base64.write(toFile: old, atomically: true, encoding: .utf8)
        try "c2hvcnQ=".write(toFile: bad, atomically: true, encoding: .utf8)
        let ring = try #require(try SecretKeyFiles.keyring(environment: ["PIXTRACK_SECRETS_KEY_FILE": good,
                                                                         "PIXTRACK_SECRETS_OLD_KEY_FILES": "\(old), \(good)"]))
        #expect(ring.current == a && ring.old == [b])
        #expect(try SecretKeyFiles.keyring(environment: [:]) == nil)
        do {
            _ = try SecretKeyFiles.keyring(environment: ["PIXTRACK_SECRETS_KEY_FILE": bad])
            Issue.record("a short key was accepted")
        } catch let e {
            #expect(e.description.contains(bad) && !e.description.contains("c2hvcnQ"))
        }
        #expect(throws: SecretsError.self) { try SecretKeyFiles.keyring(environment: ["PIXTRACK_SECRETS_KEY_FILE": dir.appendingPathComponent("missing").path]) }
        #expect(throws: SecretsError.self) { try SecretKeyFiles.keyring(environment: ["PIXTRACK_SECRETS_OLD_KEY_FILES": old]) }
    }

    @Test func base64RoundTrips() throws {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
            #expect(Base64.decode(Base64.encode(bytes, url: true), url: true) == bytes)
            #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
        }
        #expect(Base64.decode("QQ") == nil && Base64.decode("Q===") == nil && Base64.decode("QR==") == nil)
    }
}
