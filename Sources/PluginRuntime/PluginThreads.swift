import Dispatch
import Glibc
import Synchronization

/// Runs blocking plugin calls on their own detached threads, off the Swift cooperative pool, and
/// lets the async caller stop waiting at a deadline.
///
/// A plugin call cannot be interrupted: one that overruns keeps its thread until it returns, and
/// its late result is dropped. `maxThreads` bounds how many such threads may exist at once, so a
/// plugin that hangs forever costs a bounded number of threads and the host stays healthy.
package final class PluginThreads: Sendable {
    package let maxThreads: Int
    private let running = Atomic<Int>(0)

    package init(maxThreads: Int) { self.maxThreads = max(1, maxThreads) }

    /// Threads currently inside a plugin call (including abandoned, overrunning ones).
    package var active: Int { running.load(ordering: .relaxed) }

    package enum Completion<T: Sendable>: Sendable {
        case finished(T)
        case timedOut
        /// `maxThreads` were busy: the work never started.
        case busy
    }

    /// Runs `work` on a new thread and waits for it until `timeoutMs` elapse; `onTimeout` runs
    /// once if the deadline wins (the work keeps running to its end, its result discarded).
    package func run<T: Sendable>(timeoutMs: Int64, onTimeout: @escaping @Sendable () -> Void = {},
                          _ work: @escaping @Sendable () -> T) async -> Completion<T> {
        guard reserve() else { return .busy }
        let gate = Gate<Completion<T>>()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Completion<T>, Never>) in
            gate.arm(continuation)
            let started = PluginThread.start { [self] in
                let value = work()
                release()
                gate.open(.finished(value))
            }
            guard started else {
                release()
                gate.open(.busy)
                return
            }
            // A thread of its own fires the deadline, not a Task or a Dispatch timer: it must hold
            // even when the cooperative pool and Dispatch's workers are busy with blocking work.
            DeadlineTimer.shared.schedule(afterMs: timeoutMs) {
                if gate.open(.timedOut) { onTimeout() }
            }
        }
    }

    /// `run` for work that needs no thread of its own here: `start` begins it and calls its
    /// argument exactly once with the value (from any thread). Counted, bounded and timed like
    /// `run` (a plugin call in a runner: the frame goes out from the caller and the answer comes
    /// back on the host's reader thread, with no thread hop on either side).
    package func run<T: Sendable>(timeoutMs: Int64, onTimeout: @escaping @Sendable () -> Void = {},
                          starting start: @escaping @Sendable (_ finish: @escaping @Sendable (T) -> Void) -> Void) async -> Completion<T> {
        guard reserve() else { return .busy }
        let gate = Gate<Completion<T>>()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Completion<T>, Never>) in
            gate.arm(continuation)
            DeadlineTimer.shared.schedule(afterMs: timeoutMs) {
                if gate.open(.timedOut) { onTimeout() }
            }
            start { [self] value in
                release()
                gate.open(.finished(value))
            }
        }
    }

    /// Runs `work` on a new thread and blocks the caller until it ends or `timeoutMs` pass
    /// (for synchronous start-up code: loading a plugin).
    package func runBlocking<T: Sendable>(timeoutMs: Int64, _ work: @escaping @Sendable () -> T) -> Completion<T> {
        guard reserve() else { return .busy }
        let box = BlockingBox<T>()
        let started = PluginThread.start { [self] in
            let value = work()
            release()
            box.put(value)
        }
        guard started else { release(); return .busy }
        guard let value = box.wait(timeoutMs: timeoutMs) else { return .timedOut }
        return .finished(value)
    }

    private func reserve() -> Bool {
        while true {
            let n = running.load(ordering: .relaxed)
            guard n < maxThreads else { return false }
            if running.compareExchange(expected: n, desired: n + 1, ordering: .acquiringAndReleasing).exchanged { return true }
        }
    }

    private func release() { running.subtract(1, ordering: .relaxed) }
}

/// Resumes a continuation exactly once, whoever comes first.
package final class Gate<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, Never>?, opened: Bool, early: T?)>((nil, false, nil))

    package func arm(_ c: CheckedContinuation<T, Never>) {
        state.withLock { s in s.continuation = c }
    }

    /// True when this call resumed the waiter.
    @discardableResult
    package func open(_ value: T) -> Bool {
        let c: CheckedContinuation<T, Never>? = state.withLock { s in
            guard !s.opened else { return nil }
            s.opened = true
            let c = s.continuation
            s.continuation = nil
            return c
        }
        c?.resume(returning: value)
        return c != nil
    }
}

