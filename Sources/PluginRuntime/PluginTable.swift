import GatewayABI
import Glibc
import RPC

/// A plugin's table, opened and checked, and its functions called through it: what the host
/// (in-process plugins) and a plugin runner share. Nothing here performs HTTP, so a runner
/// links no HTTP client.
package enum PluginTable {
    /// How long a plugin's entry function may take before the file is refused.
    package static let entryTimeoutMs: Int64 = 2_000

    private static let loaderThreads = PluginThreads(maxThreads: 8)

    /// A file opened and validated: its table (process lifetime, never unloaded) and what it says.
    package struct Opened: @unchecked Sendable {
        package let info: PluginInfo
        package let table: UnsafePointer<pt_gateway_plugin>
    }

    /// `dlopen`s the already checked file at `real` (the same `device`/`inode`), runs its entry
    /// function under `entryTimeoutMs` and validates the table.
    package static func open(real: String, sha: String, device: dev_t, inode: ino_t, displayPath: String) -> Result<Opened, PluginLoadFailure> {
        func fail(_ reason: String) -> Result<Opened, PluginLoadFailure> {
            .failure(PluginLoadFailure(path: displayPath, reason: reason, sha256: sha))
        }
        // Never dlclose'd: Swift libraries cannot be unloaded safely (TOOLCHAIN.md).
        guard let handle = dlopen(real, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            return fail("dlopen failed: \(dlerrorText())")
        }
        var after = stat()
        guard stat(real, &after) == 0, after.st_dev == device, after.st_ino == inode else {
            return fail("file was replaced while being loaded")
        }
        guard let symbol = dlsym(handle, PT_GATEWAY_ENTRY_SYMBOL) else {
            return fail("missing entry symbol \(PT_GATEWAY_ENTRY_SYMBOL) (not a PixTrack gateway plugin)")
        }
        let entryBits = UInt(bitPattern: symbol)
        let hostBits = UInt(bitPattern: HostAPI.table)
        let completion = loaderThreads.runBlocking(timeoutMs: entryTimeoutMs) { () -> UInt in
            let entry = unsafeBitCast(UnsafeRawPointer(bitPattern: entryBits)!, to: pt_gateway_entry_fn.self)
            return UInt(bitPattern: entry(UnsafePointer(bitPattern: hostBits)))
        }
        let tableBits: UInt
        switch completion {
        case .finished(let bits): tableBits = bits
        case .timedOut: return fail("entry function did not return within \(entryTimeoutMs) ms")
        case .busy: return fail("no thread available to run the entry function")
        }
        guard let table = UnsafePointer<pt_gateway_plugin>(bitPattern: tableBits) else {
            return fail("entry function returned NULL (the plugin refused host ABI \(PT_GATEWAY_ABI_MAJOR).\(PT_GATEWAY_ABI_MINOR))")
        }
        switch validate(table) {
        case .failure(let reason): return fail(reason.text)
        case .success(let parts):
            let info = PluginInfo(name: parts.name, version: parts.version, description: parts.description,
                                  abiMajor: UInt32(table.pointee.abi_major), abiMinor: UInt32(table.pointee.abi_minor),
                                  path: real, sha256: sha, capabilities: table.pointee.capabilities)
            return .success(Opened(info: info, table: table))
        }
    }

    package struct TableStrings { let name, version, description: String }

    /// Version and size checks, then every required member, then the strings.
    package static func validate(_ table: UnsafePointer<pt_gateway_plugin>) -> Result<TableStrings, PluginLoadFailureReason> {
        // The three header members are read first: they are the same in every ABI version.
        let header = UnsafeRawPointer(table)
        let size = header.load(as: UInt32.self)
        let major = header.load(fromByteOffset: 4, as: UInt16.self)
        let minor = header.load(fromByteOffset: 6, as: UInt16.self)
        guard major == PT_GATEWAY_ABI_MAJOR else {
            return .failure(.init("built for ABI major \(major), this host speaks \(PT_GATEWAY_ABI_MAJOR).\(PT_GATEWAY_ABI_MINOR)"))
        }
        guard minor <= PT_GATEWAY_ABI_MINOR else {
            return .failure(.init("built for ABI \(major).\(minor), newer than this host's \(PT_GATEWAY_ABI_MAJOR).\(PT_GATEWAY_ABI_MINOR)"))
        }
        // At minor 0 the table is exactly this host's struct; later minors need a size table.
        let minimum = MemoryLayout<pt_gateway_plugin>.size
        guard Int(size) >= minimum else {
            return .failure(.init("plugin table is \(size) bytes, ABI \(major).\(minor) needs at least \(minimum)"))
        }
        let t = table.pointee
        var missing: [String] = []
        if t.name == nil { missing.append("name") }
        if t.version == nil { missing.append("version") }
        if t.create == nil { missing.append("create") }
        if t.destroy == nil { missing.append("destroy") }
        if t.create_pix == nil { missing.append("create_pix") }
        if t.get_status == nil { missing.append("get_status") }
        if t.parse_webhook == nil { missing.append("parse_webhook") }
        if t.free_buffer == nil { missing.append("free_buffer") }
        guard missing.isEmpty else {
            return .failure(.init("required member(s) NULL: \(missing.joined(separator: ", "))"))
        }
        let name = boundedString(t.name, 64)
        guard (1...32).contains(name.utf8.count),
              name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2D }) else {
            return .failure(.init("invalid plugin name '\(name)' (1-32 chars of [a-z0-9_-])"))
        }
        let version = boundedString(t.version, 64)
        guard !version.isEmpty, version.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(.init("invalid plugin version '\(version)'"))
        }
        return .success(TableStrings(name: name, version: version, description: boundedString(t.description, 256)))
    }

    package static func boundedString(_ p: UnsafePointer<CChar>?, _ limit: Int) -> String {
        guard let p else { return "" }
        let n = strnlen(p, limit)
        return p.withMemoryRebound(to: UInt8.self, capacity: n) {
            String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
        }
    }

    package static func errnoText() -> String { String(cString: strerror(errno)) }

    package static func dlerrorText() -> String {
        guard let e = dlerror() else { return "unknown error" }
        return String(cString: e)
    }
    /// One plugin function, called through its table (in the host or in a runner): the result
    /// copied out and freed, the message as the plugin wrote it (callers redact).
    package static func invoke(_ tablePointer: UnsafePointer<pt_gateway_plugin>, _ instance: OpaquePointer, _ call: PluginCallContext,
                            _ op: PluginOperation, _ request: [UInt8]) -> PluginRawResult {
        let table = tablePointer.pointee
        let fn = switch op {
        case .createPix: table.create_pix!
        case .getStatus: table.get_status!
        case .parseWebhook: table.parse_webhook!
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var outLength = 0
        var error = [CChar](repeating: 0, count: 512)
        let input = request.isEmpty ? [UInt8(0)] : request
        let status = input.withUnsafeBufferPointer { req in
            error.withUnsafeMutableBufferPointer { err in
                fn(instance, HostAPI.handle(call), req.baseAddress, request.count, &out, &outLength, err.baseAddress, err.count)
            }
        }
        error[error.count - 1] = 0
        let message = error.withUnsafeBufferPointer { PluginTable.boundedString($0.baseAddress, 511) }
        var result = PluginRawResult(status: status, bytes: nil, message: message, problem: nil)
        if let out {
            if outLength >= 0 && outLength <= Int(PT_MAX_RESULT_BYTES) {
                if status == PT_OK { result.bytes = Array(UnsafeBufferPointer(start: out, count: outLength)) }
            } else {
                result.problem = "result of \(outLength) bytes exceeds the \(PT_MAX_RESULT_BYTES)-byte limit"
            }
            table.free_buffer(out, outLength)
        } else if status == PT_OK {
            result.problem = "plugin returned OK with a NULL result"
        }
        return result
    }}

