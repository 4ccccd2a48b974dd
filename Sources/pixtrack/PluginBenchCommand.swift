import ArgumentParser
import PluginHost
import RPC

/// `pixtrack plugin bench libfoo.so`: what a call costs in a runner process against in-process,
/// measured on the plugin call alone (no database, no network): the figure `scripts/bench` prints.
struct PluginBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time a plugin's get_status in a runner and in-process, one call at a time.",
        discussion: """
            Loads the plugin twice, in a pixtrack-plugin-runner process and in this process, and \
            times --calls get_status calls of an unknown transaction id in each (alternating \
            rounds). Use a plugin that answers such a query without the network (the sandbox). \
            Prints the p50 and mean per call of each mode and their difference: the runner's cost.
            """)

    @Argument(help: "Path to the plugin's shared library (.so).")
    var path: String

    @Option(name: .long, help: "Calls per mode and round.")
    var calls = 5000

    @Option(name: .long, help: "Alternating rounds (medians are compared).")
    var rounds = 3

    mutating func run() async throws {
        guard calls > 0, rounds > 0 else { throw ValidationError("--calls and --rounds must be positive") }
        let logger = Logger(minimum: .error)
        var instances: [(String, GatewayInstance, GatewayRegistry)] = []
        for inProcess in [false, true] {
            var o = GatewayRegistry.Options(pluginDirectory: "/")
            o.isolation.runners = !inProcess
            let registry: GatewayRegistry
            do {
                registry = try GatewayRegistry.single(path: path, options: o, logger: logger)
            } catch {
                throw ValidationError("\(path): \(error.reason)")
            }
            let gw = try await registry.makeInstance(gateway: registry.plugins[0].name, config: GatewayConfig())
            instances.append((inProcess ? "in-process" : "runner", gw, registry))
        }
        defer { for (_, _, r) in instances { r.stopRunners() } }
        var p50s: [String: [Double]] = [:]
        var means: [String: [Double]] = [:]
        for _ in 0..<rounds {
            for (mode, gw, _) in instances {
                _ = await gw.getStatus(StatusQuery(transactionID: "bench-warm-up"))
                var times: [Double] = []
                times.reserveCapacity(calls)
                for _ in 0..<calls {
                    let t0 = ContinuousClock.now
                    _ = await gw.getStatus(StatusQuery(transactionID: "bench-unknown"))
                    let d = ContinuousClock.now - t0
                    times.append(Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12)
                }
                times.sort()
                p50s[mode, default: []].append(times[times.count / 2])
                means[mode, default: []].append(times.reduce(0, +) / Double(times.count))
            }
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        for mode in ["runner", "in-process"] {
            print("plugin-\(mode): get_status p50 \(Int(median(p50s[mode]!))) us, mean \(Int(median(means[mode]!))) us per call (\(calls) calls x \(rounds) rounds)")
        }
        let cost = median(p50s["runner"]!) - median(p50s["in-process"]!)
        print("runner cost per call (p50 difference): \(Int(cost)) us  (target <= 50)")
    }
}
