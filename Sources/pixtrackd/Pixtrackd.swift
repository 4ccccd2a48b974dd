import Dispatch
import Foundation
import Glibc
import HTTP2
import ProtoCodec
import RPC
import StandardServices
import WebRoutes

/// Entry point: read options, wire services to the server, serve until SIGTERM/SIGINT.
@main
enum Pixtrackd {
    static func main() async {
        let env = ProcessInfo.processInfo.environment
        let options: ServerOptions
        do {
            guard let o = try ServerOptions.parse(arguments: Array(CommandLine.arguments.dropFirst()), environment: env) else {
                print(ServerOptions.usage)
                exit(0)
            }
            options = o
        } catch {
            FileHandle.standardError.write(Data("pixtrackd: \(error.message)\n".utf8))
            exit(2)
        }
        let level: Logger.Level = switch options.logLevel {
        case "debug": .debug
        case "warning": .warning
        case "error": .error
        default: .info
        }
        let logger = Logger(minimum: level)
        signal(SIGPIPE, SIG_IGN)
        let signals = ShutdownSignals([SIGTERM, SIGINT])

        if options.rpcToken == nil && !ServerOptions.isLoopback(options.host) {
            logger.warning("unauthenticated_listen", ("host", options.host),
                           ("warning", "no PIXTRACK_RPC_TOKEN: anyone who reaches this address can call every RPC"))
        }

        let router: RPCRouter
        do {
            router = try ServiceWiring.router(options: options, logger: logger)
        } catch {
            logger.error("startup_failed", ("error", String(describing: error)))
            exit(1)
        }
        var config = HTTP2Server.Configuration()
        config.host = options.host
        config.port = options.port
        config.maxMessageBytes = options.maxMessageBytes
        config.eventLoops = options.eventLoops
        config.authToken = options.rpcToken

        let metrics = Metrics()
        var routes = HTTPRoutes()
        StandardRoutes.install(into: &routes, metrics: metrics, readiness: [])
        routes.fallback(ConnectGateway(router: router, authToken: options.rpcToken, metrics: metrics, logger: logger).handler)
        config.http1Limits.maxBodyBytes = options.maxMessageBytes
        config.timeouts.headerRead = .milliseconds(options.headerTimeoutMs)
        config.timeouts.bodyRead = .milliseconds(options.bodyTimeoutMs)
        config.timeouts.idle = .milliseconds(options.idleTimeoutMs)

        let server: HTTP2Server
        let port: Int
        do {
            server = try HTTP2Server(configuration: config, router: router, httpHandler: routes.handler, logger: logger, metrics: metrics)
            port = try server.start()
        } catch {
            logger.error("startup_failed", ("error", String(describing: error)))
            exit(1)
        }
        logger.info("listening", ("host", options.host), ("port", String(port)),
                    ("auth", options.rpcToken == nil ? "none" : "bearer"),
                    ("services", router.serviceNames.joined(separator: ",")))

        let signalName = await signals.next()
        logger.info("shutdown_begin", ("signal", signalName), ("grace_seconds", String(options.graceSeconds)),
                    ("in_flight", String(server.counters.inFlight.load(ordering: .relaxed))))
        let drained = await server.shutdown(grace: .milliseconds(Int64(options.graceSeconds * 1000)))
        logger.info("shutdown_complete", ("drained", String(drained)))
        exit(0)
    }
}

/// Catches SIGTERM/SIGINT from the moment it is made (before the port is announced, so a
/// supervisor that signals right after `listening` is honoured), and lets `main` await the first.
final class ShutdownSignals {
    private let sources: [any DispatchSourceSignal]
    private let stream: AsyncStream<String>

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        self.stream = stream
        sources = signals.map { sig in
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            let label = sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : String(sig)
            src.setEventHandler { continuation.yield(label) }
            src.resume()
            return src
        }
    }

    func next() async -> String {
        for await name in stream { return name }
        return "stream_ended"
    }
}
