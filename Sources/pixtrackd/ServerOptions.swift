import Glibc

/// pixtrackd's settings: flags override environment variables, which override defaults.
struct ServerOptions {
    var host = "127.0.0.1"
    var port = 50051
    /// The internet-facing listener (public HTTP routes only); nil: none.
    var publicPort: Int?
    var publicHost = ""
    /// PEM certificate chain and private key: both listeners speak TLS (nil: plaintext).
    var tlsCertificate: String?
    var tlsKey: String?
    var maxMessageBytes = 4 << 20
    var graceSeconds = 10.0
    var allowUnauthenticated = false
    var enableTestService = false
    var eventLoops = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    /// `PIXTRACK_HANDLERS_ON_LOOP=0`: every handler task on the cooperative pool.
    var handlersOnEventLoop = true
    var logLevel = "info"
    var headerTimeoutMs = 10_000
    var bodyTimeoutMs = 30_000
    var idleTimeoutMs = 60_000
    var keepaliveMs = 30_000
    var maxConnections = 0
    var maxConnectionsPerIP = 256
    var maxConcurrentStreams = 100
    /// 0: the larger of 8 MiB and twice --max-message-bytes.
    var maxConnectionBufferBytes = 0
    var maxBufferBytes = 256 << 20
    /// From `PIXTRACK_RPC_TOKEN` only: a flag would show up in `ps`.
    var rpcToken: String?
    /// `pixtrackd migrate`: apply the database migrations and exit.
    var migrateOnly = false
    /// `pixtrackd rotate-secrets`: re-seal every secret under the current key and exit.
    var rotateSecrets = false

    static let usage = """
    pixtrackd: the PixTrack server (gRPC over HTTP/2 on one port).

    usage: pixtrackd [options]
           pixtrackd migrate        apply the database migrations, then exit
           pixtrackd rotate-secrets re-seal every stored secret under PIXTRACK_SECRETS_KEY_FILE's key (old keys in
                                    PIXTRACK_SECRETS_OLD_KEY_FILES), in committed batches, then exit (docs/secrets.md)

    options:
      --host ADDR               listen address (default 127.0.0.1; env PIXTRACK_HOST)
      --port N                  listen port, 0 picks a free one (default 50051; env PIXTRACK_PORT)
      --public-port N           a second listener for the internet: only GET /go/{slug}, POST /t/{token}/cookies,
                                POST /webhooks/{gateway}/{secret} and GET /healthz; no RPCs, no /metrics
                                (0 picks a free port; env PIXTRACK_PUBLIC_PORT). Put the reverse proxy in front of it.
      --public-host ADDR        its address (default: --host; env PIXTRACK_PUBLIC_HOST)
      --tls-cert FILE           PEM certificate chain (leaf first): both listeners speak TLS with ALPN
                                h2 and http/1.1 (env PIXTRACK_TLS_CERT; needs --tls-key). SIGHUP re-reads
                                both files; a bad file is logged and the old certificate stays.
      --tls-key FILE            its PEM private key (env PIXTRACK_TLS_KEY)
      --max-message-bytes N     largest request message accepted (default 4194304; env PIXTRACK_MAX_MESSAGE_BYTES)
      --grace-seconds S         how long shutdown waits for open calls (default 10; env PIXTRACK_GRACE_SECONDS)
      --event-loops N           I/O threads (default: one per core; env PIXTRACK_EVENT_LOOPS)
      --log-level LEVEL         debug, info, warning or error (default info; env PIXTRACK_LOG_LEVEL)
      --header-timeout-ms N     slow-client limit: request headers must arrive within N ms (default 10000)
      --body-timeout-ms N       an HTTP/1.1 request body must arrive within N ms (default 30000)
      --idle-timeout-ms N       a connection with nothing in flight closes after N ms (HTTP/2: GOAWAY; default 60000)
      --keepalive-ms N          HTTP/2 PING to a peer with open streams quiet for N ms; closed when it stays quiet
                                another N ms (default 30000; env PIXTRACK_KEEPALIVE_MS)
      --max-connections N       open connections at once; more are closed at accept
                                (default: the file descriptor limit less 256; env PIXTRACK_MAX_CONNECTIONS)
      --max-connections-per-ip N  per client address, trusted proxies exempt (default 256; env PIXTRACK_MAX_CONNECTIONS_PER_IP)
      --max-concurrent-streams N  HTTP/2 streams open at once per connection (default 100; env PIXTRACK_MAX_CONCURRENT_STREAMS)
      --max-connection-buffer-bytes N  request bytes one connection may have held at once; a stream
                                past it gets RESOURCE_EXHAUSTED (default max(8 MiB, 2 x max message);
                                env PIXTRACK_MAX_CONNECTION_BUFFER_BYTES)
      --max-buffer-bytes N      the same for all connections together (default 268435456; env PIXTRACK_MAX_BUFFER_BYTES)
      --allow-unauthenticated   permit a non-loopback address without PIXTRACK_RPC_TOKEN (logs a warning)
      --enable-test-service     register pixtrack.testing.v1.TestService (tests only; env PIXTRACK_TEST_SERVICE=1)
      -h, --help                this text

    environment:
      PIXTRACK_HANDLERS_ON_LOOP=0  run every handler task on the cooperative pool, also those of
                                the methods marked to run on the event loop (RecordPageView,
                                /go/{slug}); for comparing, or if one of them is found to block
      PIXTRACK_RPC_TOKEN        when set, every RPC except health and reflection needs
                                'authorization: Bearer <token>'
      PIXTRACK_ALLOW_CORE_DUMPS=1  keep core dumps possible (off by default: the process is made
                                non-dumpable and RLIMIT_CORE is 0, since its memory holds secrets)
    \(StorageOptions.environmentHelp)
    \(SecretColumns.environmentHelp)
    \(RetentionWiring.environmentHelp)
    \(TrackingWiring.environmentHelp)
    \(PaymentWiring.environmentHelp)
      PIXTRACK_PLUGIN_TIMEOUT_MS      plugin call timeout when it must differ from the gateway timeout
      PIXTRACK_PLUGIN_SHA256          pinned plugin hashes, file=hex,file=hex (a mismatch is refused)
      PIXTRACK_PLUGIN_ISOLATION       runner (default: each plugin in its own supervised process) or in-process
      PIXTRACK_PLUGIN_IN_PROCESS      plugins kept in-process anyway (trusted), by name or file: sandbox,libfoo.so
      PIXTRACK_PLUGIN_RUNNER          the runner binary (default: pixtrack-plugin-runner next to pixtrackd)
      PIXTRACK_PLUGIN_MEMORY_LIMIT_MB address space of each runner (default 2048; 0: none)
      PIXTRACK_PLUGIN_MAX_IN_FLIGHT   calls in flight per plugin (default 64; past it calls fail fast)
    """

