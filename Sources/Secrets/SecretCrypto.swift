import COpenSSL

/// The libcrypto calls behind `SecretKeyring`: AES-256-GCM, random bytes, SHA-256.
enum SecretCrypto {
    static func random(_ count: Int) throws(SecretsError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        guard ok == 1 else { throw .crypto("RAND_bytes failed") }
        return out
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        _ = bytes.withUnsafeBytes { b in
            out.withUnsafeMutableBufferPointer { EVP_Digest(b.baseAddress, b.count, $0.baseAddress, &len, EVP_sha256(), nil) }
        }
        return out
    }

    static func sealGCM(key: [UInt8], nonce: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws(SecretsError) -> ([UInt8], [UInt8]) {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw .crypto("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var tag = [UInt8](repeating: 0, count: SecretKeyring.tagLength)
        var n: Int32 = 0
        var total: Int32 = 0
        guard EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1,
              EVP_EncryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1 else { throw .crypto("AES-256-GCM init failed") }
        let ok = out.withUnsafeMutableBufferPointer { o -> Bool in
            guard EVP_EncryptUpdate(ctx, o.baseAddress, &n, plaintext, Int32(plaintext.count)) == 1 else { return false }
            total = n
            guard EVP_EncryptFinal_ex(ctx, o.baseAddress! + Int(total), &n) == 1 else { return false }
            total += n
            return true
        }
        guard ok, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(tag.count), &tag) == 1 else {
            throw .crypto("AES-256-GCM seal failed")
        }
        return (Array(out.prefix(Int(total))), tag)
    }

    /// nil when the tag does not verify.
    static func openGCM(key: [UInt8], nonce: [UInt8], aad: [UInt8], ciphertext: [UInt8], tag: [UInt8]) throws(SecretsError) -> [UInt8]? {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw .crypto("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: ciphertext.count + 16)
        var tag = tag
        var n: Int32 = 0
        var total: Int32 = 0
        guard EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1,
              EVP_DecryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1 else { throw .crypto("AES-256-GCM init failed") }
        let ok = out.withUnsafeMutableBufferPointer { o -> Bool in
            guard EVP_DecryptUpdate(ctx, o.baseAddress, &n, ciphertext, Int32(ciphertext.count)) == 1 else { return false }
            total = n
            guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(tag.count), &tag) == 1 else { return false }
            // The tag is checked here: a failure means altered bytes, another key or another context.
            guard EVP_DecryptFinal_ex(ctx, o.baseAddress! + Int(total), &n) == 1 else { return false }
            total += n
            return true
        }
        if !ok {
            for i in out.indices { out[i] = 0 }
            return nil
        }
        return Array(out.prefix(Int(total)))
    }
}

enum Hex {
    static func string(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    static func isDigit(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }
}

/// Standard base64 (key files) and unpadded base64url (envelopes).
enum Base64 {
    private static let standard = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlSafe = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ bytes: [UInt8], url: Bool = false) -> String {
        let table = url ? urlSafe : standard
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i]), b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let v = b0 << 16 | b1 << 8 | b2
            out.append(table[Int(v >> 18 & 63)])
            out.append(table[Int(v >> 12 & 63)])
            if i + 1 < bytes.count { out.append(table[Int(v >> 6 & 63)]) } else if !url { out.append(UInt8(ascii: "=")) }
            if i + 2 < bytes.count { out.append(table[Int(v & 63)]) } else if !url { out.append(UInt8(ascii: "=")) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil for anything that is not canonical base64 of the chosen alphabet.
    static func decode(_ text: String, url: Bool = false) -> [UInt8]? {
        let table = url ? urlSafe : standard
        var map = [Int16](repeating: -1, count: 256)
        for (i, c) in table.enumerated() { map[Int(c)] = Int16(i) }
        var chars = Array(text.utf8)
        if !url {
            guard chars.count % 4 == 0 else { return nil }
            var pad = 0
            while pad < 2, chars.last == UInt8(ascii: "=") { chars.removeLast(); pad += 1 }
        }
        guard chars.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        for c in chars {
            let v = map[Int(c)]
            guard v >= 0 else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        // Left-over bits must be zero, so each value has one encoding.
        guard acc & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}
