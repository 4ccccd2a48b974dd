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
}