/// A value handed from a plugin thread to a blocked caller, with a timed wait.
package final class BlockingBox<T: Sendable>: @unchecked Sendable {
    // Invariant: `value` is read and written only under `mutex`; the condition signals it.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var value: T?

    package init() { monotonicCondition(&mutex, &cond) }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    package func put(_ v: T) {
        pthread_mutex_lock(&mutex)
        value = v
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    package func wait(timeoutMs: Int64) -> T? {
        var deadline = monotonicTimespec(ns: DeadlineTimer.nowNs() + timeoutMs * 1_000_000)
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while value == nil {
            if pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT { break }
        }
        return value
    }
}

/// Initializes a mutex and a condition whose timed waits use CLOCK_MONOTONIC (wall-clock jumps
/// must not stretch or cut a deadline).
package func monotonicCondition(_ mutex: UnsafeMutablePointer<pthread_mutex_t>, _ cond: UnsafeMutablePointer<pthread_cond_t>) {
    pthread_mutex_init(mutex, nil)
    var attr = pthread_condattr_t()
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    pthread_cond_init(cond, &attr)
    pthread_condattr_destroy(&attr)
}

/// A CLOCK_MONOTONIC instant, in nanoseconds, as `pthread_cond_timedwait` takes it.
package func monotonicTimespec(ns: Int64) -> timespec {
    timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
}

/// Fires deadlines on one dedicated thread, on time whatever the rest of the process is doing.
/// Deadlines are kept sorted; one that is no longer needed (its call finished first) still fires
/// and finds its gate already open, which is cheaper than cancelling it.
package final class DeadlineTimer: @unchecked Sendable {
    package static let shared = DeadlineTimer()

    // Invariant: `entries` is read and written only under `mutex`; `cond` signals a new earliest one.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var entries: [(at: Int64, action: @Sendable () -> Void)] = []

    private init() {
        monotonicCondition(&mutex, &cond)
        precondition(PluginThread.start { [self] in run() }, "cannot start the plugin deadline thread")
    }

    /// Runs `action` on the timer thread `afterMs` from now (keep it short: it delays the next one).
    package func schedule(afterMs: Int64, _ action: @escaping @Sendable () -> Void) {
        let at = Self.nowNs() + max(0, min(afterMs, 86_400_000)) * 1_000_000
        pthread_mutex_lock(&mutex)
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].at <= at { lo = mid + 1 } else { hi = mid }
        }
        entries.insert((at, action), at: lo)
        if lo == 0 { pthread_cond_signal(&cond) }
        pthread_mutex_unlock(&mutex)
    }

    private func run() {
        pthread_mutex_lock(&mutex)
        while true {
            guard let first = entries.first else {
                pthread_cond_wait(&cond, &mutex)
                continue
            }
            let now = Self.nowNs()
            if first.at <= now {
                var due: [@Sendable () -> Void] = []
                while let e = entries.first, e.at <= now {
                    due.append(e.action)
                    entries.removeFirst()
                }
                pthread_mutex_unlock(&mutex)
                for action in due { action() }
                pthread_mutex_lock(&mutex)
                continue
            }
            var ts = monotonicTimespec(ns: first.at)
            _ = pthread_cond_timedwait(&cond, &mutex, &ts)
        }
    }

    package static func nowNs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// Detached pthreads for blocking work.
package enum PluginThread {
    /// Stack of every plugin thread, in the host and in runners, whatever `ulimit -s` says
    /// (pixtrack_gateway.h, THREADING).
    package static let stackBytes = 8 << 20

    private final class Job {
        let work: () -> Void
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    /// Starts `work` on a new detached thread; false when the system refused to create one.
    package static func start(_ work: @escaping @Sendable () -> Void) -> Bool {
        let job = Unmanaged.passRetained(Job(work)).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attr, stackBytes)
        var tid = pthread_t()
        let rc = pthread_create(&tid, &attr, { raw in
            // The retained Job is released here, exactly once, after the work ran.
            Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().work()
            return nil
        }, job)
        if rc != 0 {
            Unmanaged<Job>.fromOpaque(job).release()
            return false
        }
        return true
    }
}
