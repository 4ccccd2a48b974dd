import ArgumentParser
import Glibc
import PluginConformance
import RPC

/// `pixtrack plugin check path/to/libfoo.so [--config conformance.json]`: the conformance kit.
struct PluginCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a gateway plugin before deploying it.",
        discussion: """
            Loads the plugin in isolation and verifies its ABI (version, table size, required \
            members, name). With --config, replays the recorded exchange in that file (config, \
            create/status/webhook steps, the gateway's HTTP answers) against a local fake of the \
            gateway, then probes how the plugin classifies failures (503, HTML, empty answer, \
            connection reset, unreachable gateway, garbage webhook), runs every recorded call \
            from 8 threads at once against its single-threaded answer, and feeds hostile webhook \
            bodies (empty, null, 1 MiB, deeply nested, invalid UTF-8, binary). The plugin runs in \
            a pixtrack-plugin-runner process (next to this binary, or PIXTRACK_PLUGIN_RUNNER), so \
            a crash is a finding naming the call and the signal. Prints the findings; exits 0 \
            when every check passes, 1 otherwise. The fixture format is in Plugins/README.md.
            """)

    @Argument(help: "Path to the plugin's shared library (.so).")
    var path: String

    @Option(name: .long, help: "Conformance fixture (JSON): config and recorded exchange.")
    var config: String?

    @Flag(name: .long, help: "Show the host's and the plugin's log lines.")
    var verbose = false

    mutating func run() async throws {
        var fixture: ConformanceFixture?
        if let config {
            guard let bytes = Self.readFile(config) else {
                throw ValidationError("cannot read \(config): \(String(cString: strerror(errno)))")
            }
            do {
                fixture = try ConformanceFixture(bytes: bytes)
            } catch {
                throw ValidationError("\(config): \(error.description)")
            }
        }
        let runner = ConformanceRunner(pluginPath: path, fixture: fixture,
                                       logger: Logger(minimum: verbose ? .debug : .error),
                                       runnerExecutable: getenv("PIXTRACK_PLUGIN_RUNNER").map { String(cString: $0) })
        let report = await runner.run()
        print(report.text, terminator: "")
        if !report.passed { throw ExitCode(1) }
    }

    static func readFile(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n > 0 { out += buf[0..<n] }
            if n < buf.count { break }
        }
        return ferror(f) == 0 ? out : nil
    }
}
