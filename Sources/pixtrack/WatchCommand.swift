import ArgumentParser
import Foundation
import HTTP2
import ProtoCodec
import RPC
import TLS
import PixTrackMessages

/// `pixtrack watch [--bot N] [--after CURSOR]`: PaymentService/WatchPayments, one JSON line per
/// event, resuming after the last cursor when the stream ends for any reason a retry can fix.
struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print payment events as they happen, one JSON line each (resumes by itself).",
        discussion: """
        Each line is a pixtrack.v1.PaymentEvent in proto3 JSON: the cursor, the payment
        as the change left it, the previous status and the time. With --after, every
        event after that cursor is replayed first. When the connection drops, the
        server shuts down or cuts a slow reader off, the command reconnects (back-off
        0.5 s doubling to 10 s) and resumes after the last cursor it printed, so no
        event is missed or printed twice. Heartbeats are not printed. It stops on
        errors a retry cannot fix (bad cursor, authentication) and on Ctrl-C.

        Examples:
          pixtrack watch --bot 7012345678
          pixtrack watch --after 1042 | jq -c '{cursor, status: .payment.status}'
        """)

    @Option(name: .long, help: "Only this bot's payments (default: every bot).")
    var bot: Int64 = 0

    @Option(name: .long, help: "Replay every event after this cursor first (default: only new events).")
    var after: String = ""

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard bot >= 0 else { throw ValidationError("--bot must be a bot id") }
    }

    func run() throws {
        let (host, port) = try connection.hostPort()
        let metadata = connection.metadata
        var cursor = after
        var backoff = 0.5
        let context: TLSContext?
        do { context = connection.usesTLS ? try TLSContext(trusting: connection.ca) : nil } catch {
            FileHandle.standardError.write(Data("UNAVAILABLE: \(error)\n".utf8))
            throw ExitCode(Int32(64 + RPCCode.unavailable.rawValue))
        }
        while true {
            var watch = Pixtrack_V1_WatchPaymentsRequest()
            watch.botId = bot
            watch.afterCursor = cursor
            let request = try watch.serializedBytes()
            var code = RPCCode.unavailable
            var message = ""
            do {
                let client = try GRPCClient(host: host, port: port, timeout: .seconds(10), tls: context, serverName: connection.tlsServerName)
                let response = try client.call("/pixtrack.v1.PaymentService/WatchPayments", requests: [request], metadata: metadata,
                                               timeout: .seconds(3600)) { bytes in
                    guard let event = try? Pixtrack_V1_PaymentEvent(serializedBytes: bytes) else { return }
                    if !event.cursor.isEmpty { cursor = event.cursor }
                    guard event.payment != nil, let line = try? event.jsonUTF8() else { return }  // heartbeat
                    FileHandle.standardOutput.write(Data(line + [0x0A]))
                    backoff = 0.5
                }
                (code, message) = (response.code, response.message)
            } catch let e as GRPCClient.ClientError {
                (code, message) = (e.code, e.description)
            }
            switch code {
            case .invalidArgument, .unauthenticated, .permissionDenied, .unimplemented, .notFound, .failedPrecondition:
                FileHandle.standardError.write(Data("\(code.name): \(message)\n".utf8))
                throw ExitCode(Int32(64 + code.rawValue))
            default:
                FileHandle.standardError.write(Data("pixtrack: watch ended (\(code.name): \(message)); resuming after cursor \(cursor.isEmpty ? "(new events)" : cursor) in \(backoff) s\n".utf8))
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 10)
            }
        }
    }
}

/// `pixtrack notify …`: outbound notification tasks.
struct NotifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Outbound payment notification tasks (bots' notify_url).",
        subcommands: [NotifyRequeueCommand.self])
}

/// `pixtrack notify requeue [--bot N]`: PaymentService/RequeueNotifications.
struct NotifyRequeueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "requeue",
        abstract: "Send parked notifications again, once the receiver is fixed.",
        discussion: """
        A notification is parked after its last attempt (PIXTRACK_NOTIFY_MAX_ATTEMPTS, or
        PIXTRACK_NOTIFY_MAX_AGE_MS after the event: 3 days by default). Re-queued ones get
        a fresh retry window and keep their event ids (PixTrack-Event-Id), so a receiver
        that already processed one can recognise it.

        Examples:
          pixtrack notify requeue --dry-run
          pixtrack notify requeue --bot 7012345678
          pixtrack notify requeue --cursor 1042 --cursor 1043
        """)

    @Option(name: .long, help: "Only this bot's notifications (default: every bot).")
    var bot: Int64 = 0

    @Option(name: .long, help: "Only the notification of this event cursor (repeatable).")
    var cursor: [String] = []

    @Flag(name: .long, help: "Count what would be queued; change nothing.")
    var dryRun = false

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        var request = Pixtrack_V1_RequeueNotificationsRequest()
        request.botId = bot
        request.dryRun = dryRun
        request.cursors = cursor
        try runReportingFailures {
            let bytes = try connection.call("/pixtrack.v1.PaymentService/RequeueNotifications", try request.serializedBytes())
            let n = try Pixtrack_V1_RequeueNotificationsResponse(serializedBytes: bytes).requeued
            print("\(dryRun ? "would requeue" : "requeued") \(n) parked notification\(n == 1 ? "" : "s")")
        }
    }
}
