import CLibpq

/// Every raw libpq call the module makes, one line each. Nothing here owns memory: callers
/// (`PGConnection`, `PGResult`) pair each allocation with its free.
///
/// `PGconn *`, `PGresult *` and `PGcancel *` import as `OpaquePointer`.
enum LibPQ {
    /// The corresponding C function is `PQconnectdbParams` (blocks up to `connect_timeout`).
    static func connect(keywords: UnsafePointer<UnsafePointer<CChar>?>, values: UnsafePointer<UnsafePointer<CChar>?>) -> OpaquePointer? {
        PQconnectdbParams(keywords, values, 1)
    }

    /// The corresponding C function is `PQfinish`.
    static func finish(_ conn: OpaquePointer) { PQfinish(conn) }

    /// The corresponding C function is `PQstatus`.
    static func isConnectionOK(_ conn: OpaquePointer) -> Bool { PQstatus(conn) == CONNECTION_OK }

    /// The corresponding C function is `PQtransactionStatus`; true when idle outside a transaction.
    static func isIdle(_ conn: OpaquePointer) -> Bool { PQtransactionStatus(conn) == PQTRANS_IDLE }

    /// The corresponding C function is `PQerrorMessage`.
    static func errorMessage(_ conn: OpaquePointer) -> String { String(cString: PQerrorMessage(conn)) }

    /// The corresponding C function is `PQsetNoticeProcessor` (with a processor that drops notices).
    static func silenceNotices(_ conn: OpaquePointer) { pixtrack_pq_silence_notices(conn) }

