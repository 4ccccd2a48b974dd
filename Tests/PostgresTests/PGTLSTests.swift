import Foundation
import Postgres
import SystemTestSupport
import Testing

/// DATABASE_URL's TLS parameters reach libpq as written: `sslmode=verify-full` encrypts and
/// checks the chain and the host name against a server with ssl=on; the wrong CA or a server
/// without TLS is refused.
@Suite struct PGTLSTests {
    @Test func verifyFullEncryptsAndChecksTheServer() async throws {
        let certs = try TestCertificates(names: ["localhost"])
        let server = try await PrivatePostgres.launch(tls: certs)
        do {
            try await scenario(server, certs)
        } catch {
            await server.destroy()
            throw error
        }
        await server.destroy()
    }

    private func scenario(_ server: PrivatePostgres, _ certs: TestCertificates) async throws {
        let verified = "postgresql://postgres@localhost:\(server.port)/postgres?sslmode=verify-full&sslrootcert=\(certs.ca)"
        let pool = try PGTestEnv.pool(url: verified, maxConnections: 1, connectTimeout: .seconds(10))
        let row = try await pool.withConnection {
            try $0.query("SELECT ssl::text AS ssl, version AS v FROM pg_stat_ssl WHERE pid = pg_backend_pid()").first!
        }
        #expect(try row.string("ssl") == "true")
        #expect(try row.string("v")?.hasPrefix("TLSv1.") == true)
        await pool.close()

        for (url, expected) in [
            ("postgresql://postgres@localhost:\(server.port)/postgres?sslmode=verify-full&sslrootcert=\(certs.otherCA)", "certificate verify failed"),
            ("postgresql://postgres@127.0.0.1:\(server.port)/postgres?sslmode=verify-full&sslrootcert=\(certs.ca)", "does not match host name"),
        ] {
            let refused = try PGTestEnv.pool(url: url, maxConnections: 1, connectTimeout: .seconds(10))
            do {
                _ = try await refused.withConnection { try $0.query("SELECT 1 AS one") }
                Issue.record("connected with \(url)")
            } catch let error as PGError {
                #expect(error.serverMessage?.contains(expected) == true, "\(error): \(error.serverMessage ?? "")")
            }
            await refused.close()
        }
    }

    @Test func sslmodeRequireAgainstAPlaintextServerIsRefused() async throws {
        let plain = try PGTestEnv.databaseURL()
        let url = plain + (plain.contains("?") ? "&" : "?") + "sslmode=require"
        let pool = try PGTestEnv.pool(url: url, maxConnections: 1)
        do {
            _ = try await pool.withConnection { try $0.query("SELECT 1 AS one") }
            Issue.record("sslmode=require connected to a server without TLS")
        } catch let error as PGError {
            #expect(error.serverMessage?.contains("does not support SSL") == true, "\(error): \(error.serverMessage ?? "")")
        }
        await pool.close()
    }
}
