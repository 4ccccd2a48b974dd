import Testing
@testable import Postgres
import RPC

/// No server needed.
@Suite struct PGUnitTests {
    @Test func parametersEncodeAsPostgreSQLText() {
        #expect(PGValue.bytes([0x00, 0xAB, 0xFF]).textEncoding == "\\x00abff")
        #expect(PGValue.bytes([]).textEncoding == "\\x")
        #expect(PGValue.bool(true).textEncoding == "t")
        #expect(PGValue.int(-42).textEncoding == "-42")
        #expect(PGValue.double(.infinity).textEncoding == "Infinity")
        #expect(PGValue.double(-.infinity).textEncoding == "-Infinity")
        #expect(PGValue.double(.nan).textEncoding == "NaN")
        #expect(PGValue.text("a\u{0}").textEncoding == nil)
        let literal: PGValue = "x"
        #expect(literal == .text("x"))
        #expect(PGValue.text("x").typeOID == 0)
        #expect(PGValue.int(1).typeOID == 20)
    }

    @Test func byteaHexDecoding() {
        #expect(PGRow.decodeHexBytea("\\x00ABff") == [0x00, 0xAB, 0xFF])
        #expect(PGRow.decodeHexBytea("\\x") == [])
        #expect(PGRow.decodeHexBytea("00ab") == nil)
        #expect(PGRow.decodeHexBytea("\\x0") == nil)
        #expect(PGRow.decodeHexBytea("\\xzz") == nil)
    }

    @Test func sqlStatesClassify() {
        #expect(PGError.classify(sqlState: "23505") == .constraintViolation)
        #expect(PGError.classify(sqlState: "23P01") == .constraintViolation)
        #expect(PGError.classify(sqlState: "40001") == .serializationFailure)
        #expect(PGError.classify(sqlState: "40P01") == .serializationFailure)
        #expect(PGError.classify(sqlState: "57014") == .timeout)
        #expect(PGError.classify(sqlState: "55P03") == .timeout)
        #expect(PGError.classify(sqlState: "08006") == .unavailable)
        #expect(PGError.classify(sqlState: "57P01") == .unavailable)
        #expect(PGError.classify(sqlState: "42601") == .queryFailed)
        #expect(PGError.classify(sqlState: nil) == .queryFailed)
    }

    @Test func descriptionShowsCodeStateAndNamesOnly() {
        var e = PGError(.constraintViolation, "unique constraint violated", sqlState: "23505",
                        serverMessage: "Key (email)=(a@b.c) already exists")
        e.constraint = "users_email_key"
        #expect(e.description == "PGError(constraintViolation, SQLSTATE 23505): unique constraint violated [constraint users_email_key]")
        #expect(!e.description.contains("a@b.c"))
        #expect(PGError(.serializationFailure, "x").rpcError.code == .aborted)
        #expect(PGError(.timeout, "x").rpcError.code == .deadlineExceeded)
        #expect(PGError(.queryFailed, "x").rpcError.code == .internal)
    }

    @Test func migrationTableNamesAndLockKeys() async throws {
        #expect(PGMigrator.isPlainIdentifier("schema_migrations"))
        #expect(!PGMigrator.isPlainIdentifier("Schema"))
        #expect(!PGMigrator.isPlainIdentifier("1abc"))
        #expect(!PGMigrator.isPlainIdentifier("a;b"))
        let pool = try PGPool(PGPoolConfiguration(url: "postgresql://u@127.0.0.1:1/db"))
        let a = PGMigrator(pool: pool, migrations: [], table: "schema_migrations")
        let b = PGMigrator(pool: pool, migrations: [], table: "other_migrations")
        #expect(a.lockKey == PGMigrator(pool: pool, migrations: [], table: "schema_migrations").lockKey)
        #expect(a.lockKey != b.lockKey)
        await pool.close()
    }
}

/// Storage errors reach clients through `RPCErrorConvertible`: handlers never convert them by hand.
@Suite struct PGErrorMappingTests {
    @Test func theTransportMapsAPostgresErrorByItsOwnRule() {
        #expect(RPCError(mapping: PGError(.unavailable, "connection refused")).code == .unavailable)
        #expect(RPCError(mapping: PGError(.timeout, "statement timeout")).code == .deadlineExceeded)
        let mapped = RPCError(mapping: PGError(.unavailable, "connect to 10.0.0.7:5432 failed: password authentication failed"))
        // The client sees generic words; the detail stays in the cause, for the log.
        #expect(mapped.message == "database unavailable" && !mapped.message.contains("10.0.0.7"))
        #expect(mapped.cause != nil)
    }
}