    /// The corresponding C function is `PQconninfoParse`; returns libpq's error text, nil when valid.
    static func conninfoError(_ conninfo: String) -> String? {
        var err: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &err) else {
            defer { if let err { PQfreemem(err) } }
            return err.map { String(cString: $0) } ?? "out of memory"
        }
        PQconninfoFree(options)
        return nil
    }

    /// The corresponding C function is `PQsendQueryParams` (text parameters, text results).
    static func sendQueryParams(_ conn: OpaquePointer, _ sql: String, _ types: [UInt32],
                                _ values: UnsafePointer<UnsafePointer<CChar>?>) -> Bool {
        PQsendQueryParams(conn, sql, Int32(types.count), types, values, nil, nil, 0) == 1
    }

    /// The corresponding C function is `PQsendPrepare` (a named statement; `types` 0 = inferred).
    static func sendPrepare(_ conn: OpaquePointer, _ name: String, _ sql: String, _ types: [UInt32]) -> Bool {
        PQsendPrepare(conn, name, sql, Int32(types.count), types) == 1
    }

    /// The corresponding C function is `PQsendQueryPrepared` (text parameters, text results).
    static func sendQueryPrepared(_ conn: OpaquePointer, _ name: String, _ count: Int,
                                  _ values: UnsafePointer<UnsafePointer<CChar>?>) -> Bool {
        PQsendQueryPrepared(conn, name, Int32(count), values, nil, nil, 0) == 1
    }

    /// The corresponding C function is `PQsendQuery` (simple protocol: several statements, no parameters).
    static func sendQuery(_ conn: OpaquePointer, _ sql: String) -> Bool { PQsendQuery(conn, sql) == 1 }

    /// The corresponding C function is `PQsocket` (-1 when there is none).
    static func socket(_ conn: OpaquePointer) -> Int32 { PQsocket(conn) }

    /// The corresponding C function is `PQisBusy`.
    static func isBusy(_ conn: OpaquePointer) -> Bool { PQisBusy(conn) == 1 }

    /// The corresponding C function is `PQconsumeInput`; false when the connection failed.
    static func consumeInput(_ conn: OpaquePointer) -> Bool { PQconsumeInput(conn) == 1 }

    /// `poll(2)` on `PQsocket`: 1 readable, 0 timed out, -1 error. `timeoutMs` -1 waits forever.
    static func waitReadable(_ conn: OpaquePointer, timeoutMs: Int32) -> Int32 {
        pixtrack_pq_wait_readable(conn, timeoutMs)
    }

    /// `poll(2)` on `PQsocket` for reading and writing: a mask (1 readable, 2 writable), 0 timed
    /// out, -1 error.
    static func waitIO(_ conn: OpaquePointer, timeoutMs: Int32) -> Int32 { pixtrack_pq_wait_io(conn, timeoutMs) }

    /// The corresponding C function is `PQenterPipelineMode` (libpq 14+); false unless idle.
    static func enterPipelineMode(_ conn: OpaquePointer) -> Bool { PQenterPipelineMode(conn) == 1 }

    /// The corresponding C function is `PQexitPipelineMode`; false while results are pending.
    static func exitPipelineMode(_ conn: OpaquePointer) -> Bool { PQexitPipelineMode(conn) == 1 }

    /// The corresponding C function is `PQpipelineSync` (queues a Sync; flushes unless non-blocking).
    static func pipelineSync(_ conn: OpaquePointer) -> Bool { PQpipelineSync(conn) == 1 }

    /// The corresponding C function is `PQsetnonblocking`.
    static func setNonBlocking(_ conn: OpaquePointer, _ on: Bool) -> Bool { PQsetnonblocking(conn, on ? 1 : 0) == 0 }

    /// The corresponding C function is `PQflush`: 0 all sent, 1 more to send, -1 failed.
    static func flush(_ conn: OpaquePointer) -> Int32 { PQflush(conn) }

    /// The corresponding C functions are `PQnotifies` and `PQfreemem`: how many notifications
    /// libpq had read, each freed (their channel and payload are not needed: a wake-up only).
    static func drainNotifications(_ conn: OpaquePointer) -> Int {
        var n = 0
        while let notice = PQnotifies(conn) {
            PQfreemem(notice)
            n += 1
        }
        return n
    }

    /// The corresponding C function is `PQgetResult`.
    static func getResult(_ conn: OpaquePointer) -> OpaquePointer? { PQgetResult(conn) }

    /// The corresponding C function is `PQclear`.
    static func clear(_ result: OpaquePointer) { PQclear(result) }

    /// The corresponding C function is `PQresultStatus`, folded into the four cases we act on.
    static func resultKind(_ result: OpaquePointer) -> ResultKind {
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY: .commandOK
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE: .tuples
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE: .error
        case PGRES_PIPELINE_SYNC: .pipelineSync
        case PGRES_PIPELINE_ABORTED: .pipelineAborted
        default: .unexpected
        }
    }

    /// `pipelineSync`: a pipeline's Sync point; `pipelineAborted`: a statement skipped because
    /// an earlier one of the same pipeline failed.
    enum ResultKind { case commandOK, tuples, error, pipelineSync, pipelineAborted, unexpected }

    /// The corresponding C function is `PQresultErrorField`.
    static func errorField(_ result: OpaquePointer, _ field: Int32) -> String? {
        PQresultErrorField(result, field).map { String(cString: $0) }
    }

    /// The corresponding C function is `PQresultErrorMessage`.
    static func resultErrorMessage(_ result: OpaquePointer) -> String { String(cString: PQresultErrorMessage(result)) }

    /// The corresponding C function is `PQntuples`.
    static func rowCount(_ result: OpaquePointer) -> Int { Int(PQntuples(result)) }

    /// The corresponding C function is `PQnfields`.
    static func columnCount(_ result: OpaquePointer) -> Int { Int(PQnfields(result)) }

    /// The corresponding C function is `PQfname`.
    static func columnName(_ result: OpaquePointer, _ column: Int) -> String { String(cString: PQfname(result, Int32(column))) }

    /// The corresponding C function is `PQftype`.
    static func columnType(_ result: OpaquePointer, _ column: Int) -> UInt32 { PQftype(result, Int32(column)) }

    /// The corresponding C functions are `PQgetisnull` and `PQgetvalue`/`PQgetlength` (copied out).
    static func value(_ result: OpaquePointer, _ row: Int, _ column: Int) -> String? {
        if PQgetisnull(result, Int32(row), Int32(column)) == 1 { return nil }
        let length = Int(PQgetlength(result, Int32(row), Int32(column)))
        let bytes = UnsafeRawBufferPointer(start: PQgetvalue(result, Int32(row), Int32(column)), count: length)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The corresponding C function is `PQcmdTuples` (empty for commands that count nothing).
    static func affectedRows(_ result: OpaquePointer) -> Int { Int(String(cString: PQcmdTuples(result))) ?? 0 }

    /// The corresponding C function is `PQcmdStatus` (`INSERT 0 1`, `COMMIT`, `ROLLBACK`, …).
    static func commandTag(_ result: OpaquePointer) -> String { PQcmdStatus(result).map { String(cString: $0) } ?? "" }

    /// The corresponding C function is `PQgetCancel`.
    static func getCancel(_ conn: OpaquePointer) -> OpaquePointer? { PQgetCancel(conn) }

    /// The corresponding C function is `PQfreeCancel`.
    static func freeCancel(_ cancel: OpaquePointer) { PQfreeCancel(cancel) }

    /// The corresponding C function is `PQcancel` (thread-safe; opens a short-lived connection).
    static func cancel(_ cancel: OpaquePointer) -> Bool {
        var buffer = [CChar](repeating: 0, count: 256)
        return PQcancel(cancel, &buffer, Int32(buffer.count)) == 1
    }
}

/// The diagnostic fields we read (`PG_DIAG_*` are character constants in `postgres_ext.h`).
enum PGDiag {
    static let sqlState = Int32(UInt8(ascii: "C"))
    static let primary = Int32(UInt8(ascii: "M"))
    static let table = Int32(UInt8(ascii: "t"))
    static let column = Int32(UInt8(ascii: "c"))
    static let constraint = Int32(UInt8(ascii: "n"))
}
