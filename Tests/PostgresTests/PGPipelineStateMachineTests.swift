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
        #expect(m.connected(now: t0 + .seconds(1)).map(\.request) == [1, 2])
        #expect(m.state == .ready && m.outstanding == 2 && m.deadline == t0 + .seconds(11))
        guard case .send(.init(request: 3, way: .unnamed)) = m.submit(3, now: t0 + .seconds(2)) else { Issue.record("ready: sent at once"); return }
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
        guard case .send(.init(request: 5, way: .unnamed)) = m.submit(5, now: t0) else { Issue.record("room again after an answer"); return }
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
        #expect(m.connected(now: t0).isEmpty && m.connectFailed(now: t0) == [] && m.broken() == [], "late connect results change nothing")
        #expect(m.state == .closed)
    }

    @Test func aLateConnectResultWithNothingConnectingIsIgnored() {
        var m = machine()
        #expect(m.connected(now: t0).isEmpty)
        #expect(m.state == .idle)
    }

    // MARK: Prepared statements

    typealias Prepared = Machine.Prepared

    /// A machine whose connection is up, with request 1 (naming `p`) sent on it.
    func ready(preparing p: Prepared) -> Machine {
        var m = machine()
        _ = m.submit(1, prepared: p, now: t0)
        _ = m.connected(now: t0)
        return m
    }

    func way(_ action: Machine.SubmitAction) -> Machine.Way? {
        if case .send(let s) = action { return s.way }
        return nil
    }

    @Test func aNameIsPreparedOnceAndThenOnlyRun() {
        var m = machine()
        let p = Prepared(name: "ins1", sql: "INSERT 1", types: [25])
        _ = m.submit(1, prepared: p, now: t0)
        _ = m.submit(2, prepared: p, now: t0)
        #expect(m.connected(now: t0).map(\.way) == [.prepareThenRun("ins1"), .prepared("ins1")],
                "held requests: the first prepares, the second only runs")
        #expect(m.oldestWay == .prepareThenRun("ins1"))
        #expect(way(m.submit(3, prepared: p, now: t0)) == .prepared("ins1"))
        #expect(way(m.submit(4, now: t0)) == .unnamed)
        #expect(m.answered(now: t0) == 1)
        #expect(m.oldestWay == .prepared("ins1"))
        #expect(m.preparedNames.count == 1)
    }

    @Test func aFailedPrepareIsForgottenAndTheNextRequestPreparesAgain() {
        let p = Prepared(name: "bad", sql: "SELEC 1")
        var m = ready(preparing: p)
        #expect(way(m.submit(2, prepared: p, now: t0)) == .prepared("bad"), "sent before the prepare's answer came back")
        #expect(m.answered(prepareFailed: true, now: t0) == 1)
        #expect(m.preparedNames["bad"] == nil)
        #expect(m.answered(now: t0) == 2, "the one sent behind it fails on its own (no such statement)")
        #expect(way(m.submit(3, prepared: p, now: t0)) == .prepareThenRun("bad"))
    }

    @Test func aStatementThatFailsAfterItsPrepareKeepsTheName() {
        let p = Prepared(name: "ins", sql: "INSERT 1")
        var m = ready(preparing: p)
        #expect(m.answered(prepareFailed: false, now: t0) == 1)  // e.g. a unique violation
        #expect(way(m.submit(2, prepared: p, now: t0)) == .prepared("ins"), "preparing it again would clash with the server's copy")
    }

    @Test func aNewConnectionKnowsNoNames() {
        let p = Prepared(name: "ins", sql: "INSERT 1")
        var m = ready(preparing: p)
        _ = m.answered(now: t0)
        #expect(m.broken().isEmpty && m.preparedNames.isEmpty)
        _ = m.submit(2, prepared: p, now: t0)
        #expect(m.connected(now: t0).map(\.way) == [.prepareThenRun("ins")])
    }

    @Test func aNameWithAnotherTextOrTypesRunsUnnamed() {
        var m = machine()
        _ = m.submit(1, prepared: Prepared(name: "n", sql: "SELECT $1", types: [25]), now: t0)
        _ = m.connected(now: t0)
        #expect(way(m.submit(2, prepared: Prepared(name: "n", sql: "SELECT $1 + 1", types: [25]), now: t0)) == .unnamed)
        #expect(way(m.submit(3, prepared: Prepared(name: "n", sql: "SELECT $1", types: [20]), now: t0)) == .unnamed)
        #expect(way(m.submit(4, prepared: Prepared(name: "n", sql: "SELECT $1", types: [25]), now: t0)) == .prepared("n"))
    }

    @Test func namesPastTheBoundRunUnnamed() {
        var m = Machine(answerTimeout: nil, backoff: .zero, capacity: 16, maxPrepared: 2)
        _ = m.submit(0, now: t0)
        _ = m.connected(now: t0)
        #expect(way(m.submit(1, prepared: Prepared(name: "a", sql: "A"), now: t0)) == .prepareThenRun("a"))
        #expect(way(m.submit(2, prepared: Prepared(name: "b", sql: "B"), now: t0)) == .prepareThenRun("b"))
        #expect(way(m.submit(3, prepared: Prepared(name: "c", sql: "C"), now: t0)) == .unnamed)
        #expect(way(m.submit(4, prepared: Prepared(name: "a", sql: "A"), now: t0)) == .prepared("a"))
        #expect(m.preparedNames.count == 2)
    }

    @Test func theServersAnswersSayWhatANameIsNow() {
        let p = Prepared(name: "n", sql: "SELECT 1")
        var m = ready(preparing: p)
        _ = m.answered(now: t0)
        // 26000: the server no longer has it (DEALLOCATE): prepared again next time.
        #expect(way(m.submit(2, prepared: p, now: t0)) == .prepared("n"))
        _ = m.answered(sqlState: "26000", now: t0)
        #expect(way(m.submit(3, prepared: p, now: t0)) == .prepareThenRun("n"))
        // 42P05: the name is taken by a statement we did not prepare: unnamed from then on.
        _ = m.answered(prepareFailed: true, sqlState: "42P05", now: t0)
        #expect(way(m.submit(4, prepared: p, now: t0)) == .unnamed)
        _ = m.answered(now: t0)
        // 0A000: the cached plan no longer fits (schema change): unnamed from then on.
        let q = Prepared(name: "q", sql: "SELECT * FROM t")
        _ = m.submit(5, prepared: q, now: t0)
        _ = m.answered(now: t0)
        #expect(way(m.submit(6, prepared: q, now: t0)) == .prepared("q"))
        _ = m.answered(sqlState: "0A000", now: t0)
        #expect(way(m.submit(7, prepared: q, now: t0)) == .unnamed)
        // Any other error after a good prepare keeps the name.
        let r = Prepared(name: "r", sql: "INSERT")
        _ = m.submit(8, prepared: r, now: t0)
        _ = m.answered(sqlState: "23505", now: t0)
        #expect(way(m.submit(9, prepared: r, now: t0)) == .prepared("r"))
    }
}
