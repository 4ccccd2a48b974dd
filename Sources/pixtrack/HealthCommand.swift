import ArgumentParser
import Foundation
import ProtoCodec
import PixTrackMessages

struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask grpc.health.v1.Health/Check; exit 0 only when SERVING.",
        discussion: """
        Examples:
          pixtrack health
          pixtrack health pixtrack.v1.PaymentService --addr 10.0.0.5:50051
        """)

    @Argument(help: "Service name; empty means the whole server.")
    var service: String = ""

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try runReportingFailures {
            var req = Grpc_Health_V1_HealthCheckRequest()
            req.service = service
            let bytes = try connection.call("/grpc.health.v1.Health/Check", try req.serializedBytes())
            let status = try Grpc_Health_V1_HealthCheckResponse(serializedBytes: bytes).status.rawValue
            let name = [0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"][Int(status)] ?? String(status)
            print(name)
            if status != 1 { throw ExitCode(1) }
        }
    }
}
