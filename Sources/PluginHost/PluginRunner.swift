import GatewayABI
import Glibc
import RPC
import Synchronization

/// How plugins are isolated (`PIXTRACK_PLUGIN_ISOLATION`, `PIXTRACK_PLUGIN_IN_PROCESS`).
public struct PluginIsolation: Sendable {
    /// Plugins run in their own supervised processes unless named in `inProcess`.
    public var runners = true
    /// Plugin names (from their tables) or file names kept in this process (trusted plugins).
    public var inProcess: Set<String> = []
    /// The runner executable; nil: `pixtrack-plugin-runner` next to this process's executable.
    public var executable: String?
    /// Address-space limit of each runner (`RLIMIT_AS`), MiB; 0: none.
    public var memoryLimitMB = 2048
    /// Crashes in a row after which a plugin is reported unhealthy.
    public var unhealthyAfter = 3

    public init() {}

    func runsInProcess(fileName: String) -> Bool { !runners || inProcess.contains(fileName) }

    /// The runner binary to start.
    var runnerPath: String {
        if let executable { return executable }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let me = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let dir = me.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return dir + "/pixtrack-plugin-runner"
    }
}

/// The host side of one plugin's runner process: starts it, hands it calls, performs the HTTP
/// requests it forwards, and starts it again when it dies.
///
/// - A runner that dies (signal, exit, memory limit) fails every call it held; `create_pix` then
///   reads UNKNOWN (the reconciler settles the payment), the other calls an error. It is started
///   again after a back-off that doubles with each crash in a row (100 ms up to 30 s); meanwhile
///   calls fail at once. After `unhealthyAfter` crashes in a row the plugin is reported unhealthy
///   (ListGateways, /metrics) until a call succeeds again.
/// - A call past its deadline kills the runner (`kill`): its thread and quota slot return, and
///   the abandoned call can do nothing more.
/// - Instances live in the runner: after a restart each is created again from its configuration
///   on its next call (`RemoteInstance`).
final class PluginRunner: @unchecked Sendable {
    let displayPath: String
    private let pluginFD: Int32
    private let executable: String
    private let memoryLimitMB: Int
    private let unhealthyAfter: Int
    private let logger: Logger
    /// Set once the first HELLO named the plugin.
    private(set) var name = ""

    enum Reply: Sendable {
        case frame(RunnerFrame)
        /// No answer: the runner died during the call (`started`), or there was no runner.
        case lost(String, started: Bool)
    }

    private struct Pending {
        /// Called once with the answer (or the loss), on the thread that learned it.
        let deliver: @Sendable (Reply) -> Void
        let context: PluginCall?
        /// A plugin call (not `create`): one that returns brings health back.
        let isCall: Bool
        /// A CALL sent while the plugin was unhealthy: the one probe allowed at a time.
        var probe = false
        /// An HTTP request of this call is being performed.
        var httpBusy = false
    }

    private struct State {
        var pid: pid_t = 0
        var socket: FrameSocket?
        /// Bumped at each start: instances created by an earlier process are gone.
        var generation: UInt64 = 0
        var pending: [UInt64: Pending] = [:]
        var nextCall: UInt64 = 1
        var restarts = 0
        var crashesInARow = 0
        var lastDeath = ""
        var killReason: String?
        var stopped = false
    }

    private let state = Mutex(State())

    private init(displayPath: String, pluginFD: Int32, executable: String, memoryLimitMB: Int, unhealthyAfter: Int, logger: Logger) {
        self.displayPath = displayPath
        self.pluginFD = pluginFD
        self.executable = executable
        self.memoryLimitMB = memoryLimitMB
        self.unhealthyAfter = unhealthyAfter
        self.logger = logger
    }

