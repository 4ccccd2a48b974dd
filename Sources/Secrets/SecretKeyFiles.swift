import Glibc

/// The key files named by `PIXTRACK_SECRETS_KEY_FILE` and `PIXTRACK_SECRETS_OLD_KEY_FILES`.
public enum SecretKeyFiles {
    public static let keyFileVariable = "PIXTRACK_SECRETS_KEY_FILE"
    public static let oldKeyFilesVariable = "PIXTRACK_SECRETS_OLD_KEY_FILES"

    /// The ring the environment describes; nil when no key file is named. Old key files are a
    /// comma-separated list (paths with commas are not supported).
    /// - Throws: `SecretsError.keyFile` naming the file (never its content).
    public static func keyring(environment env: [String: String]) throws(SecretsError) -> SecretKeyring? {
        let old = (env[oldKeyFilesVariable] ?? "").split(separator: ",").map { String($0).trimmedBlanks() }.filter { !$0.isEmpty }
        guard let path = env[keyFileVariable]?.trimmedBlanks(), !path.isEmpty else {
            if !old.isEmpty { throw .keyFile(path: old[0], reason: "\(oldKeyFilesVariable) is set but \(keyFileVariable) is not") }
            return nil
        }
        let current = try key(path: path)
        var olds: [SecretKey] = []
        for p in old { olds.append(try key(path: p)) }
        return SecretKeyring(current: current, old: olds)
    }

    public static func key(path: String) throws(SecretsError) -> SecretKey {
        let text = try read(path)
        do { return try SecretKey(base64: text) } catch {
            throw .keyFile(path: path, reason: "does not hold the base64 of 32 bytes (make one with: openssl rand -base64 32)")
        }
    }

    /// True when others than the owner may read `path` (logged as a warning by the server).
    public static func isReadableByOthers(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        return st.st_mode & (S_IRGRP | S_IROTH) != 0
    }

    private static func read(_ path: String) throws(SecretsError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .keyFile(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 512)
        while out.count <= 4096 {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .keyFile(path: path, reason: String(cString: strerror(errno))) }
            if n == 0 { break }
            out += buf.prefix(n)
        }
        guard out.count <= 4096 else { throw .keyFile(path: path, reason: "larger than a key file") }
        for i in buf.indices { buf[i] = 0 }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    func trimmedBlanks() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
