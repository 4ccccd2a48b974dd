import Foundation
import JSONKit
import MetaCAPI
import Postgres
import RPC
import Synchronization

/// A required environment variable is missing: the test fails with this message (never skips).
struct MissingEnvironment: Error, CustomStringConvertible {
    let name: String
    var description: String {
        "\(name) is not set. Run through `make test`, or: scripts/services temp swift test --filter MetaCAPITests"
    }
}

enum MetaTestEnv {
    static func databaseURL() throws -> String {
        guard let v = ProcessInfo.processInfo.environment["DATABASE_URL"], !v.isEmpty else { throw MissingEnvironment(name: "DATABASE_URL") }
        return v
    }

    /// A pool whose search_path is a fresh schema holding a migrated outbox: tests never see
    /// each other's events.
    static func isolatedPool() async throws -> PGPool { try await isolated().pool }

    /// The pool and the URL that reaches the same schema (for a second, blocking connection).
    static func isolated() async throws -> (pool: PGPool, url: String) {
        let url = try databaseURL()
        let schema = "m_\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
        let admin = try PGPool(PGPoolConfiguration(url: url), logger: Logger(minimum: .error))
        try await admin.withConnection { try $0.execute("CREATE SCHEMA \(schema)") }
        await admin.close()
        let schemaURL = url + (url.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
        var config = PGPoolConfiguration(url: schemaURL)
        config.maxConnections = 4
        let pool = try PGPool(config, logger: Logger(minimum: .error))
        _ = try await PGMigrator(pool: pool, migrations: MetaMigrations.all, logger: Logger(minimum: .error)).migrate()
        return (pool, schemaURL)
    }
}

/// An in-process Graph API: answers from a script (then 200), records every accepted event id.
final class ScriptedTransport: MetaTransport, Sendable {
    struct Request: Sendable {
        let url: String
        let eventIDs: [String]
        let body: JSON
    }

    private let state = Mutex<(script: [MetaHTTPResponse], requests: [Request], accepted: [String], observed: [String])>(([], [], [], []))
    let delay: Duration
    let rejectEventIDs: Set<String>
    /// Runs while the request is "on the wire"; what it returns is kept in `observed`.
    let onPost: (@Sendable () -> String?)?

    init(script: [MetaHTTPResponse] = [], delay: Duration = .zero, rejectEventIDs: Set<String> = [],
         onPost: (@Sendable () -> String?)? = nil) {
        self.delay = delay
        self.rejectEventIDs = rejectEventIDs
        self.onPost = onPost
        state.withLock { $0.script = script }
    }

    func post(url: String, body: [UInt8], timeoutMs: Int) -> MetaHTTPResponse {
        if let onPost, let seen = onPost() { state.withLock { $0.observed.append(seen) } }
        if delay > .zero { usleep(UInt32(delay.components.attoseconds / 1_000_000_000_000 + delay.components.seconds * 1_000_000)) }
        let json = (try? JSON.parse(body)) ?? .null
        let ids = (json["data"]?.array ?? []).compactMap { $0["event_id"]?.string }
        return state.withLock { s in
            s.requests.append(Request(url: url, eventIDs: ids, body: json))
            if !s.script.isEmpty { return s.script.removeFirst() }
            if ids.contains(where: rejectEventIDs.contains) {
                return MetaHTTPResponse(status: 400, body: Array(#"{"error":{"code":100,"message":"Invalid parameter"}}"#.utf8))
            }
            s.accepted += ids
            return MetaHTTPResponse(status: 200, body: Array(#"{"events_received":1}"#.utf8))
        }
    }

    var requests: [Request] { state.withLock { $0.requests } }
    var accepted: [String] { state.withLock { $0.accepted } }
    var observed: [String] { state.withLock { $0.observed } }
}

extension MetaHTTPResponse {
    static func graphError(_ status: Int, code: Int, transient: Bool = false) -> MetaHTTPResponse {
        MetaHTTPResponse(status: status, body: Array("{\"error\":{\"code\":\(code),\"message\":\"m\",\"is_transient\":\(transient)}}".utf8))
    }
}

func testEvent(_ id: String, pixel: String = "111", time: Int64 = Int64(Date().timeIntervalSince1970)) -> MetaEvent {
    MetaEvent.pageView(pixelID: pixel, eventID: id, eventTime: time, eventSourceURL: "https://x.test/go/a",
                       clientIP: "203.0.113.1", userAgent: "UA", fbp: "fb.1.1700000000000.1", fbc: "", fbclid: "abc")
}

func fastConfiguration() -> MetaSenderConfiguration {
    var c = MetaSenderConfiguration()
    c.baseURL = "http://meta.test"
    c.pollInterval = .milliseconds(20)
    c.backoff = MetaBackoff(base: .milliseconds(1), maximum: .milliseconds(5))
    c.depthRefresh = .milliseconds(50)
    return c
}

func statuses(_ pool: PGPool) async throws -> [String: String] {
    try await pool.withConnection { c in
        var out: [String: String] = [:]
        for r in try c.query("SELECT event_id, status FROM meta_events") { out[try r.string("event_id") ?? ""] = try r.string("status") }
        return out
    }
}