    /// Starts a runner for the checked file open at `fd` (duplicated: the runner always opens
    /// the very file that was hashed, even after it is replaced on disk) and waits for its HELLO.
    static func start(fd: Int32, real: String, sha: String, displayPath: String, isolation: PluginIsolation,
                      logger: Logger) -> Result<LoadedPlugin, PluginLoadFailure> {
        func fail(_ reason: String) -> Result<LoadedPlugin, PluginLoadFailure> {
            .failure(PluginLoadFailure(path: displayPath, reason: reason, sha256: sha))
        }
        let kept = fcntl(fd, F_DUPFD_CLOEXEC, 10)
        guard kept >= 0 else { return fail("cannot keep the plugin file open: \(PluginLoader.errnoText())") }
        let executable = isolation.runnerPath
        guard access(executable, X_OK) == 0 else {
            Glibc.close(kept)
            return fail("plugin runner \(executable) is missing or not executable (build it, set PIXTRACK_PLUGIN_RUNNER, or PIXTRACK_PLUGIN_ISOLATION=in-process)")
        }
        let runner = PluginRunner(displayPath: displayPath, pluginFD: kept, executable: executable,
                                  memoryLimitMB: isolation.memoryLimitMB, unhealthyAfter: isolation.unhealthyAfter, logger: logger)
        switch runner.spawn(waitForHello: PluginLoader.entryTimeoutMs + 3_000) {
        case .failure(let reason):
            runner.stop()
            return fail(reason.text)
        case .success(let hello):
            runner.name = hello.name
            let info = PluginInfo(name: hello.name, version: hello.version, description: hello.description,
                                  abiMajor: hello.abiMajor, abiMinor: hello.abiMinor, path: real, sha256: sha,
                                  capabilities: hello.capabilities)
            return .success(LoadedPlugin(info: info, runner: runner))
        }
    }

