import ArgumentParser
import ProtoCodec
import PixTrackMessages

/// `pixtrack meta …`: Conversions API outbox tasks.
struct MetaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meta",
        abstract: "Conversions API outbox tasks.",
        subcommands: [MetaRequeueCommand.self])
}

/// `pixtrack meta requeue --pixel P`: TrackingService/RequeueMetaEvents with a one-line answer.
struct MetaRequeueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "requeue",
        abstract: "Queue a pixel's parked events again, once what parked them is fixed.",
        discussion: """
        Events are parked when Meta refuses the token or an event, when the bot has
        no Conversions API token, and when a Purchase request went out but no answer
        came back: Meta may already count that one, so check Events Manager first and
        re-queue only the missing ones with --event-id (repeatable). Events past
        Meta's 7-day window stay parked and are counted as too old.

        Examples:
          pixtrack meta requeue --pixel 112233445566778 --dry-run
          pixtrack meta requeue --pixel 112233445566778 --event-name PageView
          pixtrack meta requeue --pixel 112233445566778 --event-id purchase_42
        """)

    @Option(name: .long, help: "The Meta pixel (dataset) id.")
    var pixel: String

    @Option(name: .long, help: "Only events of this name (PageView, Purchase).")
    var eventName: String = ""

    @Option(name: .long, help: "Only this event id (repeatable).")
    var eventId: [String] = []

    @Flag(name: .long, help: "Count what would be queued; change nothing.")
    var dryRun = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard !pixel.isEmpty, pixel.allSatisfy(\.isNumber) else { throw ValidationError("--pixel must be the pixel's digits") }
    }

    func run() throws {
        var request = Pixtrack_V1_RequeueMetaEventsRequest()
        request.pixelId = pixel
        request.dryRun = dryRun
        request.eventName = eventName
        request.eventIds = eventId
        try runReportingFailures {
            let bytes = try connection.call("/pixtrack.v1.TrackingService/RequeueMetaEvents", try request.serializedBytes())
            let reply = try Pixtrack_V1_RequeueMetaEventsResponse(serializedBytes: bytes)
            let (n, old) = (reply.requeued, reply.tooOld)
            print("\(dryRun ? "would requeue" : "requeued") \(n) parked event\(n == 1 ? "" : "s") of pixel \(pixel)"
                  + (old > 0 ? "; \(old) too old for Meta, left parked" : ""))
        }
    }
}
