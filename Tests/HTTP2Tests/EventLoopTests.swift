import Foundation
import Synchronization
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
