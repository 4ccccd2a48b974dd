import COpenSSL

/// Envelope encryption of the secret columns (docs/secrets.md): AES-256-GCM from OpenSSL's
/// libcrypto, the library the TLS listeners already link, so no new dependency.
///
/// A sealed value is text: `pxs1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. `pxs1` is the
/// format version; the key id (16 hex digits) is derived from the key, never the key itself; the
/// nonce is 12 random bytes, the tag 16. The additional authenticated data is the value's header
/// (`pxs1:<key id>`) plus a context naming its column and row, so a value copied to another
/// column or another bot does not open.
public struct SecretKey: Sendable, Equatable {
    /// 16 lowercase hex digits: the first 8 bytes of SHA-256("pixtrack secrets key id" ‖ 0 ‖ key).
    public let id: String
    let bytes: [UInt8]

    public static let length = 32

    /// - Throws: `SecretsError.badKey` unless `bytes` is 32 bytes.
    public init(bytes: [UInt8]) throws(SecretsError) {
        guard bytes.count == Self.length else { throw .badKey("a key is \(Self.length) bytes, got \(bytes.count)") }
        self.bytes = bytes
        id = Hex.string(Array(SecretCrypto.sha256(Array("pixtrack secrets key id".utf8) + [0] + bytes).prefix(8)))
    }

    /// A key file holds the base64 of 32 random bytes (`openssl rand -base64 32`); blanks around it are ignored.
    public init(base64 text: String) throws(SecretsError) {
        let trimmed = text.filter { !$0.isWhitespace }
        guard let bytes = Base64.decode(trimmed) else { throw .badKey("not base64") }
        try self.init(bytes: bytes)
    }

    /// 32 fresh random bytes.
    public static func generate() throws(SecretsError) -> SecretKey {
        try SecretKey(bytes: try SecretCrypto.random(length))
    }

    /// What a key file holds for this key.
    public var base64: String { Base64.encode(bytes) }
}

/// What can go wrong; no case ever carries a key or a plaintext.
public enum SecretsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A key file could not be read or does not hold a key.
    case keyFile(path: String, reason: String)
    case badKey(String)
    /// The value is sealed with a key this process was not given.
    case unknownKey(keyID: String)
    /// The key is known but the value does not open: altered, truncated, or moved from another
    /// column or row.
    case notOpened(keyID: String)
    /// Not an envelope this version writes.
    case malformed
    /// No key is configured (`PIXTRACK_SECRETS_KEY_FILE`).
    case noKey
    /// libcrypto refused an operation.
    case crypto(String)

    public var description: String {
        switch self {
        case .keyFile(let path, let reason): "secrets key file \(path): \(reason)"
        case .badKey(let why): "bad secrets key: \(why)"
        case .unknownKey(let id): "a stored secret is sealed with key id \(id), which no configured key opens (PIXTRACK_SECRETS_KEY_FILE, PIXTRACK_SECRETS_OLD_KEY_FILES)"
        case .notOpened(let id): "a stored secret under key id \(id) does not open (altered, or moved from another column or bot)"
        case .malformed: "a stored secret is not a pxs1 envelope"
        case .noKey: "no secrets key is configured (PIXTRACK_SECRETS_KEY_FILE)"
        case .crypto(let what): "libcrypto: \(what)"
        }
    }
}

/// The current key (seals) and the old ones (still open, during a rotation).
public struct SecretKeyring: Sendable {
    public let current: SecretKey
    public let old: [SecretKey]

    public static let version = "pxs1"
    static let nonceLength = 12
    static let tagLength = 16

    public init(current: SecretKey, old: [SecretKey] = []) {
        self.current = current
        self.old = old.filter { $0.id != current.id }
    }

    /// Every key id this ring opens, the current one first.
    public var keyIDs: [String] { [current.id] + old.map(\.id) }

    public func key(id: String) -> SecretKey? {
        id == current.id ? current : old.first { $0.id == id }
    }

    /// The start of every value sealed with the current key (for `NOT LIKE prefix || '%'`).
    public var currentPrefix: String { Self.header(current.id) + ":" }

    static func header(_ keyID: String) -> String { "\(version):\(keyID)" }

    /// True when `text` has the shape of an envelope (it may still not open).
    public static func isEnvelope(_ text: String) -> Bool { keyID(of: text) != nil }

    /// The key id an envelope names, nil for anything else.
    public static func keyID(of text: String) -> String? {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == version, parts[1].utf8.count == 16, parts[1].utf8.allSatisfy(Hex.isDigit) else { return nil }
        return String(parts[1])
    }

    public func seal(_ plaintext: String, context: String) throws(SecretsError) -> String {
        try seal(Array(plaintext.utf8), context: context)
    }

    public func seal(_ plaintext: [UInt8], context: String) throws(SecretsError) -> String {
        let header = Self.header(current.id)
        let nonce = try SecretCrypto.random(Self.nonceLength)
        let (ciphertext, tag) = try SecretCrypto.sealGCM(key: current.bytes, nonce: nonce, aad: Self.aad(header, context),
                                                         plaintext: plaintext)
        return header + ":" + Base64.encode(nonce + ciphertext + tag, url: true)
    }

    /// - Throws: `.malformed`, `.unknownKey` (the ring lacks its key), `.notOpened` (the tag
    ///   does not verify: altered, or another column's or row's value).
    public func open(_ envelope: String, context: String) throws(SecretsError) -> [UInt8] {
        guard let id = Self.keyID(of: envelope) else { throw .malformed }
        guard let key = key(id: id) else { throw .unknownKey(keyID: id) }
        let body = envelope.utf8.dropFirst(Self.header(id).utf8.count + 1)
        guard let raw = Base64.decode(String(decoding: body, as: UTF8.self), url: true),
              raw.count >= Self.nonceLength + Self.tagLength else { throw .notOpened(keyID: id) }
        let nonce = Array(raw.prefix(Self.nonceLength))
        let tag = Array(raw.suffix(Self.tagLength))
        let ciphertext = Array(raw.dropFirst(Self.nonceLength).dropLast(Self.tagLength))
        guard let plain = try SecretCrypto.openGCM(key: key.bytes, nonce: nonce, aad: Self.aad(Self.header(id), context),
                                                   ciphertext: ciphertext, tag: tag) else {
            throw .notOpened(keyID: id)
        }
        return plain
    }

    public func openString(_ envelope: String, context: String) throws(SecretsError) -> String {
        let bytes = try open(envelope, context: context)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw .notOpened(keyID: Self.keyID(of: envelope) ?? "") }
        return s
    }

    static func aad(_ header: String, _ context: String) -> [UInt8] { Array(header.utf8) + [0] + Array(context.utf8) }
}

/// The context (AAD) of each secret column: the column and the row it belongs to.
public enum SecretColumn: String, Sendable, CaseIterable {
    case capiToken = "capi_token"
    case gatewayCredentials = "gateway_credentials"
    case notifySecret = "notify_secret"

    public func context(botID: Int64) -> String { "bots.\(rawValue):\(botID)" }
}
