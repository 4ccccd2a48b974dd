import Synchronization
import Testing
@testable import Payments

/// The wrong-secret throttle, on a clock the test moves.
@Suite struct SecretGuessLimiterTests {
    final class FakeClock: Sendable {
        let ms = Atomic<Int64>(0)
        func advance(_ d: Int64) { ms.add(d, ordering: .relaxed) }
    }

    @Test func blocksAnAddressAfterItsWrongGuessesUntilTheWindowEnds() {
        let clock = FakeClock()
        let l = SecretGuessLimiter(limit: 3, windowMs: 1000, now: { clock.ms.load(ordering: .relaxed) })
        for _ in 0..<3 {
            #expect(l.allows("1.2.3.4"))
            l.failed("1.2.3.4")
        }
        #expect(!l.allows("1.2.3.4"))
        #expect(l.allows("5.6.7.8"), "another address is not affected")
        clock.advance(999)
        #expect(!l.allows("1.2.3.4"))
        clock.advance(1)
        #expect(l.allows("1.2.3.4"), "a new window")
    }

    @Test func theTableIsBounded() {
        let clock = FakeClock()
        let l = SecretGuessLimiter(limit: 1, windowMs: 1000, maxAddresses: 100, now: { clock.ms.load(ordering: .relaxed) })
        for i in 0..<1000 {
            clock.advance(1)
            l.failed("10.0.\(i / 256).\(i % 256)")
            #expect(l.trackedAddresses <= 100)
        }
        // The newest addresses are still tracked; the table never held more than 100.
        #expect(!l.allows("10.0.3.231"))
        #expect(l.allows("10.0.0.0"))
    }
}
