import ArgumentParser

/// `pixtrack`: PixTrack's command-line tools. Each subcommand lives in its own file.
@main
struct Pixtrack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pixtrack",
        abstract: "PixTrack command-line tools: ad-hoc RPC calls (JSON in, JSON out) and operator tasks.",
        discussion: """
        RPC subcommands speak gRPC over HTTP/2 to pixtrackd (--addr, default 127.0.0.1:50051).
        Exit status: 0 OK; 1 a check failed (e.g. health not SERVING); 64 bad usage or input;
        64 + the gRPC status code when a call fails (65 CANCELLED, 66 UNKNOWN, 67 INVALID_ARGUMENT,
        68 DEADLINE_EXCEEDED, 69 NOT_FOUND, 70 ALREADY_EXISTS, 71 PERMISSION_DENIED,
        72 RESOURCE_EXHAUSTED, 73 FAILED_PRECONDITION, 74 ABORTED, 75 OUT_OF_RANGE,
        76 UNIMPLEMENTED, 77 INTERNAL, 78 UNAVAILABLE, 79 DATA_LOSS, 80 UNAUTHENTICATED).
        """,
        subcommands: [CallCommand.self, ListCommand.self, DescribeCommand.self, HealthCommand.self, MetaCommand.self, PaymentCommand.self, WatchCommand.self, NotifyCommand.self, PluginCommand.self])
}
