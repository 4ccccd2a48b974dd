import Testing
@testable import Postgres

/// `PGPipelineStateMachine` event by event, with plain integers for requests and a clock we move.
@Suite struct PGPipelineStateMachineTests {
    typealias Machine = PGPipelineStateMachine<Int>
    let t0 = ContinuousClock.now

    func machine(timeout: Duration? = .seconds(10), backoff: Duration = .seconds(1), capacity: Int = 8) -> Machine {
        Machine(answerTimeout: timeout, backoff: backoff, capacity: capacity)
    }

    @Test func theFirstRequestConnectsAndThoseDuringTheConnectAreHeldThenSentInOrder() {
        var m = machine()
        guard case .connect = m.submit(1, now: t0) else { Issue.record("first request connects"); return }
        guard case .hold = m.submit(2, now: t0) else { Issue.record("second is held"); return }
        #expect(m.state == .connecting && m.waiting == 2 && m.deadline == nil, "no deadline while connecting (the connect has its own)")
        #expect(m.connected(now: t0 + .seconds(1)) == [1, 2])
        #expect(m.state == .ready && m.outstanding == 2 && m.deadline == t0 + .seconds(11))
        guard case .send(3) = m.submit(3, now: t0 + .seconds(2)) else { Issue.record("ready: sent at once"); return }
        #expect(m.deadline == t0 + .seconds(11), "a request behind others does not move the deadline")
        #expect(m.answered(now: t0 + .seconds(3)) == 1)
        #expect(m.deadline == t0 + .seconds(13), "each answer restarts the clock")
        #expect(m.answered(now: t0 + .seconds(4)) == 2)
        #expect(m.answered(now: t0 + .seconds(5)) == 3)
        #expect(m.deadline == nil && m.outstanding == 0)
        #expect(m.answered(now: t0 + .seconds(6)) == nil, "an answer nobody asked for: the caller breaks the connection")
    }

    @Test func anIdleConnectionStartsTheClockAtItsFirstRequest() {
        var m = machine()
        _ = m.submit(1, now: t0)
        _ = m.connected(now: t0)
        _ = m.answered(now: t0)
        _ = m.submit(2, now: t0 + .seconds(100))
        #expect(m.deadline == t0 + .seconds(110))
        #expect(!m.isOverdue(now: t0 + .seconds(109)))
        #expect(m.isOverdue(now: t0 + .seconds(110)))
    }

    @Test func aBrokenConnectionFailsWhatWasSentAndHeldAndTheNextRequestConnectsAtOnce() {
        var m = machine()
        _ = m.submit(1, now: t0)
        _ = m.connected(now: t0)
        _ = m.submit(2, now: t0)
        #expect(m.broken() == [1, 2])
        #expect(m.state == .idle && m.deadline == nil && m.outstanding == 0)
        guard case .connect = m.submit(3, now: t0) else { Issue.record("no back-off after a break: reconnect at once"); return }
        #expect(m.broken() == [3], "a break while connecting fails the held ones too")
    }

    @Test func aFailedConnectFailsTheHeldRequestsAndRefusesNewOnesForTheBackoff() {
        var m = machine(backoff: .seconds(2))
        _ = m.submit(1, now: t0)
        _ = m.submit(2, now: t0)
        #expect(m.connectFailed(now: t0) == [1, 2])
        guard case .refuse(3, let e) = m.submit(3, now: t0 + .seconds(1)) else { Issue.record("refused inside the back-off"); return }
        #expect(e.code == .unavailable)
        guard case .connect = m.submit(4, now: t0 + .seconds(2)) else { Issue.record("after the back-off: connect again"); return }
        #expect(m.downUntil == nil)
    }

    @Test func noBackoffMeansEveryRequestAfterAFailedConnectTriesAgain() {
        var m = machine(backoff: .zero)
        _ = m.submit(1, now: t0)
        _ = m.connectFailed(now: t0)
        guard case .connect = m.submit(2, now: t0) else { Issue.record("connects again"); return }
    }

    @Test func capacityBoundsSentAndHeldTogether() {
        var m = machine(capacity: 2)
        _ = m.submit(1, now: t0)
        _ = m.submit(2, now: t0)
        guard case .refuse(3, let e) = m.submit(3, now: t0) else { Issue.record("third refused while connecting"); return }
        #expect(e.code == .poolTimeout)
        _ = m.connected(now: t0)
        guard case .refuse = m.submit(4, now: t0) else { Issue.record("still full when sent"); return }
        _ = m.answered(now: t0)
        guard case .send(5) = m.submit(5, now: t0) else { Issue.record("room again after an answer"); return }
    }

    @Test func noTimeoutMeansNoDeadline() {
        var m = machine(timeout: nil)
        _ = m.submit(1, now: t0)
        _ = m.connected(now: t0)
        #expect(m.deadline == nil && !m.isOverdue(now: t0 + .seconds(1_000_000)))
    }

    @Test func closeFailsEverythingAndStaysClosed() {
        var m = machine()
        _ = m.submit(1, now: t0)
        _ = m.connected(now: t0)
        _ = m.submit(2, now: t0)
        #expect(m.close() == [1, 2])
        #expect(m.state == .closed)
        guard case .refuse(3, let e) = m.submit(3, now: t0) else { Issue.record("closed refuses"); return }
        #expect(e.code == .poolClosed)
        #expect(m.connected(now: t0) == [] && m.connectFailed(now: t0) == [] && m.broken() == [], "late connect results change nothing")
        #expect(m.state == .closed)
    }

    @Test func aLateConnectResultWithNothingConnectingIsIgnored() {
        var m = machine()
        #expect(m.connected(now: t0) == [])
        #expect(m.state == .idle)
    }
}