/// Why a table was refused.
package struct PluginLoadFailureReason: Error {
    package let text: String
    package init(_ text: String) { self.text = text }
}

package enum PluginOperation: String, Sendable {
    case createPix = "create_pix", getStatus = "get_status", parseWebhook = "parse_webhook"

    /// Its number on the runner protocol (`RunnerFrame.operation`).
    package var number: Int32 {
        switch self {
        case .createPix: 1
        case .getStatus: 2
        case .parseWebhook: 3
        }
    }

    package init?(number: Int32) {
        switch number {
        case 1: self = .createPix
        case 2: self = .getStatus
        case 3: self = .parseWebhook
        default: return nil
        }
    }
}


/// What came back from one plugin function, copied out of plugin memory.
package struct PluginRawResult: Sendable {
    package var status: Int32
    package var bytes: [UInt8]?
    package var message: String
    /// Why `bytes` is nil although the status was OK (NULL or oversized result).
    package var problem: String?
    /// Runner mode: there is no answer because the runner died (`started`: during the call)
    /// or the plugin is held back after crashes (`started` false: the call never left).
    package var lost: (reason: String, started: Bool)?

    package init(status: Int32, bytes: [UInt8]? = nil, message: String, problem: String? = nil) {
        self.status = status
        self.bytes = bytes
        self.message = message
        self.problem = problem
    }

    package static func lost(_ reason: String, started: Bool) -> PluginRawResult {
        var r = PluginRawResult(status: Int32(PT_ERR_UNAVAILABLE), message: reason)
        r.lost = (reason, started)
        return r
    }
}

