import GatewayABI
import Glibc
import RPC
import Synchronization

/// A plugin file opened and checked: its table, never unloaded.
///
/// `@unchecked Sendable`: `table` points at the plugin's immutable, process-lifetime table
/// (the ABI forbids changing it), and the library is opened with `RTLD_NODELETE` and never closed.
final class LoadedPlugin: @unchecked Sendable {
    let info: PluginInfo
    /// In-process: the plugin's table. Nil when the plugin lives in `runner`.
    let table: UnsafePointer<pt_gateway_plugin>?
    let runner: PluginRunner?

    init(info: PluginInfo, table: UnsafePointer<pt_gateway_plugin>) {
        self.info = info
        self.table = table
        self.runner = nil
    }

    init(info: PluginInfo, runner: PluginRunner) {
        self.info = info
        self.table = nil
        self.runner = runner
    }
}

/// Opens plugin files with the checks of DESIGN §5. Each canonical path is opened at most once
/// per process (a second load returns the first result), because `dlopen` state is per process.
public enum PluginLoader {
    /// How long a plugin's entry function may take before the file is refused.
    static let entryTimeoutMs: Int64 = 2_000

    private static let cache = Mutex<[String: LoadedPlugin]>([:])
    private static let loaderThreads = PluginThreads(maxThreads: 8)

    /// Checks, hashes and opens the plugin at `path`.
    ///
    /// - Parameters:
    ///   - pluginDirectory: when set, a symlink resolving outside it is refused.
    ///   - pinnedSHA256: when set, a file with another hash is refused before it is opened.
    /// - Parameter runner: the plugin is opened in a runner process (see `PluginRunner`), not here.
    static func load(path: String, pluginDirectory: String?, pinnedSHA256: String?,
                     runner: (isolation: PluginIsolation, logger: Logger)? = nil) -> Result<LoadedPlugin, PluginLoadFailure> {
        func fail(_ reason: String, _ sha: String = "") -> Result<LoadedPlugin, PluginLoadFailure> {
            .failure(PluginLoadFailure(path: path, reason: reason, sha256: sha))
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { return fail("cannot stat: \(errnoText())") }
        guard let real = realPath(path) else { return fail("cannot resolve path: \(errnoText())") }
        if (st.st_mode & S_IFMT) == S_IFLNK, let dir = pluginDirectory {
            guard let realDir = realPath(dir), real.hasPrefix(realDir.hasSuffix("/") ? realDir : realDir + "/") else {
                return fail("symlink resolves to \(real), outside the plugin directory \(dir)")
            }
        }

        let fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return fail("cannot open \(real): \(errnoText())") }
        defer { close(fd) }
        guard fstat(fd, &st) == 0 else { return fail("cannot stat: \(errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            return fail((st.st_mode & S_IFMT) == S_IFDIR ? "is a directory, not a regular file" : "not a regular file")
        }
        guard st.st_mode & S_IWOTH == 0 else {
            return fail("file is world-writable (mode \(String(st.st_mode & 0o7777, radix: 8))): anyone could replace the code")
        }
        let device = st.st_dev, inode = st.st_ino
        guard let sha = sha256(fd) else { return fail("cannot read: \(errnoText())") }
        if let pin = pinnedSHA256?.lowercased(), !pin.isEmpty, pin != sha {
            return fail("SHA-256 \(sha) does not match the pinned \(pin)", sha)
        }
        if let runner {
            return PluginRunner.start(fd: fd, real: real, sha: sha, displayPath: path, isolation: runner.isolation, logger: runner.logger)
        }

        if let cached = cache.withLock({ $0[real] }) {
            guard cached.info.sha256 == sha else {
                return fail("file changed since it was loaded (a new version needs a new file name)", sha)
            }
            return .success(cached)
        }
        let result = openLibrary(real: real, sha: sha, device: device, inode: inode, displayPath: path)
        if case .success(let plugin) = result {
            cache.withLock { $0[real] = $0[real] ?? plugin }
            return .success(cache.withLock { $0[real]! })
        }
        return result
    }

    static func openLibrary(real: String, sha: String, device: dev_t, inode: ino_t, displayPath: String) -> Result<LoadedPlugin, PluginLoadFailure> {
        func fail(_ reason: String) -> Result<LoadedPlugin, PluginLoadFailure> {
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
            return .success(LoadedPlugin(info: info, table: table))
        }
    }

    struct TableStrings { let name, version, description: String }

    /// Version and size checks, then every required member, then the strings.
    static func validate(_ table: UnsafePointer<pt_gateway_plugin>) -> Result<TableStrings, PluginLoadFailureReason> {
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

    static func boundedString(_ p: UnsafePointer<CChar>?, _ limit: Int) -> String {
        guard let p else { return "" }
        let n = strnlen(p, limit)
        return p.withMemoryRebound(to: UInt8.self, capacity: n) {
            String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
        }
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    private static func sha256(_ fd: Int32) -> String? {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += off_t(n)
        }
        return SHA256.hex(hasher.finish())
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    static func dlerrorText() -> String {
        guard let e = dlerror() else { return "unknown error" }
        return String(cString: e)
    }
}

/// Why a table was refused.
struct PluginLoadFailureReason: Error {
    let text: String
    init(_ text: String) { self.text = text }
}
