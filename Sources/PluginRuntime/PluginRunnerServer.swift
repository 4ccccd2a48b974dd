import CSystemShims
import GatewayABI
import Glibc
import Synchronization

/// The plugin runner: the child process that holds one plugin file, so that a plugin which
/// crashes, aborts or leaks takes down only this process (`PluginRunner` in the host supervises
/// it). It opens the file the host checked and hashed (the descriptor the host passed, never a
/// path that could be swapped), validates the table as the host would, then serves `create`,
/// the three calls and `destroy` over the socket, each on a thread of its own. What a plugin asks
/// of the host goes back over the same socket: `http_request` (the host performs it, so the host
/// still knows whether a request left, applies the deadline and redacts) and `log`; clocks and
/// `remaining_ms` are answered here.
public enum PluginRunnerServer {
    /// `pixtrack-plugin-runner --socket FD --plugin FD [--memory-limit-mb N]`; returns the exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        var socketFD: Int32 = -1, pluginFD: Int32 = -1, memoryMB = 0
        var i = 0
        while i + 1 < arguments.count {
            switch arguments[i] {
            case "--socket": socketFD = Int32(arguments[i + 1]) ?? -1
            case "--plugin": pluginFD = Int32(arguments[i + 1]) ?? -1
            case "--memory-limit-mb": memoryMB = Int(arguments[i + 1]) ?? 0
            default: break
            }
            i += 2
        }
        guard socketFD >= 0, pluginFD >= 0 else {
            let usage = "pixtrack-plugin-runner: started by pixtrackd, not by hand (--socket FD --plugin FD)\n"
            _ = usage.withCString { write(2, $0, strlen($0)) }
            return 2
        }
        harden(keep: max(socketFD, pluginFD), memoryMB: memoryMB)
        let socket = FrameSocket(fd: socketFD)
        let server = Server(socket: socket)
        // A line the plugin logs outside any call goes to the host, which redacts and writes it.
        HostAPI.unattributed.withLock { $0 = { level, text in server.log(level, text, call: 0) } }
        guard server.load(pluginFD: pluginFD) else { return 0 }
        server.serve()
        return 0
    }

    /// Gives up what a plugin does not need: descriptors other than ours, new privileges, core
    /// files (the process holds credentials), and address space beyond the limit. Dies with the
    /// host.
    package static func harden(keep: Int32, memoryMB: Int) {
        _ = pt_harden_plugin_runner(keep, memoryMB)
        signal(SIGPIPE, SIG_IGN)
        // A plugin's crash must end this process at once, with the signal the host reports: no
        // handler (the Swift runtime's backtracer would catch it, and a raised signal could even
        // return into the plugin).
        for sig in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS] { signal(sig, SIG_DFL) }
        // Last: no network of its own (HTTP goes through the host), no programs, no tracing or
        // kernel extensions (CSystemShims/seccomp.c has the list). Refused calls fail with EPERM.
        _ = pt_install_plugin_seccomp()
        // The runner ends with its host: at EOF on the socket (`serve` returns), or, if a plugin
        // call holds every thread, when it is re-parented. (PR_SET_PDEATHSIG would fire when
        // the host *thread* that started us exits, which host threads routinely do.)
        let host = getppid()
        _ = PluginThread.start {
            while getppid() == host { usleep(500_000) }
            _exit(0)
        }
    }

    /// The runner's state: the plugin, its instances, the calls waiting on the host.
    package final class Server: @unchecked Sendable {
        let socket: FrameSocket
        private var table: UnsafePointer<pt_gateway_plugin>?
        /// Instance pointers by number (as bits: a pointer is not Sendable, and only the plugin uses it).
        private let instances = Mutex<[UInt64: UInt]>([:])
        private let nextInstance = Atomic<UInt64>(1)
        /// Calls blocked in `http_request`, by call number.
        private let waiting = Mutex<[UInt64: BlockingBox<RunnerFrame>]>([:])

        /// Threads that run the plugin's calls, kept between calls (a thread per call costs more
        /// than the round trip to the host).
        private let workers = WorkerPool(maxThreads: 4096)

        init(socket: FrameSocket) { self.socket = socket }

        /// Opens and validates the plugin, then says HELLO (with the refusal when it fails).
        func load(pluginFD: Int32) -> Bool {
            var st = stat()
            var hello = RunnerFrame.Hello()
            if fstat(pluginFD, &st) != 0 {
                hello.error = "cannot stat the plugin descriptor: \(PluginTable.errnoText())"
            } else {
                switch PluginTable.open(real: "/proc/self/fd/\(pluginFD)", sha: "", device: st.st_dev, inode: st.st_ino,
                                                displayPath: "/proc/self/fd/\(pluginFD)") {
                case .failure(let f):
                    hello.error = f.reason
                case .success(let p):
                    table = p.table
                    hello = .init(name: p.info.name, version: p.info.version, description: p.info.description,
                                  abiMajor: p.info.abiMajor, abiMinor: p.info.abiMinor, capabilities: p.info.capabilities)
                }
            }
            var frame = RunnerFrame(.hello)
            frame.hello = hello
            socket.send(frame)
            return hello.error.isEmpty
        }

        /// Serves the host until it goes away (then the process ends: instances die with it).
        ///
        /// Leader and followers: one thread at a time reads the socket. When it reads a call, it
        /// hands the socket to a kept thread and runs the call itself, so a call costs no hop
        /// between a reader and a worker; it then goes back to the pool.
        func serve() {
            let ended = BlockingBox<Bool>()
            guard workers.submit({ [self] in lead { ended.put(true) } }) else { return }
            while ended.wait(timeoutMs: 86_400_000) == nil {}
        }

        private func lead(ended: @escaping @Sendable () -> Void) {
            while let frame = socket.receive() {
                switch frame.kind {
                case .create, .call, .destroy:
                    if workers.submit({ [self] in lead(ended: ended) }) {
                        handle(frame)
                        return
                    }
                    // No thread can take the socket over: this call is refused, reading goes on.
                    guard frame.kind != .destroy else { continue }
                    var failed = RunnerFrame(.result, call: frame.call)
                    failed.status = Int32(PT_ERR_UNAVAILABLE)
                    failed.message = "the plugin runner cannot start a thread"
                    socket.send(failed)
                case .httpReply:
                    waiting.withLock { $0[frame.call] }?.put(frame)
                default:
                    ended()  // a host never sends anything else
                    return
                }
            }
            ended()
        }

        private func handle(_ frame: RunnerFrame) {
            guard let table else { return }
            let call = RunnerCall(server: self, call: frame.call, deadlineMs: frame.deadlineMs)
            switch frame.kind {
            case .create:
                var instance: OpaquePointer?
                var reply = RunnerFrame(.result, call: frame.call)
                let (status, message) = Self.withErrorBuffer { err, n in
                    frame.payload.withUnsafeBufferPointer { cfg in
                        table.pointee.create(table, HostAPI.table, HostAPI.handle(call), cfg.baseAddress, cfg.count, &instance, err, n)
                    }
                }
                reply.status = status
                reply.message = message
                if status == PT_OK, let instance {
                    let id = nextInstance.add(1, ordering: .relaxed).oldValue
                    instances.withLock { $0[id] = UInt(bitPattern: instance) }
                    reply.instance = id
                }
                socket.send(reply)
            case .call:
                var reply = RunnerFrame(.result, call: frame.call)
                guard let instance = instances.withLock({ $0[frame.instance] }).flatMap({ OpaquePointer(bitPattern: $0) }),
                      let op = PluginOperation(number: frame.operation) else {
                    reply.status = Int32(PT_ERR_INTERNAL)
                    reply.message = "no such instance in the plugin runner"
                    socket.send(reply)
                    return
                }
                let raw = PluginTable.invoke(table, instance, call, op, frame.payload)
                reply.status = raw.status
                reply.message = raw.message
                reply.problem = raw.problem ?? ""
                if let bytes = raw.bytes {
                    reply.payload = bytes
                    reply.hasPayload = true
                }
                socket.send(reply)
            case .destroy:
                if let instance = instances.withLock({ $0.removeValue(forKey: frame.instance) }).flatMap({ OpaquePointer(bitPattern: $0) }) {
                    table.pointee.destroy(instance)
                }
            default:
                break
            }
        }

        /// `http_request` of a call: one at a time per call, answered by the host.
        func forward(_ encoded: [UInt8], call: UInt64) -> (Int32, [UInt8]) {
            let box = BlockingBox<RunnerFrame>()
            waiting.withLock { $0[call] = box }
            defer { _ = waiting.withLock { $0.removeValue(forKey: call) } }
            var frame = RunnerFrame(.http, call: call)
            frame.payload = encoded
            guard socket.send(frame), let reply = box.wait(timeoutMs: 86_400_000) else {
                return (Int32(PT_ERR_UNAVAILABLE), [])
            }
            return (reply.status, reply.payload)
        }

        func log(_ level: Int32, _ text: String, call: UInt64) {
            var frame = RunnerFrame(.log, call: call)
            frame.logLevel = level
            frame.message = text
            socket.send(frame)
        }

        static func withErrorBuffer(_ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) -> (Int32, String) {
            var error = [CChar](repeating: 0, count: 512)
            let status = error.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
            error[error.count - 1] = 0
            return (status, error.withUnsafeBufferPointer { PluginTable.boundedString($0.baseAddress, 511) })
        }
    }

    /// The runner's `pt_call`: the deadline the host gave, the host's functions over the socket.
    package final class RunnerCall: PluginCallContext, @unchecked Sendable {
        let server: Server
        let call: UInt64
        let deadlineMs: Int64
        private let oneAtATime = Mutex(())

        init(server: Server, call: UInt64, deadlineMs: Int64) {
            self.server = server
            self.call = call
            self.deadlineMs = deadlineMs
        }

        override package var remainingMs: Int64 { deadlineMs == 0 ? .max : max(0, deadlineMs - Clock.monotonicMs()) }

        override package func httpRequest(_ encoded: [UInt8]) -> (status: Int32, response: [UInt8]) {
            oneAtATime.withLock { _ in server.forward(encoded, call: call) }
        }

        override package func log(_ level: Int32, _ text: String) { server.log(level, text, call: call) }
    }
}

