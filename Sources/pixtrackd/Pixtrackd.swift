import CSystemShims
import Dispatch
import Foundation
import Glibc
import HTTP2
import Payments
import ProtoCodec
import RPC
import Secrets
import TLS
import StandardServices
import Tracking
import WebRoutes

/// Entry point: read options, wire services to the server, serve until SIGTERM/SIGINT.
@main
enum Pixtrackd {
    static func main() async {
        let env = ProcessInfo.processInfo.environment
        let options: ServerOptions
        let storageOptions: StorageOptions
        do {
            guard let o = try ServerOptions.parse(arguments: Array(CommandLine.arguments.dropFirst()), environment: env) else {
                print(ServerOptions.usage)
                exit(0)
            }
            options = o
            storageOptions = try StorageOptions.from(env)
        } catch {
            FileHandle.standardError.write(Data("pixtrackd: \(error.message)\n".utf8))
            exit(2)
        }
        // The secrets key before anything reads the database: a bad file is a usage error.
        let secrets: SecretKeyring?
        do {
            secrets = try SecretKeyFiles.keyring(environment: env)
        } catch {
            FileHandle.standardError.write(Data("pixtrackd: \(error)\n".utf8))
            exit(2)
        }
        let level: Logger.Level = switch options.logLevel {
        case "debug": .debug
        case "warning": .warning
        case "error": .error
        default: .info
        }
        let logger = Logger(minimum: level)
        // A core file of this process would hold every credential and token it has read.
        if env["PIXTRACK_ALLOW_CORE_DUMPS"] == "1" {
            logger.warning("core_dumps_allowed", ("reason", "PIXTRACK_ALLOW_CORE_DUMPS=1: a core file would contain secrets"))
        } else if pt_forbid_core_dumps() != 0 {
            logger.warning("core_dumps_not_disabled", ("error", String(cString: strerror(errno))))
        }
        signal(SIGPIPE, SIG_IGN)
        let signals = ShutdownSignals([SIGTERM, SIGINT])

        // TLS files are read before anything else starts: a server told to speak TLS that
        // cannot never falls back to plaintext.
        var tls: TLSContextStore?
        if let cert = options.tlsCertificate, let key = options.tlsKey {
            do {
                tls = try TLSContextStore(certificatePath: cert, keyPath: key)
            } catch {
                FileHandle.standardError.write(Data("pixtrackd: \(error)\n".utf8))
                exit(2)
            }
        }
        let reloads = CertificateReloader(store: tls, logger: logger)

        if options.rpcToken == nil && !ServerOptions.isLoopback(options.host) {
            logger.warning("unauthenticated_listen", ("host", options.host),
                           ("warning", "no PIXTRACK_RPC_TOKEN: anyone who reaches this address can call every RPC"))
        }

        // Storage first: migrations run before the port opens (`pixtrackd migrate` stops there).
        let metrics = Metrics()
        let storage: Storage
        let tracking: TrackingWiring
        let payments: PaymentWiring
        let retention: RetentionJob?
        do {
            storage = try Storage(options: storageOptions, eventLoops: options.eventLoops, logger: logger)
            let applied = try await storage.migrate(extra: PaymentMigrations.all)
            logger.info("migrations_done", ("applied", applied.map(String.init).joined(separator: ",")))
            if options.migrateOnly { exit(0) }
            let columns = SecretColumns(pool: storage.pool, logger: logger)
            if let refusal = try await columns.prepare(ring: secrets) {
                logger.error("secrets_key_refused", ("error", refusal))
                FileHandle.standardError.write(Data("pixtrackd: \(refusal)\n".utf8))
                exit(2)
            }
            if options.rotateSecrets {
                guard let secrets else {
                    FileHandle.standardError.write(Data("pixtrackd: rotate-secrets needs PIXTRACK_SECRETS_KEY_FILE (the new key)\n".utf8))
                    exit(2)
                }
                exit(try await columns.rotate(ring: secrets))
            }
            if let file = env[SecretKeyFiles.keyFileVariable], SecretKeyFiles.isReadableByOthers(file) {
                logger.warning("secrets_key_file_readable", ("file", file), ("fix", "chmod 600: the key opens every stored secret"))
            }
            tracking = try TrackingWiring(storage: storage, environment: env, metrics: metrics, logger: logger, secrets: secrets)
            payments = try await PaymentWiring(storage: storage, tracking: tracking.service, environment: env,
                                               metrics: metrics, logger: logger, secrets: secrets)
            let retain = try RetentionWiring.configuration(env)
            retention = env["PIXTRACK_PAYMENT_WORKERS"] == "0" ? nil
                : RetentionJob(pool: storage.pool, configuration: retain, metrics: metrics, logger: logger, extraSteps: [
                    RetentionStep(table: "bot_users", action: "names_removed", days: retain.piiDays) { c, limit in
                        try BotUserRetention.removeNames(olderThanDays: retain.piiDays, limit: limit, on: c)
                    },
                ])
        } catch let error as ServerOptions.UsageError {
            FileHandle.standardError.write(Data("pixtrackd: \(error.message)\n".utf8))
            exit(2)
        } catch {
            logger.error("startup_failed", ("error", String(describing: error)))
            exit(1)
        }
        storage.startMonitor()

        let router: RPCRouter
        do {
            router = try ServiceWiring.router(options: options, logger: logger, domainMethods: tracking.service.methods + payments.methods,
                                              isServing: storage.isServing)
        } catch {
            logger.error("startup_failed", ("error", String(describing: error)))
            exit(1)
        }
        var config = HTTP2Server.Configuration()
        config.host = options.host
        config.port = options.port
        config.publicPort = options.publicPort
        config.publicHost = options.publicHost
        config.maxMessageBytes = options.maxMessageBytes
        config.eventLoops = options.eventLoops
        config.handlersOnEventLoop = options.handlersOnEventLoop
        config.authToken = options.rpcToken
        config.tls = tls

        var routes = HTTPRoutes()
        StandardRoutes.install(into: &routes, metrics: metrics, readiness: storage.readiness)
        tracking.installRoutes(into: &routes)
        payments.installRoutes(into: &routes)
        routes.fallback(ConnectGateway(router: router, authToken: options.rpcToken, metrics: metrics, logger: logger).handler)
        config.http1Limits.maxBodyBytes = options.maxMessageBytes
        config.timeouts.headerRead = .milliseconds(options.headerTimeoutMs)
        config.timeouts.bodyRead = .milliseconds(options.bodyTimeoutMs)
        config.timeouts.idle = .milliseconds(options.idleTimeoutMs)
        config.timeouts.keepalive = .milliseconds(options.keepaliveMs)
        config.maxConnections = options.maxConnections
        config.maxConnectionsPerIP = options.maxConnectionsPerIP
        config.maxConcurrentStreams = options.maxConcurrentStreams
        config.maxConnectionBufferBytes = options.maxConnectionBufferBytes
        config.maxBufferBytes = options.maxBufferBytes
        let proxies = tracking.service.configuration.trustedProxies
        config.exemptFromPerIPLimit = { proxies.trusts($0) }

        let server: HTTP2Server
        let port: Int
        do {
            // The internet-facing table: what browsers and gateways need, nothing an operator does.
            let publicRoutes = routes.restricted(to: ["GET /go/{slug}", "POST /t/{token}/cookies",
                                                      "POST /webhooks/{gateway}/{secret}", "GET /healthz"])
            server = try HTTP2Server(configuration: config, router: router, httpHandler: routes.handler,
                                     publicHTTPHandler: publicRoutes.handler, logger: logger, metrics: metrics)
            storage.hostStorage(on: server)
            port = try server.start()
        } catch {
            logger.error("startup_failed", ("error", String(describing: error)))
            exit(1)
        }
        logger.info("listening", ("host", options.host), ("port", String(port)),
                    ("auth", options.rpcToken == nil ? "none" : "bearer"), ("tls", tls == nil ? "off" : "on"),
                    ("services", router.serviceNames.joined(separator: ",")))
        if options.publicPort != nil {
            logger.info("listening_public", ("host", options.publicHost.isEmpty ? options.host : options.publicHost),
                        ("port", String(server.publicPort)), ("routes", "GET /go/{slug},POST /t/{token}/cookies,POST /webhooks/{gateway}/{secret},GET /healthz"))
        }
        tracking.sender?.start()
        payments.workers?.start()
        payments.startEvents()
        retention?.start()

        if let tls { logger.info("tls_certificate", ("certificate", tls.current.summary)) }
        reloads.start()

        let signalName = await signals.next()
        logger.info("shutdown_begin", ("signal", signalName), ("grace_seconds", String(options.graceSeconds)),
                    ("in_flight", String(server.counters.inFlight.load(ordering: .relaxed))))
        let grace = Duration.milliseconds(Int64(options.graceSeconds * 1000))
        let started = ContinuousClock.now
        // Watch streams never end by themselves: end them first (UNAVAILABLE, clients resume elsewhere).
        await payments.hub.shutdown()
        let drained = await server.shutdown(grace: grace)
        // The sender sends what is due within what is left of the grace period; the rest stays queued.
        await tracking.sender?.shutdown(grace: max(.zero, grace - (ContinuousClock.now - started)))
        await payments.workers?.shutdown()
        await payments.stopEvents()
        await retention?.shutdown()
        await storage.close()
        logger.info("shutdown_complete", ("drained", String(drained)))
        exit(0)
    }
}

/// SIGHUP: the TLS certificate and key are read again (new connections use them; open ones keep
/// theirs). Without TLS it only says so: SIGHUP never stops the server.
final class CertificateReloader: @unchecked Sendable {
    private let store: TLSContextStore?
    private let logger: Logger
    private let source: any DispatchSourceSignal

    init(store: TLSContextStore?, logger: Logger) {
        self.store = store
        self.logger = logger
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    }

    func start() {
        source.setEventHandler { [self] in
            guard let store else {
                logger.info("sighup_ignored", ("reason", "TLS is off: nothing to reload"))
                return
            }
            do {
                let fresh = try store.reload()
                logger.info("tls_reloaded", ("certificate", fresh.summary))
            } catch {
                logger.error("tls_reload_failed", ("error", String(describing: error)), ("kept", store.current.summary))
            }
        }
        source.resume()
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
