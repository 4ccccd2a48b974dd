import Dispatch
import Foundation
import Synchronization
import Testing
@testable import PluginHost

/// Plugin-call deadlines fire on their own thread: on time, in order, even while every Dispatch
/// worker is stuck in blocking work (what made the sandbox timeout test flaky on a loaded machine).
@Suite struct DeadlineTimerTests {
    @Test func firesInOrderAndOnTimeWhileDispatchIsSaturated() async throws {
        // Occupy Dispatch's global workers with blocking sleeps (a backlog of seconds on 2 cores:
        // a Dispatch timer would fire that late).
        for _ in 0..<8 { DispatchQueue.global().async { usleep(500_000) } }
        let fired = Mutex<[(Int, Int64)]>([])
        let start = DeadlineTimer.nowNs()
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            for (i, ms) in [(2, 150), (0, 50), (1, 100)] {
                DeadlineTimer.shared.schedule(afterMs: Int64(ms)) {
                    let done = fired.withLock { f -> Bool in
                        f.append((i, (DeadlineTimer.nowNs() - start) / 1_000_000))
                        return f.count == 3
                    }
                    if done { k.resume() }
                }
            }
        }
        let f = fired.withLock { $0 }
        #expect(f.map(\.0) == [0, 1, 2], "in deadline order")
        // Wide margin (a noisy machine), still well under the time Dispatch is blocked for.
        #expect(f.allSatisfy { $0.1 >= 45 } && f.last!.1 < 900, "\(f)")
    }
}