    /// Starts the process and reads its HELLO (blocking, bounded); then a reader thread serves it.
    private func spawn(waitForHello timeoutMs: Int64) -> Result<RunnerFrame.Hello, PluginLoadFailureReason> {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            return .failure(.init("socketpair: \(PluginLoader.errnoText())"))
        }
        // The child's end moves to fd 3, the plugin file to 4; both start above 4 so dup2 always
        // copies (and clears close-on-exec on the copy only).
        let childEnd = fcntl(pair[1], F_DUPFD_CLOEXEC, 10)
        Glibc.close(pair[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, childEnd, 3)
        posix_spawn_file_actions_adddup2(&actions, pluginFD, 4)
        let args = [executable, "--socket", "3", "--plugin", "4", "--memory-limit-mb", String(memoryLimitMB)]
        let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        // No inherited environment: the host's (database URL, tokens) is none of a plugin's business.
        // SWIFT_BACKTRACE off: a crash is the plugin's, reported by the host from the signal.
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), strdup("SWIFT_BACKTRACE=enable=no"), nil]
        defer { (argv + envp).forEach { free($0) } }
        var spawned = pid_t()
        let rc = posix_spawn(&spawned, executable, &actions, nil, argv, envp)
        let pid = spawned
        Glibc.close(childEnd)
        guard rc == 0 else {
            Glibc.close(pair[0])
            return .failure(.init("cannot start the plugin runner \(executable): \(String(cString: strerror(rc)))"))
        }
        let socket = FrameSocket(fd: pair[0])
        // The HELLO, within the bound (a runner stuck in the entry function is killed).
        let hello = BlockingBox<RunnerFrame?>()
        guard PluginThread.start({ hello.put(socket.receive()) }) else {
            Glibc.kill(pid, SIGKILL)
            _ = waitpid(pid, nil, 0)
            Glibc.close(pair[0])
            return .failure(.init("cannot start a thread for the plugin runner"))
        }
        guard let answer = hello.wait(timeoutMs: timeoutMs), let frame = answer, frame.kind == .hello, let h = frame.hello else {
            Glibc.kill(pid, SIGKILL)
            let died = Self.reap(pid)
            Glibc.close(pair[0])
            return .failure(.init("plugin runner gave no HELLO within \(timeoutMs) ms (\(died))"))
        }
        guard h.error.isEmpty else {
            _ = Self.reap(pid)
            Glibc.close(pair[0])
            return .failure(.init(h.error))
        }
        if !name.isEmpty, h.name != name {
            Glibc.kill(pid, SIGKILL)
            _ = Self.reap(pid)
            Glibc.close(pair[0])
            return .failure(.init("the plugin now calls itself '\(h.name)', not '\(name)'"))
        }
        let generation: UInt64 = state.withLock { s in
            s.pid = pid
            s.socket = socket
            s.generation += 1
            s.killReason = nil
            return s.generation
        }
        guard PluginThread.start({ [self] in read(socket, pid: pid, generation: generation) }) else {
            Glibc.kill(pid, SIGKILL)
            return .failure(.init("cannot start a thread for the plugin runner"))
        }
        return .success(h)
    }

    /// Serves one process's frames until it goes away.
    private func read(_ socket: FrameSocket, pid: pid_t, generation: UInt64) {
        while let frame = socket.receive() {
            switch frame.kind {
            case .result:
                // Health comes back with a call that returned, not with a `create` (a
                // crash-looping plugin is created again after every restart).
                let p: Pending? = state.withLock { s in
                    guard let p = s.pending.removeValue(forKey: frame.call) else { return nil }
                    if p.isCall { s.crashesInARow = 0 }
                    return p
                }
                p?.deliver(.frame(frame))
            case .http:
                // The runner is the plugin's process, so its frames are not trusted: a request
                // is performed only for a call in flight with no other request running (the
                // runner sends them one at a time), so threads and requests stay bounded by the
                // calls in flight whatever it sends.
                let context: PluginCall? = state.withLock { s in
                    guard let p = s.pending[frame.call], let context = p.context, !p.httpBusy else { return nil }
                    s.pending[frame.call]?.httpBusy = true
                    return context
                }
                // Blocking (libcurl): its own thread, so other calls' results keep flowing.
                guard let context, PluginThread.start({ [self] in
                    var reply = RunnerFrame(.httpReply, call: frame.call)
                    (reply.status, reply.payload) = HostAPI.perform(frame.payload, on: context)
                    state.withLock { $0.pending[frame.call]?.httpBusy = false }
                    socket.send(reply)
                }) else {
                    if context != nil { state.withLock { $0.pending[frame.call]?.httpBusy = false } }
                    var reply = RunnerFrame(.httpReply, call: frame.call)
                    reply.status = Int32(PT_ERR_UNAVAILABLE)
                    socket.send(reply)
                    continue
                }
            case .log:
                if let context = state.withLock({ $0.pending[frame.call]?.context }) {
                    context.log(frame.logLevel, String(frame.message.prefix(HostAPI.maxLogBytes)))
                } else {
                    HostAPI.logUnattributed(frame.logLevel, String(frame.message.prefix(HostAPI.maxLogBytes)))
                }
            default:
                break  // a runner sends nothing else; ignore rather than trust it
            }
        }
        died(socket, pid: pid, generation: generation)
    }

    /// The process is gone: every call it held is lost; a new one starts after the back-off.
    private func died(_ socket: FrameSocket, pid: pid_t, generation: UInt64) {
        Glibc.kill(pid, SIGKILL)  // it may only have closed its socket
        let how = Self.reap(pid)
        let (orphans, delayMs, crashes, stopped, reason): ([Pending], Int64, Int, Bool, String) = state.withLock { s in
            let reason = s.killReason.map { "killed: \($0)" } ?? how
            guard s.generation == generation else { return ([], 0, s.crashesInARow, s.stopped, reason) }
            let orphans = Array(s.pending.values)
            s.pending.removeAll()
            s.socket = nil
            s.pid = 0
            s.crashesInARow += 1
            s.lastDeath = reason
            let delay = min(Int64(100) << min(s.crashesInARow - 1, 9), 30_000)
            return (orphans, delay, s.crashesInARow, s.stopped, reason)
        }
        Glibc.close(socket.fd)
        for p in orphans { p.deliver(.lost("plugin runner of \(name) died during the call (\(reason))", started: true)) }
        guard !stopped else { return }
        logger.error("plugin_runner_died", ("plugin", name), ("path", displayPath), ("reason", reason),
                     ("calls_lost", String(orphans.count)), ("crashes_in_a_row", String(crashes)),
                     ("restart_in_ms", String(delayMs)))
        DeadlineTimer.shared.schedule(afterMs: delayMs) { [self] in
            // Off the timer thread: starting a process and waiting for HELLO takes a while.
            _ = PluginThread.start { [self] in restart() }
        }
    }

    private func restart() {
        guard !state.withLock({ $0.stopped }) else { return }
        switch spawn(waitForHello: PluginLoader.entryTimeoutMs + 3_000) {
        case .success:
            let restarts = state.withLock { s in s.restarts += 1; return s.restarts }
            logger.info("plugin_runner_restarted", ("plugin", name), ("restarts", String(restarts)))
        case .failure(let reason):
            let delay: Int64 = state.withLock { s in
                s.crashesInARow += 1
                s.lastDeath = reason.text
                return min(Int64(100) << min(s.crashesInARow - 1, 9), 30_000)
            }
            logger.error("plugin_runner_restart_failed", ("plugin", name), ("reason", reason.text), ("retry_in_ms", String(delay)))
            DeadlineTimer.shared.schedule(afterMs: delay) { [self] in _ = PluginThread.start { [self] in restart() } }
        }
    }

    /// Waits for `pid` (killed or exiting) and says how it ended.
    static func reap(_ pid: pid_t) -> String {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return "exit status unknown" }
        }
        let signal = status & 0x7f
        if signal != 0 { return "signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exited with status \((status >> 8) & 0xff)"
    }

    // MARK: - calls

    /// The current process's generation; 0 while there is none.
    var generation: UInt64 { state.withLock { $0.socket == nil ? 0 : $0.generation } }

    /// How `submit` went.
    enum Submission {
        /// On its way: `deliver` will be called exactly once.
        case sent
        /// No process (it is restarting): nothing was sent and `deliver` will not be called.
        case down
    }

    /// Sends `frame` (its call number is assigned here) without blocking; `deliver` gets the
    /// answer, or the loss when the runner dies first. A call held back (unhealthy plugin, one
    /// probe at a time) or refused by the socket is delivered as lost at once, unsent. The
    /// caller's deadline is enforced by `PluginThreads` and `kill`.
    func submit(_ frame: RunnerFrame, context: PluginCall?, deliver: @escaping @Sendable (Reply) -> Void) -> Submission {
        var frame = frame
        enum Admission { case send(FrameSocket), down, heldBack(Int) }
        let admission: Admission = state.withLock { s in
            guard let socket = s.socket else { return .down }
            // Unhealthy: one call at a time probes the plugin; the others fail at once, unsent.
            let unhealthy = s.crashesInARow >= unhealthyAfter && frame.kind == .call
            if unhealthy, s.pending.values.contains(where: \.probe) { return .heldBack(s.crashesInARow) }
            frame.call = s.nextCall
            s.nextCall += 1
            s.pending[frame.call] = Pending(deliver: deliver, context: context, isCall: frame.kind == .call, probe: unhealthy)
            return .send(socket)
        }
        switch admission {
        case .down:
            return .down
        case .heldBack(let crashes):
            deliver(.lost("plugin \(name) is unhealthy (\(crashes) crashes in a row); one call at a time probes it and this one was not sent", started: false))
        case .send(let socket):
            if !socket.send(frame), let p = state.withLock({ $0.pending.removeValue(forKey: frame.call) }) {
                p.deliver(.lost("plugin runner of \(name) is gone; the call was not sent", started: false))
            }
        }
        return .sent
    }

    /// `submit`, blocking until the answer. A runner that is restarting after a single crash is
    /// worth waiting for (within the call's deadline); one that keeps crashing fails fast.
    func exchange(_ frame: RunnerFrame, context: PluginCall?) -> Reply {
        let box = BlockingBox<Reply>()
        switch submit(frame, context: context, deliver: { box.put($0) }) {
        case .sent:
            return box.wait(timeoutMs: 86_400_000) ?? .lost("no answer from the plugin runner", started: true)
        case .down:
            if let context, waitForRestart(until: context.deadlineMs) { return exchange(frame, context: context) }
            return .lost(unavailableReason, started: false)
        }
    }

    /// True when a new process came up before `deadlineMs` (only after fewer crashes in a row
    /// than `unhealthyAfter`; waits at most 2 s).
    func waitForRestart(until deadlineMs: Int64) -> Bool {
        let limit = min(deadlineMs, Clock.monotonicMs() + 2_000)
        while Clock.monotonicMs() < limit {
            let (up, crashes, stopped) = state.withLock { ($0.socket != nil, $0.crashesInARow, $0.stopped) }
            if up { return true }
            if stopped || crashes >= unhealthyAfter { return false }
            usleep(10_000)
        }
        return false
    }

    /// Why calls fail at once while there is no process.
    var unavailableReason: String {
        let (why, crashes) = state.withLock { ($0.lastDeath, $0.crashesInARow) }
        return "plugin \(name) is restarting after \(crashes) crash(es) in a row (last: \(why)); the call was not sent"
    }

    /// Fire and forget (DESTROY).
    func post(_ frame: RunnerFrame) {
        state.withLock { $0.socket }?.send(frame)
    }

    /// A call passed its deadline and was abandoned: if it is still inside the plugin `graceMs`
    /// later, the runner is killed (its thread and quota slot return). A call that answers a
    /// little late costs nothing more than its discarded result.
    func killIfStillRunning(_ call: PluginCall, graceMs: Int64, reason: String) {
        DeadlineTimer.shared.schedule(afterMs: graceMs) { [self] in
            let running = state.withLock { s in s.pending.values.contains { $0.context === call } }
            if running { kill(reason: reason) }
        }
    }

    /// Kills the current process; it is started again as after a crash.
    func kill(reason: String) {
        let pid: pid_t = state.withLock { s in
            guard s.pid != 0 else { return 0 }
            if s.killReason == nil { s.killReason = reason }
            return s.pid
        }
        if pid != 0 { Glibc.kill(pid, SIGKILL) }
    }

    /// Ends the runner for good (registry teardown).
    func stop() {
        let pid: pid_t = state.withLock { s in
            s.stopped = true
            return s.pid
        }
        if pid != 0 { Glibc.kill(pid, SIGKILL) }
    }

    /// The current process (0: none), for diagnostics and tests.
    var pid: pid_t { state.withLock { $0.pid } }

    /// For ListGateways and /metrics.
    var health: (healthy: Bool, restarts: Int, crashesInARow: Int, lastDeath: String) {
        state.withLock { s in (s.crashesInARow < unhealthyAfter, s.restarts, s.crashesInARow, s.lastDeath) }
    }
}

