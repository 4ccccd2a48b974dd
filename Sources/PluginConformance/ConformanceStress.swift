import PluginHost
import PluginKit

/// The kit's stress checks: every recorded call again from many threads at once (answers must
/// match the single-threaded ones), hostile webhook bodies (a clean refusal or UNKNOWN, never a
/// crash, hang or garbage), and crash findings (the plugin runs in a runner, so a crash is
/// reported with its call and signal instead of killing the checker).
extension ConformanceRunner {
    /// Concurrent callers per recorded call, and calls per caller.
    static let threads = 8, repetitions = 4

    /// What a call answered, reduced to the fields that must not depend on concurrency.
    /// create_pix: the outcome only (ids may be fresh per charge).
    func answer(_ call: String, _ step: JSON, _ instance: GatewayInstance) async -> (text: String, failure: GatewayCallFailure?) {
        switch call {
        case "create_pix":
            let o = await instance.createPix(ConformanceFixture.createRequest(step["request"]))
            return ("outcome=\(o.outcome.rawValue)", o.failure)
        case "get_status":
            let o = await instance.getStatus(ConformanceFixture.statusQuery(step["request"]))
            return ("status=\(o.status.rawValue) id=\(o.transactionID) hash=\(o.gatewayHash) ref=\(o.reference) amount=\(o.amountCents)", o.failure)
        default:
            let o = await instance.parseWebhook(ConformanceFixture.webhook(step["request"]))
            return ("status=\(o.status.rawValue) id=\(o.transactionID) hash=\(o.gatewayHash) ref=\(o.reference) event=\(o.eventID) "
                    + "amount=\(o.amountCents) refused=\(o.failure?.refusedInput ?? false)", o.failure?.refusedInput == true ? nil : o.failure)
        }
    }

    /// (a) Each recorded step, once alone and then `threads` × `repetitions` times at once, with
    /// the gateway's recorded answers served by route (any order).
    func checkConcurrency(_ steps: [JSON], _ instance: GatewayInstance, _ server: ReplayServer, _ report: inout ConformanceReport) async {
        for (i, step) in steps.enumerated() {
            let call = step["call"]?.string ?? "?"
            guard ["create_pix", "get_status", "parse_webhook"].contains(call) else { continue }
            var routes: [String: ReplayServer.Response] = [:]
            for ex in step["http"]?.array ?? [] {
                routes["\((ex["expect"]?["method"]?.string ?? "POST").uppercased()) \(ex["expect"]?["path"]?.string ?? "/")"] =
                    ConformanceFixture.response(ex["respond"])
            }
            server.route(routes)
            let alone = await answer(call, step, instance)
            let answers = await withTaskGroup(of: [(text: String, failure: GatewayCallFailure?)].self) { group in
                for _ in 0..<Self.threads {
                    group.addTask {
                        var mine: [(text: String, failure: GatewayCallFailure?)] = []
                        for _ in 0..<Self.repetitions { mine.append(await answer(call, step, instance)) }
                        return mine
                    }
                }
                return await group.reduce(into: []) { $0 += $1 }
            }
            let name = "concurrent: step \(i + 1) \(call) (\(Self.threads) threads x \(Self.repetitions))"
            let odd = answers.filter { $0.text != alone.text }
            if let crash = ([alone] + answers).compactMap(\.failure).first(where: { $0.kind == .crashed }) {
                report.add(false, name, "crashed: \(crash.message)")
            } else if let first = odd.first {
                report.add(false, name, "\(odd.count) of \(answers.count) answers differ from the single-threaded one: "
                           + "'\(first.text)'\(first.failure.map { " [\($0)]" } ?? "") vs '\(alone.text)'")
            } else {
                report.add(true, name, "\(answers.count) answers equal the single-threaded one")
            }
        }
        server.script([])
    }

    /// Hostile webhook bodies, by name.
    static var hostileBodies: [(String, [UInt8])] {
        var binary: [UInt8] = []
        var x: UInt32 = 2_463_534_242
        for _ in 0..<4096 {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            binary.append(UInt8(truncatingIfNeeded: x))
        }
        return [
            ("empty body", []),
            ("null", Array("null".utf8)),
            ("1 MiB JSON string", Array(#"{"id":""#.utf8) + [UInt8](repeating: 0x61, count: 1 << 20) + Array(#"","status":"paid"}"#.utf8)),
            ("JSON nested 100000 deep", [UInt8](repeating: 0x5B, count: 100_000) + [UInt8](repeating: 0x5D, count: 100_000)),
            ("invalid UTF-8", Array(#"{"id":""#.utf8) + [0xFF, 0xFE, 0xC0, 0x80] + Array(#"","status":"paid"}"#.utf8)),
            ("binary", binary),
        ]
    }

    /// (b) Each hostile body must get a refusal (an error status) or an answer with status
    /// UNKNOWN: never paid, never a crash, a timeout or an unreadable result.
    func checkHostileWebhooks(_ instance: GatewayInstance, _ report: inout ConformanceReport) async {
        for (name, body) in Self.hostileBodies {
            let o = await instance.parseWebhook(WebhookRequest(headers: [GatewayHeader("content-type", "application/json")], body: body))
            let check = "hostile webhook: \(name)"
            switch o.failure?.kind {
            case .pluginError?, .unsupported?:
                report.add(true, check, "refused (\(o.failure!.message.prefix(80)))")
            case nil where o.status == .unknown:
                report.add(true, check, "status unknown")
            case nil:
                report.add(false, check, "answered status \(o.status.rawValue): a body like this must be refused or UNKNOWN")
            case .crashed?:
                report.add(false, check, "crashed: \(o.failure!.message)")
            case let kind?:
                report.add(false, check, "\(kind.rawValue): \(o.failure!.message)")
            }
        }
    }

    /// (c) A recorded step whose call crashed the plugin's runner, as a finding of its own.
    func crashFinding(_ n: Int, _ call: String, _ failure: GatewayCallFailure?, _ report: inout ConformanceReport) {
        guard let failure, failure.kind == .crashed else { return }
        report.add(false, "crash: step \(n) \(call)", failure.message)
    }
}