/// Threads kept for blocking work: a job goes to an idle thread, or to a new one (up to
/// `maxThreads`); a thread idle for `idleMs` ends. Jobs are never queued behind a busy thread,
/// so a hung plugin call never delays another.
package final class WorkerPool: @unchecked Sendable {
    // Invariant: `jobs`, `idle` and `threads` are read and written only under `mutex`.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var jobs: [@Sendable () -> Void] = []
    private var idle = 0
    private var threads = 0
    package let maxThreads: Int
    package let idleMs: Int64

    package init(maxThreads: Int, idleMs: Int64 = 30_000) {
        self.maxThreads = maxThreads
        self.idleMs = idleMs
        monotonicCondition(&mutex, &cond)
    }

    /// False when no thread could take the job (at the bound, or the system refused one).
    package func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        pthread_mutex_lock(&mutex)
        if idle > jobs.count {
            jobs.append(job)
            pthread_cond_signal(&cond)
            pthread_mutex_unlock(&mutex)
            return true
        }
        guard threads < maxThreads else {
            pthread_mutex_unlock(&mutex)
            return false
        }
        threads += 1
        pthread_mutex_unlock(&mutex)
        let started = PluginThread.start { [self] in
            job()
            work()
        }
        if !started {
            pthread_mutex_lock(&mutex)
            threads -= 1
            pthread_mutex_unlock(&mutex)
        }
        return started
    }

    private func work() {
        pthread_mutex_lock(&mutex)
        while true {
            if !jobs.isEmpty {
                let job = jobs.removeFirst()
                pthread_mutex_unlock(&mutex)
                job()
                pthread_mutex_lock(&mutex)
                continue
            }
            idle += 1
            var deadline = monotonicTimespec(ns: DeadlineTimer.nowNs() + idleMs * 1_000_000)
            let rc = pthread_cond_timedwait(&cond, &mutex, &deadline)
            idle -= 1
            if rc == ETIMEDOUT && jobs.isEmpty {
                threads -= 1
                pthread_mutex_unlock(&mutex)
                return
            }
        }
    }
}