/// An instance that lives in a runner. After the runner restarts, it is created again from its
/// configuration on its next call (the plugin sees a fresh `create`, as after a host restart).
final class RemoteInstance: Sendable {
    let runner: PluginRunner
    private let config: [UInt8]
    private let current = Mutex<(generation: UInt64, id: UInt64)>((0, 0))

    private init(runner: PluginRunner, config: [UInt8], generation: UInt64, id: UInt64) {
        self.runner = runner
        self.config = config
        current.withLock { $0 = (generation, id) }
    }

    deinit {
        let (generation, id) = current.withLock { $0 }
        guard generation == runner.generation, id != 0 else { return }
        var frame = RunnerFrame(.destroy)
        frame.instance = id
        runner.post(frame)
    }

    /// `create` in the runner (blocking). Failure: the plugin's message (unredacted), or why
    /// the runner could not be asked.
    static func create(_ runner: PluginRunner, config: [UInt8], call: PluginCall) -> Result<RemoteInstance, CreateFailureMessage> {
        let generation = runner.generation
        switch runCreate(runner, config: config, call: call) {
        case .failure(let f): return .failure(f)
        case .success(let id): return .success(RemoteInstance(runner: runner, config: config, generation: generation, id: id))
        }
    }

    private static func runCreate(_ runner: PluginRunner, config: [UInt8], call: PluginCall) -> Result<UInt64, CreateFailureMessage> {
        var frame = RunnerFrame(.create)
        frame.payload = config
        frame.deadlineMs = call.deadlineMs == .max ? 0 : call.deadlineMs
        switch runner.exchange(frame, context: call) {
        case .lost(let why, _):
            return .failure(CreateFailureMessage(why))
        case .frame(let r):
            guard r.status == PT_OK else {
                return .failure(CreateFailureMessage("create failed with status \(r.status)\(r.message.isEmpty ? "" : ": " + r.message)"))
            }
            guard r.instance != 0 else { return .failure(CreateFailureMessage("create returned OK without an instance")) }
            return .success(r.instance)
        }
    }