    struct UsageError: Error { let message: String }

    static func parse(arguments: [String], environment: [String: String]) throws(UsageError) -> ServerOptions? {
        var o = ServerOptions()
        func int(_ v: String, _ name: String, min: Int, max: Int) throws(UsageError) -> Int {
            guard let n = Int(v), n >= min, n <= max else { throw UsageError(message: "\(name) must be an integer in \(min)...\(max), got '\(v)'") }
            return n
        }
        func double(_ v: String, _ name: String) throws(UsageError) -> Double {
            guard let d = Double(v), d >= 0, d <= 3600 else { throw UsageError(message: "\(name) must be a number of seconds in 0...3600, got '\(v)'") }
            return d
        }
        if let v = environment["PIXTRACK_HOST"], !v.isEmpty { o.host = v }
        if let v = environment["PIXTRACK_PORT"], !v.isEmpty { o.port = try int(v, "PIXTRACK_PORT", min: 0, max: 65535) }
        if let v = environment["PIXTRACK_PUBLIC_PORT"], !v.isEmpty { o.publicPort = try int(v, "PIXTRACK_PUBLIC_PORT", min: 0, max: 65535) }
        if let v = environment["PIXTRACK_PUBLIC_HOST"], !v.isEmpty { o.publicHost = v }
        if let v = environment["PIXTRACK_TLS_CERT"], !v.isEmpty { o.tlsCertificate = v }
        if let v = environment["PIXTRACK_TLS_KEY"], !v.isEmpty { o.tlsKey = v }
        if let v = environment["PIXTRACK_MAX_MESSAGE_BYTES"], !v.isEmpty { o.maxMessageBytes = try int(v, "PIXTRACK_MAX_MESSAGE_BYTES", min: 1, max: 1 << 30) }
        if let v = environment["PIXTRACK_GRACE_SECONDS"], !v.isEmpty { o.graceSeconds = try double(v, "PIXTRACK_GRACE_SECONDS") }
        if let v = environment["PIXTRACK_EVENT_LOOPS"], !v.isEmpty { o.eventLoops = try int(v, "PIXTRACK_EVENT_LOOPS", min: 1, max: 256) }
        if let v = environment["PIXTRACK_LOG_LEVEL"], !v.isEmpty { o.logLevel = v }
        if let v = environment["PIXTRACK_HANDLERS_ON_LOOP"], !v.isEmpty {
            guard v == "0" || v == "1" else { throw UsageError(message: "PIXTRACK_HANDLERS_ON_LOOP must be 0 or 1, got '\(v)'") }
            o.handlersOnEventLoop = v == "1"
        }
        if environment["PIXTRACK_TEST_SERVICE"] == "1" { o.enableTestService = true }
        if let v = environment["PIXTRACK_RPC_TOKEN"], !v.isEmpty { o.rpcToken = v }
        if let v = environment["PIXTRACK_MAX_CONNECTIONS"], !v.isEmpty { o.maxConnections = try int(v, "PIXTRACK_MAX_CONNECTIONS", min: 1, max: 1 << 20) }
        if let v = environment["PIXTRACK_MAX_CONNECTIONS_PER_IP"], !v.isEmpty {
            o.maxConnectionsPerIP = try int(v, "PIXTRACK_MAX_CONNECTIONS_PER_IP", min: 1, max: 1 << 20)
        }
        if let v = environment["PIXTRACK_MAX_CONCURRENT_STREAMS"], !v.isEmpty {
            o.maxConcurrentStreams = try int(v, "PIXTRACK_MAX_CONCURRENT_STREAMS", min: 1, max: 10_000)
        }
        if let v = environment["PIXTRACK_MAX_CONNECTION_BUFFER_BYTES"], !v.isEmpty {
            o.maxConnectionBufferBytes = try int(v, "PIXTRACK_MAX_CONNECTION_BUFFER_BYTES", min: 1024, max: 1 << 34)
        }
        if let v = environment["PIXTRACK_KEEPALIVE_MS"], !v.isEmpty { o.keepaliveMs = try int(v, "PIXTRACK_KEEPALIVE_MS", min: 1000, max: 3_600_000) }
        if let v = environment["PIXTRACK_MAX_BUFFER_BYTES"], !v.isEmpty { o.maxBufferBytes = try int(v, "PIXTRACK_MAX_BUFFER_BYTES", min: 1024, max: 1 << 40) }

        var i = 0
        if arguments.first == "migrate" {
            o.migrateOnly = true
            i = 1
        } else if arguments.first == "rotate-secrets" {
            o.rotateSecrets = true
            i = 1
        }
        func value(_ flag: String) throws(UsageError) -> String {
            i += 1
            guard i < arguments.count else { throw UsageError(message: "\(flag) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            let arg = arguments[i]
            switch arg {
            case "-h", "--help": return nil
            case "--host": o.host = try value(arg)
            case "--port": o.port = try int(try value(arg), arg, min: 0, max: 65535)
            case "--public-port": o.publicPort = try int(try value(arg), arg, min: 0, max: 65535)
            case "--public-host": o.publicHost = try value(arg)
            case "--tls-cert": o.tlsCertificate = try value(arg)
            case "--tls-key": o.tlsKey = try value(arg)
            case "--max-message-bytes": o.maxMessageBytes = try int(try value(arg), arg, min: 1, max: 1 << 30)
            case "--grace-seconds": o.graceSeconds = try double(try value(arg), arg)
            case "--event-loops": o.eventLoops = try int(try value(arg), arg, min: 1, max: 256)
            case "--log-level": o.logLevel = try value(arg)
            case "--header-timeout-ms": o.headerTimeoutMs = try int(try value(arg), arg, min: 100, max: 3_600_000)
            case "--body-timeout-ms": o.bodyTimeoutMs = try int(try value(arg), arg, min: 100, max: 3_600_000)
            case "--idle-timeout-ms": o.idleTimeoutMs = try int(try value(arg), arg, min: 100, max: 3_600_000)
            case "--keepalive-ms": o.keepaliveMs = try int(try value(arg), arg, min: 1000, max: 3_600_000)
            case "--max-connections": o.maxConnections = try int(try value(arg), arg, min: 1, max: 1 << 20)
            case "--max-connections-per-ip": o.maxConnectionsPerIP = try int(try value(arg), arg, min: 1, max: 1 << 20)
            case "--max-concurrent-streams": o.maxConcurrentStreams = try int(try value(arg), arg, min: 1, max: 10_000)
            case "--max-connection-buffer-bytes": o.maxConnectionBufferBytes = try int(try value(arg), arg, min: 1024, max: 1 << 34)
            case "--max-buffer-bytes": o.maxBufferBytes = try int(try value(arg), arg, min: 1024, max: 1 << 40)
            case "--allow-unauthenticated": o.allowUnauthenticated = true
            case "--enable-test-service": o.enableTestService = true
            default: throw UsageError(message: "unknown option '\(arg)' (see --help)")
            }
            i += 1
        }
        guard ["debug", "info", "warning", "error"].contains(o.logLevel) else {
            throw UsageError(message: "--log-level must be debug, info, warning or error, got '\(o.logLevel)'")
        }
        if (o.tlsCertificate == nil) != (o.tlsKey == nil) {
            throw UsageError(message: "--tls-cert and --tls-key go together (PIXTRACK_TLS_CERT, PIXTRACK_TLS_KEY): give both, or neither for plaintext")
        }
        if o.maxConnectionBufferBytes == 0 { o.maxConnectionBufferBytes = max(8 << 20, 2 * o.maxMessageBytes) }
        guard o.maxConnectionBufferBytes > o.maxMessageBytes, o.maxBufferBytes >= o.maxConnectionBufferBytes else {
            throw UsageError(message: "--max-connection-buffer-bytes must exceed --max-message-bytes (a largest message must fit), and --max-buffer-bytes must be at least --max-connection-buffer-bytes")
        }
        if o.rpcToken == nil && !isLoopback(o.host) && !o.allowUnauthenticated {
            throw UsageError(message: "refusing to listen on \(o.host) without PIXTRACK_RPC_TOKEN; set the token, or pass --allow-unauthenticated to accept unauthenticated calls from the network")
        }
        return o
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
