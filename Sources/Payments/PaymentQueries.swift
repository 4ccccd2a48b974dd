import Postgres
import RPC

/// Filters of `ListPayments`.
public struct PaymentFilter: Sendable, Equatable {
    public var statuses: [PaymentStatus] = []
    public var botID: Int64 = 0
    public var telegramUserID: Int64 = 0
    public var gateway = ""
    public var createdAfterMs: Int64 = 0
    public var createdBeforeMs: Int64 = 0
    /// nil: any; true: flagged only; false: not flagged.
    public var flagged: Bool?
    public var pageSize = 50
    public var pageToken = ""
    public init() {}
}

extension PaymentService {
    public func get(id: Int64) async throws -> Payment? {
        return try await pool.withConnection { try PaymentRepository.get(id: id, on: $0) }
    }

    public func get(reference: String) async throws -> Payment? {
        if let id = Payment.id(fromReference: reference) { return try await get(id: id) }
        guard Payment.isLegacyID(reference) else { throw RPCError(.invalidArgument, "reference must be PAY-{id}") }
        return try await pool.withConnection { try PaymentRepository.get(legacyID: reference, on: $0) }
    }

    public func get(gateway: String, transactionID: String) async throws -> Payment? {
        return try await pool.withConnection { try PaymentRepository.get(gateway: gateway, transactionID: transactionID, on: $0) }
    }

    public func get(gateway: String, gatewayHash: String) async throws -> Payment? {
        return try await pool.withConnection { try PaymentRepository.get(gateway: gateway, gatewayHash: gatewayHash, on: $0) }
    }

    /// Newest first; the page token is the last id of the previous page.
    public func list(_ f: PaymentFilter) async throws -> (payments: [Payment], nextPageToken: String) {
        var conditions: [String] = []
        var params: [PGValue?] = []
        func add(_ sql: (String) -> String, _ value: PGValue) {
            params.append(value)
            conditions.append(sql("$\(params.count)"))
        }
        if !f.statuses.isEmpty { add({ "status = ANY(\($0)::text[])" }, .text("{" + f.statuses.map(\.rawValue).joined(separator: ",") + "}")) }
        if f.botID != 0 { add({ "bot_id = \($0)" }, .int(f.botID)) }
        if f.telegramUserID != 0 { add({ "telegram_user_id = \($0)" }, .int(f.telegramUserID)) }
        if !f.gateway.isEmpty { add({ "gateway = \($0)" }, .text(f.gateway)) }
        if f.createdAfterMs > 0 { add({ "created_at >= to_timestamp(\($0)::bigint / 1000.0)" }, .int(f.createdAfterMs)) }
        if f.createdBeforeMs > 0 { add({ "created_at < to_timestamp(\($0)::bigint / 1000.0)" }, .int(f.createdBeforeMs)) }
        if let flagged = f.flagged { add({ "flagged = \($0)" }, .bool(flagged)) }
        if !f.pageToken.isEmpty {
            guard f.pageToken.hasPrefix("p"), let last = Int64(f.pageToken.dropFirst()), last > 0 else {
                throw RPCError(.invalidArgument, "page_token is not one this server issued")
            }
            add({ "id < \($0)" }, .int(last))
        }
        let size = min(max(f.pageSize <= 0 ? 50 : f.pageSize, 1), 500)
        params.append(.int(size + 1))
        let sql = "SELECT \(Payment.columns) FROM payments"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + " ORDER BY id DESC LIMIT $\(params.count)"
        let p = params
        var rows = try await pool.withConnection { c in try c.query(sql, p).map(Payment.init(row:)) }
        var next = ""
        if rows.count > size {
            rows.removeLast()
            next = "p\(rows.last!.id)"
        }
        return (rows, next)
    }

    /// Counts for `/metrics` gauges: payments by status, flagged payments, parked webhooks.
    public func gaugeCounts() async throws -> [String: Int] {
        try await pool.withConnection { c in
            var out: [String: Int] = [:]
            for row in try c.query("SELECT status, count(*) AS n FROM payments GROUP BY status") {
                out["status:" + (try row.string("status") ?? "")] = try row.int("n") ?? 0
            }
            out["flagged"] = try c.query("SELECT count(*) AS n FROM payments WHERE flagged").first?.int("n") ?? 0
            for row in try c.query("SELECT status, count(*) AS n FROM webhook_inbox GROUP BY status") {
                out["webhooks:" + (try row.string("status") ?? "")] = try row.int("n") ?? 0
            }
            return out
        }
    }
}