    /// One call, without a thread when the runner is up and the instance exists (the common
    /// case): the frame goes out from the caller and `finish` runs on the host's reader thread
    /// when the answer comes. Otherwise (restart to wait for, instance to create again) the
    /// blocking `call` runs on a thread of its own.
    func start(_ call: PluginCall, _ op: GatewayInstance.Operation, _ request: [UInt8],
               finish: @escaping @Sendable (GatewayInstance.RawResult) -> Void) {
        let generation = runner.generation
        let id = current.withLock { $0.generation == generation ? $0.id : 0 }
        if generation != 0, id != 0 {
            let frame = Self.callFrame(call, op, instance: id, request)
            if case .sent = runner.submit(frame, context: call, deliver: { reply in
                call.close()
                finish(Self.result(reply, call))
            }) { return }
        }
        guard PluginThread.start({ [self] in finish(self.call(call, op, request)) }) else {
            call.close()
            finish(.lost("no thread could be started for the plugin call", started: false))
            return
        }
    }

    /// One call (blocking), re-creating the instance first when the runner was restarted.
    func call(_ call: PluginCall, _ op: GatewayInstance.Operation, _ request: [UInt8]) -> GatewayInstance.RawResult {
        if runner.generation == 0 { _ = runner.waitForRestart(until: call.deadlineMs) }
        let generation = runner.generation
        var id = current.withLock { $0.generation == generation ? $0.id : 0 }
        if id == 0 {
            guard generation != 0 else { return .lost(runner.unavailableReason, started: false) }
            switch Self.runCreate(runner, config: config, call: call) {
            case .failure(let f):
                call.close()
                return .lost("the instance could not be created again after a runner restart: \(call.environment.redactor.redact(f.text))",
                             started: call.mayHaveSent)
            case .success(let fresh):
                current.withLock { $0 = (generation, fresh) }
                id = fresh
            }
        }
        let reply = runner.exchange(Self.callFrame(call, op, instance: id, request), context: call)
        call.close()
        return Self.result(reply, call)
    }

    private static func callFrame(_ call: PluginCall, _ op: GatewayInstance.Operation, instance: UInt64, _ request: [UInt8]) -> RunnerFrame {
        var frame = RunnerFrame(.call)
        frame.instance = instance
        frame.operation = op.number
        frame.payload = request
        frame.deadlineMs = call.deadlineMs == .max ? 0 : call.deadlineMs
        return frame
    }

    private static func result(_ reply: PluginRunner.Reply, _ call: PluginCall) -> GatewayInstance.RawResult {
        switch reply {
        case .lost(let why, let started):
            return .lost(call.environment.redactor.redact(why), started: started)
        case .frame(let r):
            var raw = GatewayInstance.RawResult(status: r.status, bytes: r.hasPayload && r.status == PT_OK ? r.payload : nil,
                                                message: call.environment.redactor.redact(r.message),
                                                problem: r.problem.isEmpty ? nil : r.problem)
            if r.status == PT_OK, !r.hasPayload, raw.problem == nil { raw.problem = "plugin returned OK with a NULL result" }
            return raw
        }
    }
}
