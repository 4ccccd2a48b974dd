import Foundation
import Synchronization
import SystemCalls
import Testing
@testable import HTTP2

/// Thread confinement is checkable: a loop knows its own thread.
@Suite struct EventLoopTests {
    @Test func aLoopKnowsItsOwnThread() async throws {
        let loop = try EventLoop(index: 9)
        loop.start()
        defer { loop.stop() }
        let seen = Mutex<[Bool]>([])
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            loop.execute {
                seen.withLock { $0.append(loop.inLoop) }
                k.resume()
            }
        }
        #expect(seen.withLock { $0 } == [true], "inside execute")
        #expect(!loop.inLoop, "from a test task")
        let other = try EventLoop(index: 10)
        other.start()
        defer { other.stop() }
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            other.execute {
                seen.withLock { $0.append(loop.inLoop) }
                k.resume()
            }
        }
        #expect(seen.withLock { $0 } == [true, false], "another loop's thread is not this loop's")
    }

    /// A task that prefers the loop starts on its thread and comes back to it after every
    /// await, whichever thread resumed it; a task without the preference does not run there.
    @Test func aTaskThatPrefersTheLoopRunsAndResumesOnIt() async throws {
        let loop = try EventLoop(index: 11)
        loop.start()
        defer { loop.stop() }
        let seen = await Task(executorPreference: loop) { () -> [Bool] in
            var seen = [loop.inLoop]
            // Resumed from another thread (as the Redis loop or a database queue would).
            await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread { k.resume() }
            }
            seen.append(loop.inLoop)
            try? await Task.sleep(for: .milliseconds(20))
            seen.append(loop.inLoop)
            // Child tasks inherit the preference.
            async let child = loop.inLoop
            seen.append(await child)
            // A route that may block moves off the loop, as HTTPRoutes does for it.
            seen.append(await withTaskExecutorPreference(globalConcurrentExecutor) { loop.inLoop })
            seen.append(loop.inLoop)
            return seen
        }.value
        #expect(seen == [true, true, true, true, false, true])
        let plain = await Task { loop.inLoop }.value
        #expect(!plain)
    }

    /// Many tasks on one loop, each awaiting a timer: they wait together (a suspended task
    /// does not hold the loop), and the loop still runs closures meanwhile.
    @Test func tasksOnTheLoopWaitTogetherWithoutHoldingIt() async throws {
        let loop = try EventLoop(index: 12)
        loop.start()
        defer { loop.stop() }
        let start = ContinuousClock.now
        let slept = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask(executorPreference: loop) {
                    try? await Task.sleep(for: .milliseconds(500))
                    return loop.inLoop
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        let elapsed = ContinuousClock.now - start
        #expect(slept.count == 50 && slept.allSatisfy { $0 })
        // One after another would be 25 s; together, 0.5 s plus whatever the machine adds.
        #expect(elapsed < .seconds(12), "\(elapsed)")
    }

    /// A task whose loop stopped is not left suspended for ever: it finishes on the global
    /// executor.
    @Test func aTaskOutlivesItsStoppedLoop() async throws {
        let loop = try EventLoop(index: 13)
        loop.start()
        let gate = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let task = Task(executorPreference: loop) { () -> Bool in
            await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in gate.withLock { $0 = k } }
            return loop.inLoop
        }
        while gate.withLock({ $0 == nil }) { try await Task.sleep(for: .milliseconds(5)) }
        loop.stop()
        while !loop.hasEnded { try await Task.sleep(for: .milliseconds(5)) }
        gate.withLock { $0!.resume() }
        let ranOnLoop = await task.value
        #expect(!ranOnLoop, "finished elsewhere")
    }
}

/// A poller that counts what its host did: readable while its eventfd is signalled.
private final class CountingPoller: HostedPoller, @unchecked Sendable {
    let fd: Int32
    let loop: EventLoop
    /// (ran on the loop's thread, after hostEnded) per call.
    let calls = Mutex<(ready: [Bool], ended: Int, readyAfterEnd: Int)>(([], 0, 0))
    init(loop: EventLoop) throws {
        fd = try Syscalls.eventFD()
        self.loop = loop
    }
    deinit { Syscalls.close(fd) }
    var pollDescriptor: Int32 { fd }
    func runReady() {
        Syscalls.drainEventFD(fd)
        let inLoop = loop.inLoop
        calls.withLock { c in
            if c.ended > 0 { c.readyAfterEnd += 1 }
            c.ready.append(inLoop)
        }
    }
    func hostEnded() { calls.withLock { $0.ended += 1 } }
}

@Suite struct EventLoopHostingTests {
    /// What `RedisClient` relies on: its loop is driven on the event loop's thread, once at
    /// once and then whenever its descriptor is readable, and told exactly once when the loop ends.
    @Test func aHostedPollerRunsOnTheLoopThreadUntilTheLoopEnds() async throws {
        let loop = try EventLoop(index: 12)
        let poller = try CountingPoller(loop: loop)
        loop.host(poller)  // before start, as pixtrackd does
        loop.start()
        func readyCount() -> Int { poller.calls.withLock { $0.ready.count } }
        var waited = 0
        while readyCount() < 1 && waited < 2000 { try await Task.sleep(for: .milliseconds(1)); waited += 1 }
        #expect(readyCount() == 1, "run once when taken, before anything is ready")
        for n in 2...4 {
            Syscalls.signalEventFD(poller.fd)
            waited = 0
            while readyCount() < n && waited < 2000 { try await Task.sleep(for: .milliseconds(1)); waited += 1 }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(readyCount() == 4, "once per readiness, not spinning")
        loop.stop()
        waited = 0
        while !loop.hasEnded && waited < 2000 { try await Task.sleep(for: .milliseconds(1)); waited += 1 }
        Syscalls.signalEventFD(poller.fd)
        try await Task.sleep(for: .milliseconds(50))
        let calls = poller.calls.withLock { $0 }
        #expect(calls.ready.allSatisfy { $0 }, "always on the loop's thread")
        #expect(calls.ended == 1 && calls.readyAfterEnd == 0, "told once, never driven after: \(calls)")
    }
}
