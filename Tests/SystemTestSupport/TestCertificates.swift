import Foundation
import Glibc

/// A throwaway CA, a leaf certificate it signed, and an unrelated second CA, made with the
/// `openssl` command (Debian package `openssl`, installed by scripts/deps) in a temporary
/// folder removed on deinit. `names` go into the leaf's subjectAltName (DNS names or IPs).
public final class TestCertificates: @unchecked Sendable {
    public let dir: String
    public var ca: String { "\(dir)/ca.pem" }
    public var otherCA: String { "\(dir)/other.pem" }
    public var certificate: String { "\(dir)/leaf.pem" }
    public var key: String { "\(dir)/leaf.key" }
    /// The CA's own key: a valid key that belongs to another certificate.
    public var foreignKey: String { "\(dir)/ca.key" }

    public init(names: [String] = ["localhost", "127.0.0.1"]) throws {
        var template = Array("/tmp/pixtrack-certs.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        dir = String(cString: made)
        let san = names.map { $0.first?.isNumber == true ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        try "subjectAltName=\(san)\n".write(toFile: "\(dir)/san.cnf", atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        func path(_ name: String) -> String { "\(dir)/\(name)" }
        try openssl(["req", "-x509"] + ec + ["-days", "2", "-subj", "/CN=test CA", "-keyout", path("ca.key"), "-out", ca])
        try openssl(["req", "-x509"] + ec + ["-days", "2", "-subj", "/CN=other CA", "-keyout", path("other.key"), "-out", otherCA])
        try openssl(["req"] + ec + ["-subj", "/CN=\(names.first ?? "localhost")", "-keyout", key, "-out", path("leaf.csr")])
        try openssl(["x509", "-req", "-in", path("leaf.csr"), "-CA", ca, "-CAkey", path("ca.key"), "-CAcreateserial",
                     "-CAserial", path("ca.srl"), "-days", "2", "-extfile", path("san.cnf"), "-out", certificate])
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    private func openssl(_ args: [String]) throws {
        let result = try spawnAndWait("/usr/bin/openssl", args)
        guard result.status == 0 else { throw CommandFailed(what: "openssl \(args.first ?? "")", output: result.output) }
    }
}
