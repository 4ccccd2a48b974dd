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
    static var entryTimeoutMs: Int64 { PluginTable.entryTimeoutMs }

    private static let cache = Mutex<[String: LoadedPlugin]>([:])

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
        _ = installUnattributedLog
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
        PluginTable.open(real: real, sha: sha, device: device, inode: inode, displayPath: displayPath).map {
            LoadedPlugin(info: $0.info, table: $0.table)
        }
    }

    static func errnoText() -> String { PluginTable.errnoText() }

    /// In this process, lines plugins log outside any call are written here, redacted.
    private static let installUnattributedLog: Void = HostAPI.unattributed.withLock { $0 = { HostAPI.logUnattributed($0, $1) } }

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


}
