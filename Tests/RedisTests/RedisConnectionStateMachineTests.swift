import Testing
@testable import Redis

/// The connection state machine, event by event (no I/O, no clock: the tests pass the time).
@Suite struct RedisConnectionStateMachineTests {
    typealias Machine = RedisConnectionStateMachine<String>
    let t0 = ContinuousClock.now
    let timeout = Duration.milliseconds(500)

    func ok(_ text: String = "OK") -> RedisReply { .status(text) }

    @Test func commandsHeldWhileConnectingGoOutOnceConnectedAndRepliesMatchInOrder() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        #expect(m.state == .connecting)
        #expect(m.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0) == .hold)
        #expect(m.submit(id: 2, waiter: "b", expected: 2, exclusive: false, now: t0) == .hold)
        #expect(m.deadline == nil, "no reply is due before the connection exists")
        #expect(m.connected(now: t0 + .milliseconds(10)) == .start)
        #expect(m.deadline == t0 + .milliseconds(10) + timeout)
        #expect(m.submit(id: 3, waiter: "c", expected: 1, exclusive: false, now: t0) == .write)
        #expect(m.outstanding == 3)

        guard case .complete("a"?, [ok("A")], close: false) = m.received(ok("A"), now: t0 + .milliseconds(20)) else {
            Issue.record("the first reply belongs to the first command")
            return
        }
        // A pipeline of two completes with its second reply.
        guard case .pending = m.received(ok("B1"), now: t0 + .milliseconds(30)) else { Issue.record("B is a pipeline of 2"); return }
        guard case .complete("b"?, [ok("B1"), ok("B2")], close: false) = m.received(ok("B2"), now: t0 + .milliseconds(40)) else {
            Issue.record("B completes with its second reply")
            return
        }
        #expect(m.deadline == t0 + .milliseconds(40) + timeout, "each reply restarts the clock for the next")
        guard case .complete("c"?, _, close: false) = m.received(ok(), now: t0 + .milliseconds(50)) else { Issue.record("c"); return }
        #expect(m.deadline == nil && m.outstanding == 0)
    }

    @Test func aReplyNobodyAskedForClosesTheConnection() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        _ = m.connected(now: t0)
        guard case .unexpected(let failed) = m.received(ok(), now: t0) else { Issue.record("unexpected"); return }
        #expect(failed.isEmpty && m.state == .closed)
        #expect(m.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0) == .refuse(.unavailable("connection is closed")))
    }

    @Test func aLateReplyClosesTheConnectionAndFailsEveryWaitingCommand() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        _ = m.connected(now: t0)
        #expect(m.tick(now: t0 + .seconds(10)) == nil, "an idle connection is never late")
        _ = m.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0)
        _ = m.submit(id: 2, waiter: "b", expected: 1, exclusive: false, now: t0 + .milliseconds(100))
        #expect(m.tick(now: t0 + .milliseconds(499)) == nil)
        #expect(m.tick(now: t0 + .milliseconds(500)) == ["a", "b"])
        #expect(m.state == .closed && m.outstanding == 0 && m.deadline == nil)
        // The late reply that would have been read as the next command's finds the door shut.
        guard case .unexpected([]) = m.received(ok(), now: t0 + .milliseconds(600)) else { Issue.record("closed"); return }
    }

    @Test func outstandingCommandsAreBounded() {
        var m = Machine(commandTimeout: timeout, capacity: 2)
        _ = m.connected(now: t0)
        #expect(m.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0) == .write)
        #expect(m.submit(id: 2, waiter: "b", expected: 5, exclusive: false, now: t0) == .write)
        #expect(!m.accepts(exclusive: false))
        guard case .refuse(.timeout) = m.submit(id: 3, waiter: "c", expected: 1, exclusive: false, now: t0) else {
            Issue.record("a full connection refuses")
            return
        }
        _ = m.received(ok(), now: t0)
        #expect(m.accepts(exclusive: false), "room again after a reply")
    }

    @Test func aBlockingCommandHasTheConnectionToItself() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        _ = m.connected(now: t0)
        #expect(m.accepts(exclusive: true))
        _ = m.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0)
        #expect(!m.accepts(exclusive: true), "not behind other commands")
        _ = m.received(ok(), now: t0)
        #expect(m.submit(id: 2, waiter: "blpop", expected: 1, exclusive: true, now: t0) == .write)
        #expect(!m.accepts(exclusive: false) && !m.accepts(exclusive: true), "nothing queues behind it")
        _ = m.received(.null, now: t0)
        #expect(m.accepts(exclusive: false))
    }

    @Test func aCancelledCallerIsReleasedButItsReplyIsStillConsumed() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        _ = m.connected(now: t0)
        _ = m.submit(id: 7, waiter: "a", expected: 1, exclusive: false, now: t0)
        _ = m.submit(id: 8, waiter: "b", expected: 1, exclusive: false, now: t0)
        #expect(m.cancel(id: 7) == "a")
        #expect(m.cancel(id: 7) == nil, "released once")
        #expect(m.cancel(id: 99) == nil)
        guard case .complete(nil, _, close: false) = m.received(ok("for a"), now: t0) else { Issue.record("a's reply, dropped"); return }
        guard case .complete("b"?, [ok("for b")], close: false) = m.received(ok("for b"), now: t0) else { Issue.record("b"); return }
    }

    @Test func closingWaitsForOutstandingReplies() {
        var idle = Machine(commandTimeout: timeout, capacity: 8)
        _ = idle.connected(now: t0)
        #expect(idle.closeRequested() == .closeNow && idle.state == .closed)

        var busy = Machine(commandTimeout: timeout, capacity: 8)
        _ = busy.connected(now: t0)
        _ = busy.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0)
        #expect(busy.closeRequested() == .drain)
        #expect(!busy.accepts(exclusive: false))
        guard case .refuse(.unavailable) = busy.submit(id: 2, waiter: "b", expected: 1, exclusive: false, now: t0) else {
            Issue.record("a draining connection takes nothing new")
            return
        }
        guard case .complete("a"?, _, close: true) = busy.received(ok(), now: t0) else { Issue.record("closes after the last reply"); return }
        #expect(busy.state == .closed)

        var connecting = Machine(commandTimeout: timeout, capacity: 8)
        #expect(connecting.closeRequested() == .drain)
        #expect(connecting.connected(now: t0) == .discard, "nothing to send: the new socket is closed at once")
    }

    @Test func aFailedConnectOrABrokenConnectionFailsItsWaiters() {
        var m = Machine(commandTimeout: timeout, capacity: 8)
        _ = m.submit(id: 1, waiter: "a", expected: 1, exclusive: true, now: t0)
        _ = m.cancel(id: 1)
        #expect(m.failed() == [], "a cancelled caller was already resumed")
        #expect(m.state == .closed && !m.accepts(exclusive: false))

        var broken = Machine(commandTimeout: timeout, capacity: 8)
        _ = broken.connected(now: t0)
        _ = broken.submit(id: 1, waiter: "a", expected: 1, exclusive: false, now: t0)
        _ = broken.submit(id: 2, waiter: "b", expected: 3, exclusive: false, now: t0)
        #expect(broken.failed() == ["a", "b"])
        #expect(broken.connected(now: t0) == .discard)
    }

    @Test func requestsAreEncodedAsRESP() {
        var out: [UInt8] = []
        RESP.append([Array("SET".utf8), Array("k".utf8), [], [0, 13, 10]], to: &out)
        #expect(out == Array("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$3\r\n".utf8) + [0, 13, 10] + [13, 10])
        var big: [UInt8] = []
        RESP.appendDecimal(1_234_567_890, to: &big)
        RESP.appendDecimal(0, to: &big)
        #expect(String(decoding: big, as: UTF8.self) == "12345678900")
        // A key in two pieces is the same bulk string as the key in one.
        for suffix in ["", "abc", "ação 🚀", String(repeating: "x", count: 300)] {
            var pieces: [UInt8] = [], whole: [UInt8] = []
            RESP.appendBulk("tracking:", suffix, to: &pieces)
            RESP.appendBulk(Array("tracking:\(suffix)".utf8), to: &whole)
            #expect(pieces == whole, "\(suffix)")
        }
        // A number argument written in place is the same bulk string as its decimal text.
        for n in [0, 1, 9, 10, 99, 100, 604_800, Int(Int32.max)] {
            var direct: [UInt8] = [], viaText: [UInt8] = []
            RESP.appendBulkDecimal(n, to: &direct)
            RESP.appendBulk(Array(String(n).utf8), to: &viaText)
            #expect(direct == viaText, "\(n)")
        }
        #expect(RedisCommandKind([Array("blpop".utf8), Array("k".utf8), Array("1".utf8)]) == .blocking)
        #expect(RedisCommandKind(["XREAD", "block", "0", "STREAMS", "s", "$"].map { Array($0.utf8) }) == .blocking)
        #expect(RedisCommandKind(["XREAD", "COUNT", "1", "STREAMS", "s", "0"].map { Array($0.utf8) }) == .plain)
        #expect(RedisCommandKind([Array("Subscribe".utf8), Array("c".utf8)]) == .refused)
        #expect(RedisCommandKind([Array("SET".utf8)]) == .plain)
    }
}
