/// The column names of a result, shared by all its rows.
public final class PGColumns: Sendable {
    /// Column names in result order.
    public let names: [String]
    /// Type OIDs in result order (e.g. 20 = int8, 25 = text, 1184 = timestamptz).
    public let typeOIDs: [UInt32]
    private let index: [String: Int]

    init(names: [String], typeOIDs: [UInt32]) {
        self.names = names
        self.typeOIDs = typeOIDs
        var index: [String: Int] = [:]
        for (i, n) in names.enumerated() where index[n] == nil { index[n] = i }
        self.index = index
    }

    /// The position of the first column called `name`.
    public func position(of name: String) -> Int? { index[name] }
}

/// The rows of one statement, copied out of libpq's result into Swift values (text format).
public struct PGRows: Sendable, RandomAccessCollection {
    /// The result's columns.
    public let columns: PGColumns
    /// For commands: the affected row count (`PQcmdTuples`); for `SELECT`, the row count.
    public let affectedRows: Int
    /// The command tag (`INSERT 0 1`, `SELECT 3`, …).
    public let commandTag: String
    private let cells: [String?]

    init(columns: PGColumns, cells: [String?], affectedRows: Int, commandTag: String) {
        self.columns = columns
        self.cells = cells
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }

    /// Always 0.
    public var startIndex: Int { 0 }
    /// The number of rows.
    public var endIndex: Int { columns.names.isEmpty ? 0 : cells.count / columns.names.count }
    /// The row at `position` (0-based).
    public subscript(position: Int) -> PGRow {
        let width = columns.names.count
        return PGRow(columns: columns, values: Array(cells[(position * width)..<((position + 1) * width)]))
    }
}

/// One row. Getters take a column name or position; they return nil for SQL `NULL` and throw
/// `PGError.Code.decoding` for an unknown column or a value of another type.
public struct PGRow: Sendable {
    /// The result's columns (shared with the other rows).
    public let columns: PGColumns
    /// The raw text values (nil = NULL), in column order.
    public let values: [String?]

    /// The text of column `name` (every type has one), nil for NULL.
    public func string(_ name: String) throws(PGError) -> String? { values[try position(name)] }
    /// The text of the column at position `i`.
    public func string(at i: Int) throws(PGError) -> String? { values[try checked(i)] }

    /// An integer column (`int2`, `int4`, `int8`, or any text holding a base-10 integer).
    public func int64(_ name: String) throws(PGError) -> Int64? { try int64(at: position(name)) }
    /// `int64(_:)` by position.
    public func int64(at i: Int) throws(PGError) -> Int64? {
        try decode(i, "integer") { Int64($0) }
    }

    /// `int64` as `Int`.
    public func int(_ name: String) throws(PGError) -> Int? { try int64(name).map { Int($0) } }

    /// A `bool` column (`t`/`f`).
    public func bool(_ name: String) throws(PGError) -> Bool? { try bool(at: position(name)) }
    /// `bool(_:)` by position.
    public func bool(at i: Int) throws(PGError) -> Bool? {
        try decode(i, "bool") { $0 == "t" ? true : $0 == "f" ? false : nil }
    }

    /// A `float4`/`float8`/`numeric` column (`numeric` loses precision: prefer integer centavos).
    public func double(_ name: String) throws(PGError) -> Double? { try double(at: position(name)) }
    /// `double(_:)` by position.
    public func double(at i: Int) throws(PGError) -> Double? {
        try decode(i, "double") { Double($0) }
    }

    /// A `bytea` column (hex output, `\x…`).
    public func bytes(_ name: String) throws(PGError) -> [UInt8]? { try bytes(at: position(name)) }
    /// `bytes(_:)` by position.
    public func bytes(at i: Int) throws(PGError) -> [UInt8]? {
        try decode(i, "bytea") { PGRow.decodeHexBytea($0) }
    }

    /// True when column `name` is NULL.
    public func isNull(_ name: String) throws(PGError) -> Bool { values[try position(name)] == nil }

    private func position(_ name: String) throws(PGError) -> Int {
        guard let i = columns.position(of: name) else {
            throw PGError(.decoding, "no column named \(name)")
        }
        return i
    }

    private func checked(_ i: Int) throws(PGError) -> Int {
        guard values.indices.contains(i) else { throw PGError(.decoding, "no column at position \(i)") }
        return i
    }

    private func decode<T>(_ i: Int, _ type: String, _ parse: (String) -> T?) throws(PGError) -> T? {
        guard let text = values[try checked(i)] else { return nil }
        guard let v = parse(text) else {
            throw PGError(.decoding, "column \(columns.names[i]) is not a valid \(type)")
        }
        return v
    }

    /// Decodes bytea's hex output format (`\x` then two hex digits per byte).
    static func decodeHexBytea(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity((u.count - 2) / 2)
        var i = 2
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
